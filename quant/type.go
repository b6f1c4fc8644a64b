// Package quant implements the 4-bit blockwise quantization of bitsandbytes (NF4 and FP4), its
// double quantization of the per-block scales, and the tensors transformers stores for a 4-bit
// Linear layer, bit for bit, so that checkpoints interchange with the Python stack.
//
// The layout follows bitsandbytes' CUDA kernels (kQuantizeBlockwise, dQuantizeNF4, dQuantizeFP4,
// dQuantize): the tensor is flattened row-major, cut into blocks of Blocksize elements, each block
// scaled by the reciprocal of its absolute maximum and mapped to a 4-bit code, two codes a byte
// with the first element in the high nibble.
package quant

import (
	"fmt"
	"math"
	"strings"
)

// Type is a 4-bit data type. The zero value is NF4, the type QLoRA uses.
type Type uint8

const (
	// NF4 is NormalFloat4: 16 quantiles of N(0,1) scaled to [-1, 1] (NF4Code).
	NF4 Type = iota
	// FP4 is bitsandbytes' 4-bit float, e2m1 with bias 3, normalised by 12 (FP4Code).
	FP4
)

// Blocksizes bitsandbytes accepts for 4-bit quantization (quantize_4bit).
const (
	// DefaultBlocksize is the blocksize transformers and bitsandbytes use by default.
	DefaultBlocksize = 64
	// MinBlocksize is the smallest 4-bit blocksize bitsandbytes accepts.
	MinBlocksize = 32
	// MaxBlocksize is the largest 4-bit blocksize bitsandbytes accepts.
	MaxBlocksize = 4096
	// NestedBlocksize is the blocksize bitsandbytes uses to quantize the absmax values with
	// double quantization (compress_statistics=True).
	NestedBlocksize = 256
)

// String returns "nf4" or "fp4", the names bitsandbytes uses in quant_type.
func (t Type) String() string {
	switch t {
	case NF4:
		return "nf4"
	case FP4:
		return "fp4"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// ParseType parses "nf4" or "fp4" (case-insensitive).
func ParseType(s string) (Type, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "nf4":
		return NF4, nil
	case "fp4":
		return FP4, nil
	}
	return 0, fmt.Errorf("unknown 4-bit quant type %q (want nf4 or fp4)", s)
}

func (t Type) valid() bool { return t == NF4 || t == FP4 }

// Code returns the 16 values of the type, indexed by 4-bit code (bitsandbytes' quant_map).
func (t Type) Code() [16]float32 {
	if t == FP4 {
		return FP4Code
	}
	return NF4Code
}

// Encode maps a value normalised to [-1, 1] to its 4-bit code with bitsandbytes' decision tree.
// Comparisons are strict, so a value exactly on a threshold takes the lower code; NaN maps to 0,
// as in the CUDA kernel.
func (t Type) Encode(x float32) uint8 {
	if t == FP4 {
		return encodeFP4(x)
	}
	return encodeNF4(x)
}

// zeroCode is the code of 0.0: what an all-zero block and the padding nibble of an odd-sized
// tensor hold (bitsandbytes pads the last block with zeros before quantizing it).
func (t Type) zeroCode() uint8 { return t.Encode(0) }

// nf4Thresholds are bitsandbytes' dQuantizeNF4 decision thresholds in ascending order: the
// midpoints between consecutive NF4Code values, written as the float32 literals of
// csrc/kernels.cu. nf4Thresholds[i] separates code i from code i+1.
var nf4Thresholds = [16]float32{
	-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
	-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
	0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
	0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
	float32(math.Inf(1)), // never reached: the index stays below 15
}

// encodeNF4 is bitsandbytes' dQuantizeNF4: its binary tree of comparisons x > threshold, walked
// without branches (a flag a step, where the tree's branches mispredicted on random weights:
// BenchmarkQuantize 30.6 → 17.9 ns a weight on one core of a Zen 5 EPYC). The code is the number
// of thresholds below x.
func encodeNF4(x float32) uint8 {
	t := &nf4Thresholds
	i := above(x, t[7]) << 3
	i += above(x, t[(i+3)&15]) << 2
	i += above(x, t[(i+1)&15]) << 1
	return uint8(i + above(x, t[i&15]))
}

// above is 1 if x > t, else 0: a function of its own compiles to a SETcc, where an if that adds
// to the index inline compiled to a branch.
func above(x, t float32) int {
	if x > t {
		return 1
	}
	return 0
}

// fp4Pivots are bitsandbytes' dQuantizeFP4 pivots in ascending order (the midpoints of the FP4
// magnitudes divided by 12, its float32 literals), and fp4Magnitude the code of a magnitude above
// i of them.
var (
	fp4Pivots    = [8]float32{0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333, float32(math.Inf(1))}
	fp4Magnitude = [8]uint8{0b0000, 0b0001, 0b0110, 0b0111, 0b0100, 0b0101, 0b0010, 0b0011}
)

// encodeFP4 is bitsandbytes' dQuantizeFP4: the sign goes to bit 3, the magnitude through its
// binary search over fp4Pivots (walked without branches, as encodeNF4's).
func encodeFP4(x float32) uint8 {
	var sign uint8
	if x < 0 {
		sign = 0b1000
		x = -x
	}
	p := &fp4Pivots
	i := above(x, p[3]) << 2
	i += above(x, p[(i+1)&7]) << 1
	i += above(x, p[i&7])
	return fp4Magnitude[i&7] + sign
}

// ValidBlocksize reports whether bs is a 4-bit blocksize bitsandbytes accepts: a power of two
// from 32 to 4096.
func ValidBlocksize(bs int) bool {
	return bs >= MinBlocksize && bs <= MaxBlocksize && bs&(bs-1) == 0
}

func checkBlocksize(bs int) error {
	if !ValidBlocksize(bs) {
		return fmt.Errorf("invalid blocksize %d: want a power of two from %d to %d", bs, MinBlocksize, MaxBlocksize)
	}
	return nil
}
