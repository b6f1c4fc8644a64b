package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"unsafe"

	"github.com/nlpodyssey/safetensors"
	"github.com/x448/float16"
	"golang.org/x/sys/unix"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/internal/parallel"
)

// Tensor is one tensor of a checkpoint: its safetensors dtype ("F32", "BF16", "U8", ...), its
// shape and its little-endian bytes. Data read from a file aliases a read-only memory map and is
// valid until the file is closed; never write to it. It converts to quant.RawTensor.
type Tensor struct {
	// DType is the safetensors dtype name.
	DType string
	// Shape is the tensor's shape; empty for a scalar.
	Shape []int
	// Data is the row-major little-endian bytes.
	Data []byte
}

// Numel returns the number of elements (1 for a scalar).
func (t Tensor) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// File is a safetensors file mapped read-only into memory.
type File struct {
	// Path is the file's path, used in errors.
	Path string
	// Metadata is the header's __metadata__ (e.g. {"format": "pt"}).
	Metadata map[string]string
	mem      []byte
	names    []string
	tensors  map[string]Tensor
}

// OpenSafetensors maps the safetensors file at path and parses its header. The caller must Close
// it. Errors name the file and what is wrong with it.
func OpenSafetensors(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("%s: %d bytes is too short for a safetensors header (truncated?)", path, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%s: too large to map", path)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	sf := &File{Path: path, mem: mem}
	if err := sf.parse(); err != nil {
		sf.Close()
		return nil, err
	}
	return sf, nil
}

// headerEntry is one tensor of a safetensors header, parsed here to give precise errors before
// the library's own validation.
type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

var dtypeSize = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}

// parse reads the header of sf.mem (the whole file) and indexes its tensors.
func (sf *File) parse() error {
	size := uint64(len(sf.mem))
	if size < 8 {
		return fmt.Errorf("%s: %d bytes is too short for a safetensors header (truncated?)", sf.Path, size)
	}
	n := binary.LittleEndian.Uint64(sf.mem)
	if n > size-8 {
		return fmt.Errorf("%s: corrupt header: header length %d exceeds the file's %d bytes (truncated or not safetensors)", sf.Path, n, size)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(sf.mem[8:8+n], &raw); err != nil {
		return fmt.Errorf("%s: corrupt header: %w", sf.Path, err)
	}
	dataLen := size - 8 - n
	var end uint64
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return fmt.Errorf("%s: corrupt header: tensor %s: %w", sf.Path, name, err)
		}
		es, ok := dtypeSize[e.DType]
		if !ok {
			return fmt.Errorf("%s: tensor %s has unsupported dtype %q", sf.Path, name, e.DType)
		}
		if len(e.DataOffsets) != 2 || e.DataOffsets[1] < e.DataOffsets[0] {
			return fmt.Errorf("%s: corrupt header: tensor %s has data_offsets %v", sf.Path, name, e.DataOffsets)
		}
		numel := int64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && numel > math.MaxInt64/es/d) {
				return fmt.Errorf("%s: corrupt header: tensor %s has shape %v", sf.Path, name, e.Shape)
			}
			numel *= d
		}
		if uint64(numel*es) != e.DataOffsets[1]-e.DataOffsets[0] {
			return fmt.Errorf("%s: corrupt header: tensor %s: shape %v of %s needs %d bytes, data_offsets give %d",
				sf.Path, name, e.Shape, e.DType, numel*es, e.DataOffsets[1]-e.DataOffsets[0])
		}
		end = max(end, e.DataOffsets[1])
	}
	if end > dataLen {
		return fmt.Errorf("%s: truncated: the header describes %d bytes of tensor data, the file holds %d", sf.Path, end, dataLen)
	}
	if end < dataLen {
		return fmt.Errorf("%s: corrupt: %d bytes after the last tensor's data", sf.Path, dataLen-end)
	}
	st, err := safetensors.Deserialize(sf.mem)
	if err != nil {
		return fmt.Errorf("%s: corrupt safetensors file: %w", sf.Path, err)
	}
	if m, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(m, &sf.Metadata); err != nil {
			return fmt.Errorf("%s: corrupt header: __metadata__: %w", sf.Path, err)
		}
	}
	sf.tensors = make(map[string]Tensor, st.Len())
	for _, v := range st.Tensors() {
		tv := v.TensorView
		shape := make([]int, len(tv.Shape()))
		for i, d := range tv.Shape() {
			shape[i] = int(d)
		}
		sf.tensors[v.Name] = Tensor{DType: tv.DType().String(), Shape: shape, Data: tv.Data()}
		sf.names = append(sf.names, v.Name)
	}
	sort.Strings(sf.names)
	return nil
}

