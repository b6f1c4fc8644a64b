package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// alignment is GGUF's default general.alignment.
const alignment = 32

// Writer assembles a GGUF (version 3) file: metadata in the order added, then tensors, each
// produced when the file is written so that a model streams through one tensor at a time.
type Writer struct {
	kvs     []kv
	tensors []wtensor
}

type kv struct {
	key string
	typ parser.GGUFMetadataValueType
	val any
}

type wtensor struct {
	name    string
	typ     parser.GGMLType
	dims    []uint64 // GGUF order: innermost first
	size    int
	produce func() ([]byte, error)
}

// String adds a string value.
func (w *Writer) String(key, v string) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeString, v})
}

// Uint32 adds a uint32 value.
func (w *Writer) Uint32(key string, v uint32) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeUint32, v})
}

// Uint16 adds a uint16 value.
func (w *Writer) Uint16(key string, v uint16) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeUint16, v})
}

// Int32 adds an int32 value.
func (w *Writer) Int32(key string, v int32) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeInt32, v})
}

// Float32 adds a float32 value.
func (w *Writer) Float32(key string, v float32) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeFloat32, v})
}

// Bool adds a bool value.
func (w *Writer) Bool(key string, v bool) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeBool, v})
}

// Strings adds an array of strings.
func (w *Writer) Strings(key string, v []string) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeArray, v})
}

// Float32s adds an array of float32.
func (w *Writer) Float32s(key string, v []float32) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeArray, v})
}

// Int32s adds an array of int32.
func (w *Writer) Int32s(key string, v []int32) {
	w.kvs = append(w.kvs, kv{key, parser.GGUFMetadataValueTypeArray, v})
}

// Tensor adds a tensor of type typ with the transformers (row-major, outermost first) shape;
// produce returns its values when the file is written, and they are encoded then.
func (w *Writer) Tensor(name string, typ parser.GGMLType, shape []int, produce func() ([]float32, error)) error {
	n := 1
	dims := make([]uint64, len(shape))
	for i, d := range shape {
		n *= d
		dims[len(shape)-1-i] = uint64(d)
	}
	if len(shape) > 0 {
		if _, err := rowBytes(typ, shape[len(shape)-1]); err != nil {
			return fmt.Errorf("gguf: tensor %s %v: rows of %w", name, shape, err)
		}
	}
	size, err := rowBytes(typ, n)
	if err != nil {
		return fmt.Errorf("gguf: tensor %s: %w", name, err)
	}
	w.tensors = append(w.tensors, wtensor{name: name, typ: typ, dims: dims, size: size, produce: func() ([]byte, error) {
		v, err := produce()
		if err != nil {
			return nil, err
		}
		if len(v) != n {
			return nil, fmt.Errorf("tensor %s: %d values for shape %v", name, len(v), shape)
		}
		return Quantize(typ, v)
	}})
	return nil
}

// WriteFile writes the file atomically.
func (w *Writer) WriteFile(path string) error {
	return atomicfile.Write(path, 0o644, func(out io.Writer) error {
		bw := bufio.NewWriterSize(out, 1<<20)
		if err := w.write(bw); err != nil {
			return fmt.Errorf("gguf %s: %w", path, err)
		}
		return bw.Flush()
	})
}

// ShardPaths returns the names llama.cpp gives the n shards of out (NAME.gguf):
// NAME-00001-of-0000n.gguf and on.
func ShardPaths(out string, n int) []string {
	prefix := strings.TrimSuffix(out, filepathExt(out))
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, i+1, n)
	}
	return paths
}

