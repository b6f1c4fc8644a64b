package gemm

import "math"

// ExpSub sets dst[i] = exp(src[i] − shift) and returns the sum of dst, in one pass over memory (a
// softmax row's exponentials and their denominator; shift is the row's maximum, so nothing
// overflows). dst and src may be the same slice; dst must be at least as long as src. Arguments
// at or below −104 give 0. On AVX-512 it runs sixteen lanes at a time with Cephes' expf (relative
// error about 2e-7); elsewhere, and for the tail, float64 math.Exp rounded to float32.
func ExpSub(dst, src []float32, shift float32) float32 {
	dst = dst[:len(src)]
	var sum float32
	i := 0
	if useAVX512 && len(src) >= 16 {
		i = len(src) &^ 15
		sum = expSubAVX512(i, &src[0], &dst[0], shift)
	}
	for ; i < len(src); i++ {
		e := float32(math.Exp(float64(src[i] - shift)))
		dst[i] = e
		sum += e
	}
	return sum
}
