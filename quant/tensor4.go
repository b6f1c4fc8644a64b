package quant

import (
	"errors"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// Original dtypes a 4-bit tensor can come from, spelled as torch spells them in quant_state.
const (
	DTypeFloat32  = "float32"
	DTypeFloat16  = "float16"
	DTypeBFloat16 = "bfloat16"
)

func validDType(s string) bool {
	return s == DTypeFloat32 || s == DTypeFloat16 || s == DTypeBFloat16
}

// Tensor4 is a 4-bit blockwise-quantized tensor in bitsandbytes' layout.
//
// Exactly one of two scale layouts is present: plain (Absmax holds one float32 per block) or
// double-quantized (NestedBlocksize > 0; QAbsmax, NestedAbsmax, NestedCode and Offset hold the
// absmax values quantized to 8 bits, see BlockAbsmax).
type Tensor4 struct {
	// Type is the 4-bit data type.
	Type Type
	// Shape is the shape of the original tensor (row-major).
	Shape []int
	// DType is the dtype of the original tensor: "float32", "float16" or "bfloat16".
	DType string
	// Blocksize is the number of consecutive elements that share one absmax.
	Blocksize int
	// Code maps a 4-bit code to its value in [-1, 1] (bitsandbytes' quant_map).
	Code [16]float32
	// Packed holds two codes a byte, the first element in the high nibble; (numel+1)/2 bytes.
	Packed []byte

	// Absmax is the float32 absmax of each block (plain layout only).
	Absmax []float32

	// QAbsmax is the 8-bit index of each block's centred absmax into NestedCode (double quant).
	QAbsmax []uint8
	// NestedAbsmax is the float32 absmax of each NestedBlocksize run of centred absmax values.
	NestedAbsmax []float32
	// NestedCode is the 8-bit code of the absmax values (DynamicCode when written by Quantize).
	NestedCode [256]float32
	// Offset is the mean of the absmax values, subtracted before their quantization.
	Offset float32
	// NestedBlocksize is the blocksize of the absmax quantization; 0 means no double quant.
	NestedBlocksize int
}

// DoubleQuant reports whether the absmax values are themselves quantized.
func (t *Tensor4) DoubleQuant() bool { return t.NestedBlocksize != 0 }

// Numel returns the number of elements of the original tensor (0 for an invalid shape).
func (t *Tensor4) Numel() int {
	n, err := numel(t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// NumBlocks returns the number of absmax blocks, ceil(numel/Blocksize).
func (t *Tensor4) NumBlocks() int {
	if t.Blocksize <= 0 {
		return 0
	}
	return ceilDiv(t.Numel(), t.Blocksize)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// quantizeChunk is the elements a task of quantizeBlocks takes (whole blocks): enough to dwarf
// starting it, few enough that a layer keeps every core busy.
const quantizeChunk = 1 << 16

// quantizeBlocks writes the codes (packed) and absmax of data's blocks, split over the cores in
// chunks of whole blocks. It returns the index of the first NaN or infinity in data, or -1.
func quantizeBlocks(data []float32, typ Type, blocksize int, packed []byte, absmax []float32) int {
	nb := len(absmax)
	per := max(1, quantizeChunk/blocksize)
	tasks := (nb + per - 1) / per
	firstBad := make([]int, tasks)
	zero := typ.zeroCode()
	parallel.For(tasks, func(c int) {
		firstBad[c] = -1
		for b := c * per; b < min(nb, (c+1)*per); b++ {
			lo := b * blocksize
			blk := data[lo:min(lo+blocksize, len(data))]
			m, ok := blockAbsmax(blk)
			if !ok {
				for i, v := range blk {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						firstBad[c] = lo + i
						break
					}
				}
				return
			}
			absmax[b] = m
			encodeBlock(typ, zero, blk, m, packed[lo/2:]) // blocksize is even: a block starts a byte
		}
	})
	for _, i := range firstBad {
		if i >= 0 {
			return i
		}
	}
	return -1
}

// blockAbsmax is the largest magnitude in blk, false if blk holds a NaN or an infinity. It
// compares magnitudes' bits as integers (their order for finite floats; a NaN's or an infinity's
// exponent is all ones), a conditional move an element where a float max would branch on NaNs.
func blockAbsmax(blk []float32) (float32, bool) {
	var m uint32
	for _, v := range blk {
		m = max(m, math.Float32bits(v)&^(1<<31))
	}
	return math.Float32frombits(m), m < 0x7f800000
}

// encodeBlock packs blk's codes into out, two a byte with the first element in the high nibble,
// an odd count padded with zero, the code of 0.0 (bitsandbytes quantizes a zero-padded block). Values
// are multiplied by the float32 reciprocal of absmax, as the CUDA kernel does, not divided: the
// two differ in the last bit, which decides values that sit on a threshold. A block whose absmax
// is 0 stores zero codes.
func encodeBlock(typ Type, zero uint8, blk []float32, absmax float32, out []byte) {
	if absmax == 0 {
		for i := range (len(blk) + 1) / 2 {
			out[i] = zero<<4 | zero
		}
		return
	}
	inv := 1 / absmax
	pairs := len(blk) / 2
	out = out[:(len(blk)+1)/2]
	// One loop a type, so that the encoder inlines.
	if typ == FP4 {
		for i := range pairs {
			out[i] = encodeFP4(blk[2*i]*inv)<<4 | encodeFP4(blk[2*i+1]*inv)
		}
	} else {
		for i := range pairs {
			out[i] = encodeNF4(blk[2*i]*inv)<<4 | encodeNF4(blk[2*i+1]*inv)
		}
	}
	if len(blk)%2 == 1 {
		out[pairs] = typ.Encode(blk[len(blk)-1]*inv)<<4 | zero
	}
}

// numel multiplies out a shape, rejecting empty shapes, non-positive dimensions and overflow.
func numel(shape []int) (int, error) {
	if len(shape) == 0 {
		return 0, errors.New("empty shape")
	}
	n := 1
	for _, d := range shape {
		if d <= 0 {
			return 0, fmt.Errorf("shape %v has a dimension that is not positive", shape)
		}
		if n > math.MaxInt/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// Quantize quantizes data, a row-major tensor of the given shape, to 4 bits exactly as
// bitsandbytes' quantize_4bit(blocksize, quant_type, compress_statistics=doubleQuant) on CUDA:
//   - per block of blocksize consecutive elements (the last may be partial) the float32
//     absmax = max|x|;
//   - each x times float32(1/absmax) mapped to a code by typ's decision tree (Type.Encode);
//   - two codes a byte, first element high; an odd count pads the last low nibble with the code
//     of 0.0, as bitsandbytes does by quantizing a zero-padded block;
//   - a block whose absmax is 0 stores the code of 0.0 and absmax 0, so it decodes to zeros.
//
// With doubleQuant the absmax values are quantized as bitsandbytes' compress_statistics does:
// offset = mean(absmax), then absmax-offset quantized blockwise (blocksize 256) to DynamicCode.
// The mean is summed in float64 and rounded to float32 (torch sums float32 in an order of its
// own, so the offset may differ from torch's in the last bit).
//
// The result's DType is "float32"; a caller quantizing float16 or bfloat16 weights sets it.
// Non-finite input is rejected (the error names its first element). The blocks are quantized on
// every core, in chunks of whole blocks: as a model loads with --quantize, a 1B model's layers
// took 36 s to load and one token to generate, now 8-10 s (BenchmarkQuantize, 8192×2048: 30.6 ns a
// weight before, 2.6-3.4 now, on a 2-core Zen 5 EPYC).
func Quantize(data []float32, shape []int, typ Type, blocksize int, doubleQuant bool) (*Tensor4, error) {
	if !typ.valid() {
		return nil, fmt.Errorf("quantize: unknown type %v", typ)
	}
	if err := checkBlocksize(blocksize); err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	n, err := numel(shape)
	if err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	if len(data) != n {
		return nil, fmt.Errorf("quantize: shape %v needs %d values, got %d", shape, n, len(data))
	}
	nb := ceilDiv(n, blocksize)
	t := &Tensor4{
		Type:      typ,
		Shape:     append([]int(nil), shape...),
		DType:     DTypeFloat32,
		Blocksize: blocksize,
		Code:      typ.Code(),
		Packed:    make([]byte, (n+1)/2),
	}
	absmax := make([]float32, nb)
	if bad := quantizeBlocks(data, typ, blocksize, t.Packed, absmax); bad >= 0 {
		return nil, fmt.Errorf("quantize: element %d is %v", bad, data[bad])
	}

	if !doubleQuant {
		t.Absmax = absmax
		return t, nil
	}
	var sum float64
	for _, a := range absmax {
		sum += float64(a)
	}
	offset := float32(sum / float64(nb))
	centred := make([]float32, nb)
	for i, a := range absmax {
		centred[i] = a - offset
	}
	t.NestedCode = DynamicCode
	t.QAbsmax, t.NestedAbsmax = quantizeBlockwise8(centred, NestedBlocksize, &t.NestedCode)
	t.Offset = offset
	t.NestedBlocksize = NestedBlocksize
	return t, nil
}

// BlockAbsmax returns the float32 absmax of every block, decoding double quantization as
// bitsandbytes does: nested_code[q] * nested_absmax[block], rounded to float32, plus offset.
// The slice is fresh for a double-quantized tensor and t.Absmax itself otherwise.
func (t *Tensor4) BlockAbsmax() ([]float32, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if !t.DoubleQuant() {
		return t.Absmax, nil
	}
	out := make([]float32, len(t.QAbsmax))
	for i, q := range t.QAbsmax {
		// The conversion stops a fused multiply-add: bitsandbytes adds the offset in a
		// separate pass, after rounding the product.
		out[i] = float32(t.NestedCode[q]*t.NestedAbsmax[i/t.NestedBlocksize]) + t.Offset
	}
	return out, nil
}

// Dequantize returns the tensor as float32, Code[q] * absmax[block] for each element, in the
// row-major order of Shape.
func (t *Tensor4) Dequantize() ([]float32, error) {
	absmax, err := t.BlockAbsmax()
	if err != nil {
		return nil, err
	}
	n := t.Numel()
	out := make([]float32, n)
	for i := range out {
		b := t.Packed[i/2]
		q := b >> 4
		if i&1 == 1 {
			q = b & 0x0f
		}
		out[i] = t.Code[q] * absmax[i/t.Blocksize]
	}
	return out, nil
}

// Validate checks that the tensor is internally consistent: a known type and dtype, a valid
// blocksize, a positive shape, every slice of the length the shape implies, and finite scales
// and codes (a plain absmax also non-negative).
func (t *Tensor4) Validate() error {
	if !t.Type.valid() {
		return fmt.Errorf("unknown 4-bit type %v", t.Type)
	}
	if !validDType(t.DType) {
		return fmt.Errorf("unsupported original dtype %q (want float32, float16 or bfloat16)", t.DType)
	}
	if err := checkBlocksize(t.Blocksize); err != nil {
		return err
	}
	n, err := numel(t.Shape)
	if err != nil {
		return err
	}
	if want := (n + 1) / 2; len(t.Packed) != want {
		return fmt.Errorf("packed data has %d bytes, shape %v needs %d", len(t.Packed), t.Shape, want)
	}
	for i, c := range t.Code {
		if !finite(c) {
			return fmt.Errorf("code[%d] is %v", i, c)
		}
	}
	nb := ceilDiv(n, t.Blocksize)
	if !t.DoubleQuant() {
		if len(t.QAbsmax) != 0 || len(t.NestedAbsmax) != 0 {
			return errors.New("nested absmax present but NestedBlocksize is 0")
		}
		if len(t.Absmax) != nb {
			return fmt.Errorf("absmax has %d values, %d blocks of %d need %d", len(t.Absmax), nb, t.Blocksize, nb)
		}
		for i, a := range t.Absmax {
			if !finite(a) || a < 0 {
				return fmt.Errorf("absmax[%d] is %v", i, a)
			}
		}
		return nil
	}
	if t.NestedBlocksize < 0 || t.NestedBlocksize&(t.NestedBlocksize-1) != 0 || t.NestedBlocksize > MaxBlocksize {
		return fmt.Errorf("invalid nested blocksize %d: want a power of two up to %d", t.NestedBlocksize, MaxBlocksize)
	}
	if len(t.Absmax) != 0 {
		return errors.New("both plain and double-quantized absmax present")
	}
	if len(t.QAbsmax) != nb {
		return fmt.Errorf("quantized absmax has %d values, %d blocks of %d need %d", len(t.QAbsmax), nb, t.Blocksize, nb)
	}
	if want := ceilDiv(nb, t.NestedBlocksize); len(t.NestedAbsmax) != want {
		return fmt.Errorf("nested absmax has %d values, %d blocks need %d", len(t.NestedAbsmax), nb, want)
	}
	for i, a := range t.NestedAbsmax {
		if !finite(a) || a < 0 {
			return fmt.Errorf("nested absmax[%d] is %v", i, a)
		}
	}
	for i, c := range t.NestedCode {
		if !finite(c) {
			return fmt.Errorf("nested code[%d] is %v", i, c)
		}
	}
	if !finite(t.Offset) {
		return fmt.Errorf("nested offset is %v", t.Offset)
	}
	return nil
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// StorageBytes returns the bytes the tensor stores per parameter-dependent part: the packed
// codes, the absmax values (4 bytes each plain, 1 byte each double-quantized), and with double
// quantization the nested absmax values (4 bytes each) and the offset (4 bytes). The code tables
// (quant_map, nested_quant_map) and the quant_state JSON are not counted: they are fixed-size
// constants shared by every tensor of a type, not information about the parameters.
func (t *Tensor4) StorageBytes() int64 {
	b := int64(len(t.Packed))
	if t.DoubleQuant() {
		return b + int64(len(t.QAbsmax)) + 4*int64(len(t.NestedAbsmax)) + 4
	}
	return b + 4*int64(len(t.Absmax))
}

// BitsPerParam returns 8*StorageBytes()/numel: 4.5 for plain blocksize 64, and
// 4 + 8/64 + 32/(64*256) ≈ 4.127 for a large double-quantized tensor with blocksize 64.
func (t *Tensor4) BitsPerParam() float64 {
	n := t.Numel()
	if n == 0 {
		return 0
	}
	return 8 * float64(t.StorageBytes()) / float64(n)
}
