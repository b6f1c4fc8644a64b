package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/internal/half"
)

// Tensor is a value that lives in a backend buffer: the inputs, parameters and results of graphs.
// A Tensor owns its buffer until Release.
type Tensor struct {
	meta    Meta
	buf     Buffer
	backend Backend
	// borrowed: the buffer belongs to someone else (View); Release only forgets it.
	borrowed bool
}

// View returns a tensor over a buffer owned elsewhere (a program's output, another tensor's
// storage) with the given meta, so that it can be bound to a program; its Release frees nothing.
func View(b Backend, buf Buffer, m Meta) (*Tensor, error) {
	if buf == nil || buf.Bytes() < m.Bytes() {
		return nil, fmt.Errorf("view %s: the buffer is missing or too small", m)
	}
	return &Tensor{meta: Meta{Shape: m.Shape.Clone(), DType: m.DType}, buf: buf, backend: b, borrowed: true}, nil
}

// NewTensor allocates an uninitialised tensor on b.
func NewTensor(b Backend, dt DType, shape Shape) (*Tensor, error) {
	m := Meta{Shape: shape.Clone(), DType: dt}
	if !shape.valid() {
		return nil, fmt.Errorf("new tensor %s: dimensions must be positive", m)
	}
	buf, err := b.Alloc(m.Bytes())
	if err != nil {
		return nil, fmt.Errorf("new tensor %s: %w", m, err)
	}
	return &Tensor{meta: m, buf: buf, backend: b}, nil
}

