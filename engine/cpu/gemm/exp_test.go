package gemm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ExpSub against float64 exp on every path, over lengths that are not multiples of 16, arguments
// from deep underflow (−∞ included) to e^80, in place and not.
func TestExpSub(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, n := range []int{1, 15, 16, 17, 100, 1031} {
			src := make([]float32, n)
			for i := range src {
				src[i] = float32(r.Float64()*120 - 110)
			}
			src[0] = float32(math.Inf(-1))
			if n > 3 {
				src[1], src[2], src[3] = -103.9, 0, 80
			}
			for _, shift := range []float32{0, 2.5, -3} {
				for _, inPlace := range []bool{false, true} {
					in := append([]float32(nil), src...)
					dst := make([]float32, n)
					if inPlace {
						dst = in
					}
					got := ExpSub(dst, in, shift)
					want := 0.0
					for i, x := range src {
						e := math.Exp(float64(x - shift)) // the argument is rounded to float32, as it is in the kernel
						want += e
						if d := math.Abs(float64(dst[i]) - e); d > 4e-7*e && d > 1e-45 {
							t.Fatalf("%s n=%d shift=%v: exp(%v) = %v, float64 %v", isa, n, shift, x, dst[i], e)
						}
					}
					if math.Abs(float64(got)-want) > 1e-6*want {
						t.Fatalf("%s n=%d shift=%v: sum %v, float64 %v", isa, n, shift, got, want)
					}
				}
			}
		}
	}
}
