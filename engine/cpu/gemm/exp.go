package gemm

import "math"

// ExpSub sets dst[i] = exp(src[i] − shift) and returns the sum of dst, in one pass over memory (a
// softmax row's exponentials and their denominator; shift is the row's maximum, so nothing
// overflows). dst and src may be the same slice; dst must be at least as long as src. Arguments
// at or below −104 give 0. On AVX-512 it runs sixteen lanes at a time with Cephes' expf (relative
// error about 2e-7), the last few padded to sixteen; elsewhere float64 math.Exp rounded to float32.
func ExpSub(dst, src []float32, shift float32) float32 {
	dst = dst[:len(src)]
	var sum float32
	i := 0
	if useAVX512 {
		i = len(src) &^ 15
		if i > 0 {
			sum = expSubAVX512(i, &src[0], &dst[0], shift)
		}
		if i < len(src) {
			// The tail through the same kernel, padded with −∞ (whose exponential, 0, adds
			// nothing): a softmax row's last few keys cost a float64 exp each otherwise.
			t := [16]float32{}
			for j := range t {
				t[j] = float32(math.Inf(-1))
			}
			copy(t[:], src[i:])
			sum += expSubAVX512(16, &t[0], &t[0], shift)
			copy(dst[i:], t[:len(src)-i])
			return sum
		}
	}
	for ; i < len(src); i++ {
		e := float32(math.Exp(float64(src[i] - shift)))
		dst[i] = e
		sum += e
	}
	return sum
}
