package quant

import (
	"math"
	"slices"
)

// DynamicCode is bitsandbytes' signed 8-bit dynamic code, create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8): 256 sorted values in [-1, 1] with an exact 0 (index 127)
// and 1.0 (index 255). Double quantization maps the centred absmax values to it, and the 8-bit
// optimizers their first moment (bitsandbytes' qmap1, "dynamic").
var DynamicCode = createDynamicMap(true)

// DynamicCodeUnsigned is bitsandbytes' unsigned 8-bit dynamic code, create_dynamic_map(signed=False,
// max_exponent_bits=7, total_bits=8): 256 sorted values in [0, 1], 0 at index 0 and 1.0 at 255, with
// twice the signed code's resolution per decade. The 8-bit optimizers store their second moment
// (non-negative) with it (bitsandbytes' qmap2, "udynamic").
var DynamicCodeUnsigned = createDynamicMap(false)

// createDynamicMap reproduces create_dynamic_map(signed, max_exponent_bits=7, total_bits=8) in
// float32: for exponent i in 0..6 the midpoints of torch.linspace(0.1, 1, 2^i+1) (signed, both
// signs) or torch.linspace(0.1, 1, 2^(i+1)+1) (unsigned) scaled by 10^(i-6), then 0 and 1, sorted.
func createDynamicMap(signed bool) [256]float32 {
	data := make([]float32, 0, 256)
	// 10^(i-6) as Python computes it (a correctly rounded double), then rounded to float32.
	scales := [7]float32{1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1}
	for i, scale := range scales {
		items := 1<<i + 1
		if !signed {
			items = 1<<(i+1) + 1
		}
		b := linspace32(0.1, 1, items)
		for k := 0; k+1 < len(b); k++ {
			mean := (b[k] + b[k+1]) / 2
			v := scale * mean
			data = append(data, v)
			if signed {
				data = append(data, -v)
			}
		}
	}
	data = append(data, 0, 1)
	slices.Sort(data)
	var code [256]float32
	copy(code[:], data)
	return code
}

// linspace32 is torch.linspace(start, end, steps, dtype=float32) on the CPU: the first half
// counts up from start, the second half down from end. torch's compiled kernel fuses each
// start + step*i into one FMA on x86-64 with AVX2/AVX-512 and on aarch64, so this does too;
// torch's portable (no-FMA) build differs in the last bit at a few entries, which is harmless
// because the code is stored next to the data it decodes (nested_quant_map).
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	step := (end - start) / float32(steps-1)
	half := steps / 2
	for i := range out {
		if i < half {
			out[i] = float32(math.FMA(float64(step), float64(i), float64(start)))
		} else {
			out[i] = float32(math.FMA(-float64(step), float64(steps-i-1), float64(end)))
		}
	}
	return out
}

// Quantize8 maps x (already normalised to [-1, 1]) to the index of its nearest value in code,
// a sorted 256-entry table, exactly as bitsandbytes' dQuantize<0>: a 7-step binary search from
// index 127, then a comparison with the float32 midpoint to the neighbour on the side of x.
// Ties go to the index the search ended on.
func Quantize8(code *[256]float32, x float32) uint8 {
	pivot, upperPivot, lowerPivot := 127, 255, 0
	lower, upper := float32(-1), float32(1)
	val := code[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > val {
			lowerPivot, lower = pivot, val
			pivot += i
		} else {
			upperPivot, upper = pivot, val
			pivot -= i
		}
		val = code[pivot]
	}
	if upperPivot == 255 {
		upper = code[upperPivot]
	}
	if lowerPivot == 0 {
		lower = code[lowerPivot]
	}
	if x > val {
		if mid := (upper + val) * 0.5; x > mid {
			return uint8(upperPivot)
		}
		return uint8(pivot)
	}
	if mid := (lower + val) * 0.5; x < mid {
		return uint8(lowerPivot)
	}
	return uint8(pivot)
}

// quantizeBlockwise8 is bitsandbytes' quantize_blockwise with the dynamic code: per block of bs
// values the float32 absmax, then each value times the reciprocal of its block's absmax mapped to
// the nearest code index. A block of zeros stores absmax 0 and the index of 0.0 (the CUDA kernel
// would compute 0*inf = NaN there; the result decodes to zero either way).
func quantizeBlockwise8(x []float32, bs int, code *[256]float32) (q []uint8, absmax []float32) {
	nb := (len(x) + bs - 1) / bs
	q = make([]uint8, len(x))
	absmax = make([]float32, nb)
	for b := range nb {
		blk := x[b*bs : min((b+1)*bs, len(x))]
		var m float32
		for _, v := range blk {
			m = max(m, abs32(v))
		}
		absmax[b] = m
		out := q[b*bs : b*bs+len(blk)]
		if m == 0 {
			z := Quantize8(code, 0)
			for i := range out {
				out[i] = z
			}
			continue
		}
		inv := 1 / m
		for i, v := range blk {
			out[i] = Quantize8(code, v*inv)
		}
	}
	return q, absmax
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