// WriteSplit writes the file as n shards (see ShardPaths) as llama-gguf-split
// --split-max-tensors lays them out: the tensors in order, as evenly as they go, the first shard
// with all the metadata, and every shard with split.no, split.count and split.tensors.count.
// Each shard is written atomically.
func (w *Writer) WriteSplit(out string, n int) ([]string, error) {
	if n < 1 || n > len(w.tensors) || n > math.MaxUint16 {
		return nil, fmt.Errorf("gguf %s: %d shards for %d tensors", out, n, len(w.tensors))
	}
	per := (len(w.tensors) + n - 1) / n
	paths := ShardPaths(out, n)
	for i, p := range paths {
		var sw Writer
		if i == 0 {
			sw.kvs = append(sw.kvs, w.kvs...)
		}
		sw.Uint16("split.no", uint16(i))
		sw.Uint16("split.count", uint16(n))
		sw.Int32("split.tensors.count", int32(len(w.tensors)))
		sw.tensors = w.tensors[min(i*per, len(w.tensors)):min((i+1)*per, len(w.tensors))]
		if len(sw.tensors) == 0 {
			return nil, fmt.Errorf("gguf %s: shard %d of %d would hold no tensor", out, i+1, n)
		}
		if err := sw.WriteFile(p); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

func (w *Writer) write(out *bufio.Writer) error {
	c := &counter{w: out}
	le := func(v any) { binary.Write(c, binary.LittleEndian, v) }
	str := func(s string) { le(uint64(len(s))); c.Write([]byte(s)) }
	c.Write([]byte("GGUF"))
	le(uint32(3))
	le(uint64(len(w.tensors)))
	le(uint64(len(w.kvs)))
	for _, e := range w.kvs {
		str(e.key)
		le(uint32(e.typ))
		switch v := e.val.(type) {
		case string:
			str(v)
		case uint16, uint32, int32, float32:
			le(v)
		case bool:
			b := uint8(0)
			if v {
				b = 1
			}
			le(b)
		case []string:
			le(uint32(parser.GGUFMetadataValueTypeString))
			le(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []float32:
			le(uint32(parser.GGUFMetadataValueTypeFloat32))
			le(uint64(len(v)))
			le(v)
		case []int32:
			le(uint32(parser.GGUFMetadataValueTypeInt32))
			le(uint64(len(v)))
			le(v)
		}
	}
	var off uint64
	for _, t := range w.tensors {
		str(t.name)
		le(uint32(len(t.dims)))
		le(t.dims)
		le(uint32(t.typ))
		le(off)
		off += pad(uint64(t.size))
	}
	c.Write(make([]byte, pad(c.n)-c.n))
	for _, t := range w.tensors {
		b, err := t.produce()
		if err != nil {
			return err
		}
		c.Write(b)
		c.Write(make([]byte, pad(uint64(len(b)))-uint64(len(b))))
	}
	return c.err
}

func pad(n uint64) uint64 { return (n + alignment - 1) / alignment * alignment }

// counter counts the bytes written and keeps the first error.
type counter struct {
	w   io.Writer
	n   uint64
	err error
}

func (c *counter) Write(p []byte) (int, error) {
	if c.err != nil {
		return len(p), nil
	}
	n, err := c.w.Write(p)
	c.n += uint64(n)
	c.err = err
	return len(p), nil
}

// Quantize encodes x as type typ. Q8_0 and Q4_0 follow ggml's reference quantizers exactly; Q4_K
// and Q6_K produce valid blocks with a simpler (min/max) choice of scales than ggml's search, so
// their error is somewhat larger than llama-quantize's.
func Quantize(typ parser.GGMLType, x []float32) ([]byte, error) {
	size, err := rowBytes(typ, len(x))
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	switch typ {
	case parser.GGMLTypeF32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case parser.GGMLTypeF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
	case parser.GGMLTypeBF16:
		for i, v := range x {
			b := math.Float32bits(v)
			b += 0x7fff + (b>>16)&1 // round to nearest even, as ggml's fp32_to_bf16
			binary.LittleEndian.PutUint16(out[2*i:], uint16(b>>16))
		}
	case parser.GGMLTypeQ8_0:
		for b := 0; b < len(x)/32; b++ {
			xs, blk := x[b*32:(b+1)*32], out[b*34:]
			var amax float32
			for _, v := range xs {
				amax = max(amax, abs32(v))
			}
			d := amax / 127
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			binary.LittleEndian.PutUint16(blk, float16.Fromfloat32(d).Bits())
			for j, v := range xs {
				blk[2+j] = byte(int8(roundf(v * id)))
			}
		}
	case parser.GGMLTypeQ4_0:
		for b := 0; b < len(x)/32; b++ {
			xs, blk := x[b*32:(b+1)*32], out[b*18:]
			var amax, mx float32
			for _, v := range xs {
				if abs32(v) > amax {
					amax, mx = abs32(v), v
				}
			}
			d := mx / -8
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			binary.LittleEndian.PutUint16(blk, float16.Fromfloat32(d).Bits())
			for j := 0; j < 16; j++ {
				q0 := min(15, int8(xs[j]*id+8.5))
				q1 := min(15, int8(xs[j+16]*id+8.5))
				blk[2+j] = byte(q0) | byte(q1)<<4
			}
		}
	case parser.GGMLTypeQ4_K:
		for b := 0; b < len(x)/256; b++ {
			quantQ4K(x[b*256:(b+1)*256], out[b*144:(b+1)*144])
		}
	case parser.GGMLTypeQ6_K:
		for b := 0; b < len(x)/256; b++ {
			quantQ6K(x[b*256:(b+1)*256], out[b*210:(b+1)*210])
		}
	}
	return out, nil
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// roundf rounds half away from zero, as C's roundf.
func roundf(v float32) float32 { return float32(math.Round(float64(v))) }

func clampRound(v float32, lo, hi int) int {
	return max(lo, min(hi, int(roundf(v))))
}

func quantQ4K(x []float32, blk []byte) {
	var scale, mins [8]float32
	for j := 0; j < 8; j++ {
		lo, hi := float32(0), float32(0)
		for _, v := range x[j*32 : (j+1)*32] {
			lo, hi = min(lo, v), max(hi, v)
		}
		scale[j], mins[j] = (hi-lo)/15, -lo
	}
	var maxScale, maxMin float32
	for j := range scale {
		maxScale, maxMin = max(maxScale, scale[j]), max(maxMin, mins[j])
	}
	d, dmin := float16.Fromfloat32(maxScale/63), float16.Fromfloat32(maxMin/63)
	binary.LittleEndian.PutUint16(blk, d.Bits())
	binary.LittleEndian.PutUint16(blk[2:], dmin.Bits())
	df, mf := d.Float32(), dmin.Float32()
	scales := blk[4:16]
	var L [256]uint8
	for j := 0; j < 8; j++ {
		ls, lm := 0, 0
		if df > 0 {
			ls = clampRound(scale[j]/df, 0, 63)
		}
		if mf > 0 {
			lm = clampRound(mins[j]/mf, 0, 63)
		}
		if j < 4 {
			scales[j], scales[j+4] = uint8(ls), uint8(lm)
		} else {
			scales[j+4] = uint8(ls&0xF) | uint8(lm&0xF)<<4
			scales[j-4] |= uint8(ls>>4) << 6
			scales[j] |= uint8(lm>>4) << 6
		}
		dd, mm := df*float32(ls), mf*float32(lm)
		for l := 0; l < 32; l++ {
			q := 0
			if dd > 0 {
				q = clampRound((x[j*32+l]+mm)/dd, 0, 15)
			}
			L[j*32+l] = uint8(q)
		}
	}
	q := blk[16:]
	for j := 0; j < 256; j += 64 {
		for l := 0; l < 32; l++ {
			q[l] = L[j+l] | L[j+l+32]<<4
		}
		q = q[32:]
	}
}

func quantQ6K(x []float32, blk []byte) {
	var scale [16]float32
	var amax float32
	for j := 0; j < 16; j++ {
		var m float32
		for _, v := range x[j*16 : (j+1)*16] {
			m = max(m, abs32(v))
		}
		scale[j] = m / 31
		amax = max(amax, scale[j])
	}
	d := float16.Fromfloat32(amax / 127)
	df := d.Float32()
	var L [256]uint8
	sc := blk[192:208]
	for j := 0; j < 16; j++ {
		s := 0
		if df > 0 {
			s = clampRound(scale[j]/df, -127, 127)
		}
		sc[j] = byte(int8(s))
		dd := df * float32(s)
		for l := 0; l < 16; l++ {
			q := 0
			if dd != 0 {
				q = clampRound(x[j*16+l]/dd, -32, 31)
			}
			L[j*16+l] = uint8(q + 32)
		}
	}
	ql, qh := blk[:128], blk[128:192]
	for j := 0; j < 256; j += 128 {
		for l := 0; l < 32; l++ {
			q1, q2, q3, q4 := L[j+l]&0xF, L[j+l+32]&0xF, L[j+l+64]&0xF, L[j+l+96]&0xF
			ql[l] = q1 | q3<<4
			ql[l+32] = q2 | q4<<4
			qh[l] = L[j+l]>>4 | (L[j+l+32]>>4)<<2 | (L[j+l+64]>>4)<<4 | (L[j+l+96]>>4)<<6
		}
		ql, qh = ql[64:], qh[32:]
	}
	binary.LittleEndian.PutUint16(blk[208:], d.Bits())
}
