package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	parser "github.com/gpustack/gguf-parser-go"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// Supported tensor types: their block size in elements and in bytes, as ggml defines them
// (ggml-common.h). Any other type is refused by name.
var blocks = map[parser.GGMLType]struct{ elems, bytes int }{
	parser.GGMLTypeF32:  {1, 4},
	parser.GGMLTypeF16:  {1, 2},
	parser.GGMLTypeBF16: {1, 2},
	parser.GGMLTypeQ8_0: {32, 34},
	parser.GGMLTypeQ4_0: {32, 18},
	parser.GGMLTypeQ4_K: {256, 144},
	parser.GGMLTypeQ6_K: {256, 210},
}

// Supported reports whether lathe reads tensors of type t.
func Supported(t parser.GGMLType) bool { _, ok := blocks[t]; return ok }

// rowBytes is the size of n elements of type t, or an error when t is unsupported or n is not a
// whole number of blocks.
func rowBytes(t parser.GGMLType, n int) (int, error) {
	b, ok := blocks[t]
	if !ok {
		return 0, fmt.Errorf("tensor type %s is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K are)", t)
	}
	if n%b.elems != 0 {
		return 0, fmt.Errorf("%d elements of %s are not whole blocks of %d", n, t, b.elems)
	}
	return n / b.elems * b.bytes, nil
}

func f16(b []byte) float32 { return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() }

// Dequantize decodes n elements of type t from data into float32, exactly as ggml's
// dequantize_row_* functions do (float32 arithmetic in the same order).
func Dequantize(t parser.GGMLType, data []byte, n int) ([]float32, error) {
	size, err := rowBytes(t, n)
	if err != nil {
		return nil, err
	}
	if len(data) != size {
		return nil, fmt.Errorf("%d elements of %s take %d bytes, have %d", n, t, size, len(data))
	}
	y := make([]float32, n)
	// In chunks of whole blocks over the cores: a model's embedding alone is hundreds of
	// millions of elements.
	chunks := (n + dequantChunk - 1) / dequantChunk
	parallel.For(chunks, func(c int) {
		lo, hi := c*dequantChunk, min(n, (c+1)*dequantChunk)
		dequantRange(t, data, y, lo, hi)
	})
	return y, nil
}

// dequantChunk is the elements a task of Dequantize decodes: a multiple of every block size.
const dequantChunk = 1 << 16

// dequantRange decodes elements lo..hi of y (both multiples of t's block size, or hi = the end,
// itself one) from data.
func dequantRange(t parser.GGMLType, data []byte, y []float32, lo, hi int) {
	switch t {
	case parser.GGMLTypeF32:
		for i := lo; i < hi; i++ {
			y[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case parser.GGMLTypeF16:
		for i := lo; i < hi; i++ {
			y[i] = f16(data[2*i:])
		}
	case parser.GGMLTypeBF16:
		for i := lo; i < hi; i++ {
			y[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16)
		}
	case parser.GGMLTypeQ8_0:
		// block_q8_0: f16 d; int8 qs[32].
		for b := lo / 32; b < hi/32; b++ {
			blk := data[b*34:]
			d := f16(blk)
			for j := 0; j < 32; j++ {
				y[b*32+j] = float32(int8(blk[2+j])) * d
			}
		}
	case parser.GGMLTypeQ4_0:
		// block_q4_0: f16 d; uint8 qs[16], low nibbles the first 16 elements, high the last 16.
		for b := lo / 32; b < hi/32; b++ {
			blk := data[b*18:]
			d := f16(blk)
			for j := 0; j < 16; j++ {
				q := blk[2+j]
				y[b*32+j] = float32(int(q&0xF)-8) * d
				y[b*32+j+16] = float32(int(q>>4)-8) * d
			}
		}
	case parser.GGMLTypeQ4_K:
		for b := lo / 256; b < hi/256; b++ {
			dequantQ4K(data[b*144:(b+1)*144], y[b*256:(b+1)*256])
		}
	case parser.GGMLTypeQ6_K:
		for b := lo / 256; b < hi/256; b++ {
			dequantQ6K(data[b*210:(b+1)*210], y[b*256:(b+1)*256])
		}
	}
}

// scaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j of a Q4_K block.
func scaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

// dequantQ4K is ggml's dequantize_row_q4_K for one block_q4_K: f16 d, f16 dmin, uint8 scales[12]
// (eight 6-bit scales and mins), uint8 qs[128] (two 32-element sub-blocks per 32 bytes).
func dequantQ4K(blk []byte, y []float32) {
	d, dmin := f16(blk), f16(blk[2:])
	scales, q := blk[4:16], blk[16:]
	is := 0
	for j := 0; j < 256; j += 64 {
		sc, m := scaleMinK4(is, scales)
		d1, m1 := d*float32(sc), dmin*float32(m)
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := d*float32(sc), dmin*float32(m)
		for l := 0; l < 32; l++ {
			y[j+l] = d1*float32(q[l]&0xF) - m1
		}
		for l := 0; l < 32; l++ {
			y[j+32+l] = d2*float32(q[l]>>4) - m2
		}
		q = q[32:]
		is += 2
	}
}

// dequantQ6K is ggml's dequantize_row_q6_K for one block_q6_K: uint8 ql[128] (low 4 bits),
// uint8 qh[64] (high 2 bits), int8 scales[16], f16 d.
func dequantQ6K(blk []byte, y []float32) {
	ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
	d := f16(blk[208:])
	for n := 0; n < 256; n += 128 {
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int8((ql[l]&0xF)|(((qh[l]>>0)&3)<<4)) - 32
			q2 := int8((ql[l+32]&0xF)|(((qh[l]>>2)&3)<<4)) - 32
			q3 := int8((ql[l]>>4)|(((qh[l]>>4)&3)<<4)) - 32
			q4 := int8((ql[l+32]>>4)|(((qh[l]>>6)&3)<<4)) - 32
			y[n+l] = d * float32(int8(sc[is])) * float32(q1)
			y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
		ql, qh, sc = ql[64:], qh[32:], sc[8:]
	}
}