// Names returns the tensor names in sorted order.
func (sf *File) Names() []string { return sf.names }

// Tensor returns the named tensor, aliasing the mapped file.
func (sf *File) Tensor(name string) (Tensor, bool) {
	t, ok := sf.tensors[name]
	return t, ok
}

// Drop says the named tensor's bytes will not be read again soon: the pages that hold them leave
// the process's resident set (MADV_DONTNEED on the read-only shared map; the kernel keeps them in
// its page cache, and a later read maps them back in). A loader that reads one tensor at a time
// drops each after use, so the mapped checkpoint never counts whole against its peak memory.
func (sf *File) Drop(name string) {
	t, ok := sf.tensors[name]
	if !ok || len(t.Data) == 0 || sf.mem == nil {
		return
	}
	page := uintptr(os.Getpagesize())
	base := uintptr(unsafe.Pointer(&sf.mem[0]))
	off := uintptr(unsafe.Pointer(&t.Data[0])) - base
	lo, hi := off/page*page, off+uintptr(len(t.Data))
	// A failed hint changes nothing but the resident set: ignore it.
	_ = unix.Madvise(sf.mem[lo:hi], unix.MADV_DONTNEED)
}

// Size returns the file's size in bytes.
func (sf *File) Size() int64 { return int64(len(sf.mem)) }

// Close unmaps the file. Tensors read from it must not be used afterwards.
func (sf *File) Close() error {
	if sf.mem == nil {
		return nil
	}
	err := unix.Munmap(sf.mem)
	sf.mem, sf.tensors = nil, nil
	if err != nil {
		return fmt.Errorf("%s: munmap: %w", sf.Path, err)
	}
	return nil
}

// IsFloat reports whether dtype is one ToFloat32 converts: F32, F16 or BF16.
func IsFloat(dtype string) bool { return dtype == "F32" || dtype == "F16" || dtype == "BF16" }

// ToFloat32 converts an F32, F16 or BF16 tensor to float32 values.
func ToFloat32(t Tensor) ([]float32, error) { return ToFloat32Into(t, nil) }