// FromFloat32 uploads data as an f32 tensor of the given shape.
func FromFloat32(b Backend, shape Shape, data []float32) (*Tensor, error) {
	if shape.Numel() != len(data) {
		return nil, fmt.Errorf("tensor %v: %d values for %d elements", shape, len(data), shape.Numel())
	}
	t, err := NewTensor(b, F32, shape)
	if err != nil {
		return nil, err
	}
	if err := t.SetFloat32(data); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// FromInt32 uploads data as an i32 tensor of the given shape.
func FromInt32(b Backend, shape Shape, data []int32) (*Tensor, error) {
	if shape.Numel() != len(data) {
		return nil, fmt.Errorf("tensor %v: %d values for %d elements", shape, len(data), shape.Numel())
	}
	t, err := NewTensor(b, I32, shape)
	if err != nil {
		return nil, err
	}
	if err := t.SetBytes(int32Bytes(data)); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// FromBytes uploads raw little-endian data as a tensor of the given type and shape.
func FromBytes(b Backend, dt DType, shape Shape, data []byte) (*Tensor, error) {
	t, err := NewTensor(b, dt, shape)
	if err != nil {
		return nil, err
	}
	if err := t.SetBytes(data); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// Meta is the tensor's shape and type.
func (t *Tensor) Meta() Meta { return t.meta }

// Shape is the tensor's shape; do not modify it.
func (t *Tensor) Shape() Shape { return t.meta.Shape }

// DType is the tensor's element type.
func (t *Tensor) DType() DType { return t.meta.DType }

// Buffer is the backend buffer holding the tensor.
func (t *Tensor) Buffer() Buffer { return t.buf }

// Backend is the backend that owns the buffer.
func (t *Tensor) Backend() Backend { return t.backend }

// SetBytes overwrites the tensor's contents with raw little-endian data of exactly its size.
func (t *Tensor) SetBytes(data []byte) error {
	if int64(len(data)) != t.meta.Bytes() {
		return fmt.Errorf("write tensor %s: %d bytes for %d", t.meta, len(data), t.meta.Bytes())
	}
	if t.buf == nil {
		return fmt.Errorf("write tensor %s: it was released", t.meta)
	}
	return t.backend.Write(t.buf, 0, data)
}

// Bytes reads the tensor's raw little-endian contents back.
func (t *Tensor) Bytes() ([]byte, error) {
	out := make([]byte, t.meta.Bytes())
	if err := t.read(out); err != nil {
		return nil, err
	}
	return out, nil
}

// read copies the tensor's contents into dst, which holds them whole.
func (t *Tensor) read(dst []byte) error {
	if t.buf == nil {
		return fmt.Errorf("read tensor %s: it was released", t.meta)
	}
	if err := t.backend.Read(t.buf, 0, dst); err != nil {
		return fmt.Errorf("read tensor %s: %w", t.meta, err)
	}
	return nil
}

// SetInt32 overwrites an i32 tensor's contents.
func (t *Tensor) SetInt32(data []int32) error {
	if t.meta.DType != I32 {
		return fmt.Errorf("write tensor %s: not i32", t.meta)
	}
	return t.SetBytes(int32Bytes(data))
}

// SetFloat32 overwrites an f32 tensor's contents, or an f16 or bf16 tensor's with data rounded
// to nearest even (as a 16-bit weight that is merged into is stored).
func (t *Tensor) SetFloat32(data []float32) error {
	switch t.meta.DType {
	case F32:
		return t.SetBytes(float32Bytes(data))
	case F16, BF16:
		b := make([]byte, 2*len(data))
		for i, x := range data {
			h := float16.Fromfloat32(x).Bits()
			if t.meta.DType == BF16 {
				h = half.BF16(x)
			}
			binary.LittleEndian.PutUint16(b[2*i:], h)
		}
		return t.SetBytes(b)
	}
	return fmt.Errorf("write tensor %s: not a float type", t.meta)
}

// SetFloat32At writes data into an f32 tensor from element offset on (row-major), leaving the
// rest as it is.
func (t *Tensor) SetFloat32At(offset int, data []float32) error {
	if t.meta.DType != F32 {
		return fmt.Errorf("write tensor %s: not f32", t.meta)
	}
	if offset < 0 || offset+len(data) > t.meta.Shape.Numel() {
		return fmt.Errorf("write tensor %s: elements %d..%d are outside it", t.meta, offset, offset+len(data))
	}
	if t.buf == nil {
		return fmt.Errorf("write tensor %s: it was released", t.meta)
	}
	return t.backend.Write(t.buf, int64(4*offset), float32Bytes(data))
}

// Float32 reads an f32 tensor back, or an f16 or bf16 one widened (exactly) to f32.
func (t *Tensor) Float32() ([]float32, error) {
	dt := t.meta.DType
	if dt != F32 && !IsHalf(dt) {
		return nil, fmt.Errorf("read tensor %s: not a float type", t.meta)
	}
	if dt == F32 && littleEndian {
		// Read straight into the result: a decoding step's logits (Llama-3's 128 256 floats)
		// took 0.23 ms through a byte copy and a conversion loop, 2 ms a step under load.
		out := make([]float32, t.meta.Shape.Numel())
		if err := t.read(float32Bytes(out)); err != nil {
			return nil, err
		}
		return out, nil
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	if IsHalf(dt) {
		out := make([]float32, len(b)/2)
		for i := range out {
			h := binary.LittleEndian.Uint16(b[2*i:])
			if dt == BF16 {
				out[i] = half.BF16ToFloat32(h)
			} else {
				out[i] = float16.Frombits(h).Float32()
			}
		}
		return out, nil
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// Release frees the tensor's buffer; the tensor must not be used afterwards.
func (t *Tensor) Release() {
	if t.buf != nil && !t.borrowed {
		t.backend.Free(t.buf)
	}
	t.buf = nil
}

// littleEndian reports whether this host stores words as buffers hold them (every platform lathe
// builds for does).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32Bytes is v as the little-endian bytes a buffer holds: on a little-endian host v's own
// memory (Backend.Write copies it, so no second copy is made: an 8B model's f32 embedding is
// 2 GiB), elsewhere a converted copy.
func float32Bytes(v []float32) []byte {
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// int32Bytes is float32Bytes for int32 values.
func int32Bytes(v []int32) []byte {
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}
