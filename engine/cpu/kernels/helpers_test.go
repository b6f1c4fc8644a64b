package kernels

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// Tolerances. Kernels compute in float64 and round once, so forwards sit within a few float32 ulps
// of a float64 reference; backwards are compared with central finite differences of a float64
// reference forward (truncation and rounding error about 1e-9), so what remains is float32 storage.
const (
	fwdTol = 1e-6 // forward vs float64 reference
	bwdTol = 1e-4 // backward vs finite differences
	fdStep = 1e-5 // central-difference step
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x1a7e)) }

// randn is n standard-normal float32s.
func randn(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// nans is n NaNs: outputs start poisoned so an unwritten element fails its check.
func nans(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(math.NaN())
	}
	return x
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// requireClose checks |got−want| ≤ tol·max(|want_i|, max|want|/100) element by element: relative
// where an element is large, absolute (against the tensor's scale) where cancellation made it
// small. NaN never passes.
func requireClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	require.Len(t, got, len(want), what)
	var scale float64
	for _, w := range want {
		scale = max(scale, math.Abs(w))
	}
	for i, w := range want {
		lim := tol * max(math.Abs(w), scale/100, 1e-30)
		if d := math.Abs(float64(got[i]) - w); !(d <= lim) {
			require.Failf(t, what, "element %d: got %g, want %g (|diff| %.3g > %.3g)", i, got[i], w, d, lim)
		}
	}
}

// requireBits checks two float32 slices are bitwise identical.
func requireBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	require.Len(t, b, len(a), what)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			require.Failf(t, what, "element %d differs: %g vs %g", i, a[i], b[i])
		}
	}
}

// dot is Σ y⊙r, the scalar objective L = sum(forward(x) ⊙ R).
func dot(y []float64, r []float32) float64 {
	var s float64
	for i, v := range y {
		s += v * float64(r[i])
	}
	return s
}

// fdGrad is the central-difference gradient of f with respect to x (f reads x).
func fdGrad(x []float64, f func() float64) []float64 {
	g := make([]float64, len(x))
	for i := range x {
		v := x[i]
		x[i] = v + fdStep
		hi := f()
		x[i] = v - fdStep
		lo := f()
		x[i] = v
		g[i] = (hi - lo) / (2 * fdStep)
	}
	return g
}

// withProcs runs fn with GOMAXPROCS set to n.
func withProcs(n int, fn func()) {
	old := runtime.GOMAXPROCS(n)
	defer runtime.GOMAXPROCS(old)
	fn()
}

func TestParallelForCovers(t *testing.T) {
	for _, procs := range []int{1, 3, 7} {
		withProcs(procs, func() {
			for _, n := range []int{0, 1, 5, 100, 1001} {
				for _, g := range []int{0, 1, 7, 1000} {
					hits := make([]int, n)
					parallelFor(n, g, func(lo, hi int) {
						for i := lo; i < hi; i++ {
							hits[i]++
						}
					})
					for i, h := range hits {
						require.Equal(t, 1, h, "procs %d n %d grain %d index %d", procs, n, g, i)
					}
				}
			}
		})
	}
}

func TestShortSlicePanics(t *testing.T) {
	require.PanicsWithValue(t, "kernels.RMSNorm: x has 12 elements, need 13", func() {
		RMSNorm(make([]float32, 13), make([]float32, 12), make([]float32, 13), 1, 13, 1e-6)
	})
	require.Panics(t, func() { Add(make([]float32, 2), make([]float32, 3), make([]float32, 3)) })
	require.Panics(t, func() {
		Attention(make([]float32, 8), make([]float32, 2), make([]float32, 8), make([]float32, 8), make([]float32, 8), 1, 2, 2, 3, 2, 4, 1, nil)
	})
	require.Panics(t, func() { AdamW(nil, nil, nil, nil, 0, 0.1, 0.9, 0.999, 1e-8, 0) })
}