// ToFloat32Into is ToFloat32 into dst's memory when it has the room (a loader converting one
// weight after another reuses one buffer: fresh memory costs a page fault every 4 KiB, which on a
// VM took as long as the conversion itself), else into a new slice.
func ToFloat32Into(t Tensor, dst []float32) ([]float32, error) {
	n := t.Numel()
	var es int64
	switch t.DType {
	case "F32":
		es = 4
	case "F16", "BF16":
		es = 2
	default:
		return nil, fmt.Errorf("unsupported dtype %s (want F32, F16 or BF16)", t.DType)
	}
	if int64(len(t.Data)) != n*es {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes, have %d", t.Shape, t.DType, n*es, len(t.Data))
	}
	out := dst[:0]
	if int64(cap(out)) < n {
		out = make([]float32, n)
	}
	out = out[:n]
	// In chunks over the cores: a model's weights take seconds on one (the first touch of each
	// fresh page is most of it).
	chunks := (len(out) + convertChunk - 1) / convertChunk
	parallel.For(chunks, func(c int) {
		lo, hi := c*convertChunk, min(len(out), (c+1)*convertChunk)
		switch t.DType {
		case "F32":
			for i := lo; i < hi; i++ {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
			}
		case "F16":
			for i := lo; i < hi; i++ {
				out[i] = float16.Frombits(binary.LittleEndian.Uint16(t.Data[2*i:])).Float32()
			}
		case "BF16":
			for i := lo; i < hi; i++ {
				out[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
			}
		}
	})
	return out, nil
}

// convertChunk is the elements ToFloat32 converts a task.
const convertChunk = 1 << 18

// FromFloat32 returns an F32 tensor holding v.
func FromFloat32(v []float32, shape []int) Tensor {
	return Tensor{DType: "F32", Shape: append([]int(nil), shape...), Data: f32Bytes(v)}
}

// FromFloat32As encodes v as an F32, F16 or BF16 tensor (rounding to nearest even).
func FromFloat32As(v []float32, shape []int, dtype string) (Tensor, error) {
	t := Tensor{DType: dtype, Shape: append([]int(nil), shape...)}
	switch dtype {
	case "F32":
		t.Data = f32Bytes(v)
	case "F16", "BF16":
		t.Data = make([]byte, 2*len(v))
		for i, x := range v {
			h := half.BF16(x)
			if dtype == "F16" {
				h = float16.Fromfloat32(x).Bits()
			}
			binary.LittleEndian.PutUint16(t.Data[2*i:], h)
		}
	default:
		return Tensor{}, fmt.Errorf("encode tensor: dtype %q is not F32, F16 or BF16", dtype)
	}
	return t, nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// view adapts a tensor to safetensors.View. When produce is set the bytes are made only when the
// writer asks for them, so that a whole converted model need not sit in memory at once.
type view struct {
	dtype   safetensors.DType
	shape   []uint64
	size    uint64
	data    []byte
	produce func() ([]byte, error)
	failed  *error
}

func (v *view) DType() safetensors.DType { return v.dtype }
func (v *view) Shape() []uint64          { return v.shape }
func (v *view) DataLen() uint64          { return v.size }

// Data returns the bytes. A producer's error is recorded for the writer, which stops at its next
// write; the zero bytes returned meanwhile are never committed.
func (v *view) Data() []byte {
	if v.produce == nil {
		return v.data
	}
	b, err := v.produce()
	if err == nil && uint64(len(b)) != v.size {
		err = fmt.Errorf("produced %d bytes, want %d", len(b), v.size)
	}
	if err != nil {
		if *v.failed == nil {
			*v.failed = err
		}
		return make([]byte, v.size)
	}
	return b
}

func newView(t Tensor, failed *error) (*view, error) {
	dt, err := safetensors.ParseDType(t.DType)
	if err != nil {
		return nil, err
	}
	shape := make([]uint64, len(t.Shape))
	for i, d := range t.Shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
		shape[i] = uint64(d)
	}
	size := uint64(t.Numel()) * dt.Size()
	if t.Data != nil && uint64(len(t.Data)) != size {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes, have %d", t.Shape, t.DType, size, len(t.Data))
	}
	return &view{dtype: dt, shape: shape, size: size, data: t.Data, failed: failed}, nil
}

// lazyTensor is a tensor whose bytes are produced while writing.
type lazyTensor struct {
	Tensor  // DType and Shape; Data nil
	produce func() ([]byte, error)
}

// WriteSafetensors atomically writes tensors to path as a safetensors file with the given
// __metadata__ (transformers writes {"format": "pt"}).
func WriteSafetensors(path string, tensors map[string]Tensor, metadata map[string]string) error {
	lazy := make(map[string]lazyTensor, len(tensors))
	for k, t := range tensors {
		lazy[k] = lazyTensor{Tensor: t}
	}
	return writeSafetensors(path, lazy, metadata)
}

// errWriter forwards writes until a lazy producer has failed.
type errWriter struct {
	w      io.Writer
	failed *error
}

func (e errWriter) Write(p []byte) (int, error) {
	if *e.failed != nil {
		return 0, *e.failed
	}
	return e.w.Write(p)
}

func writeSafetensors(path string, tensors map[string]lazyTensor, metadata map[string]string) error {
	var failed error
	views := make(map[string]*view, len(tensors))
	for name, t := range tensors {
		v, err := newView(t.Tensor, &failed)
		if err != nil {
			return fmt.Errorf("write %s: tensor %s: %w", path, name, err)
		}
		if t.produce != nil {
			v.produce = t.produce
		} else if t.Data == nil && v.size != 0 {
			return fmt.Errorf("write %s: tensor %s has no data", path, name)
		}
		views[name] = v
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		err := safetensors.SerializeToWriter(views, metadata, errWriter{w: w, failed: &failed})
		if failed != nil {
			return failed
		}
		return err
	})
}
