package kernels

import (
	"math"
	"testing"
)

// refRMSNorm is LlamaRMSNorm in float64: x / sqrt(mean(x²)+eps) * w.
func refRMSNorm(x, w []float64, rows, dim int, eps float64) []float64 {
	y := make([]float64, rows*dim)
	for r := 0; r < rows; r++ {
		ms := 0.0
		for c := 0; c < dim; c++ {
			ms += x[r*dim+c] * x[r*dim+c]
		}
		ms /= float64(dim)
		for c := 0; c < dim; c++ {
			y[r*dim+c] = x[r*dim+c] / math.Sqrt(ms+eps) * w[c]
		}
	}
	return y
}

func TestRMSNorm(t *testing.T) {
	const rows, dim, eps = 7, 13, 1e-5
	r := newRand(1)
	x, w := randn(r, rows*dim), randn(r, dim)
	y := nans(rows * dim)
	RMSNorm(y, x, w, rows, dim, eps)
	requireClose(t, "y", y, refRMSNorm(to64(x), to64(w), rows, dim, float64(float32(eps))), fwdTol)
}

func TestRMSNormBackward(t *testing.T) {
	const rows, dim, eps = 7, 13, 1e-5
	r := newRand(2)
	x, w, dy := randn(r, rows*dim), randn(r, dim), randn(r, rows*dim)
	x64, w64 := to64(x), to64(w)
	e := float64(float32(eps))
	loss := func() float64 { return dot(refRMSNorm(x64, w64, rows, dim, e), dy) }
	wantDx, wantDw := fdGrad(x64, loss), fdGrad(w64, loss)

	dx, dw := nans(rows*dim), nans(dim)
	RMSNormBackward(dx, dw, dy, x, w, rows, dim, eps)
	requireClose(t, "dx", dx, wantDx, bwdTol)
	requireClose(t, "dw", dw, wantDw, bwdTol)

	// A frozen weight: dw nil, dx unchanged.
	dx2 := nans(rows * dim)
	RMSNormBackward(dx2, nil, dy, x, w, rows, dim, eps)
	requireBits(t, "dx with dw nil", dx, dx2)
}
