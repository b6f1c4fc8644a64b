package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAdamW checks one step against numbers worked out by hand from torch.optim.AdamW's update
// (lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01). For the first element at step 1:
// p = 1·(1−0.001) = 0.999, m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25, p −= 0.1·0.5/(0.5+1e-8).
func TestAdamW(t *testing.T) {
	for _, c := range []struct {
		p, g, m, v       float32
		step             int
		wantP, wantM, wv float64
	}{
		{1, 0.5, 0, 0, 1, 0.899000002, 0.05, 0.00025},
		{-2, -1, 0.1, 0.01, 3, -1.9960730284418455, -0.01, 0.01099},
		{3, 0, 0.2, 0.04, 2, 2.975810897566718, 0.18, 0.03996},
	} {
		p, g, m, v := []float32{c.p}, []float32{c.g}, []float32{c.m}, []float32{c.v}
		AdamW(p, g, m, v, c.step, 0.1, 0.9, 0.999, 1e-8, 0.01)
		require.InDelta(t, c.wantP, float64(p[0]), 1e-6, "p at step %d", c.step)
		// 3e-5 relative: the betas reach the kernel as float32, and 1−float32(0.999) is 1.3e-5 off 0.001.
		require.InEpsilon(t, c.wantM, float64(m[0]), 3e-5, "m at step %d", c.step)
		require.InEpsilon(t, c.wv, float64(v[0]), 3e-5, "v at step %d", c.step)
	}
}

// TestAdamWVector runs the kernel on many elements against the update written out in float64.
func TestAdamWVector(t *testing.T) {
	const n = 7 * 13
	r := newRand(70)
	p, g, m, v := randn(r, n), randn(r, n), randn(r, n), randn(r, n)
	for i := range v {
		v[i] *= v[i]
	}
	p0, m0, v0 := to64(p), to64(m), to64(v)
	const step = 5
	AdamW(p, g, m, v, step, 2e-3, 0.9, 0.95, 1e-6, 0.1)
	b1, b2 := float64(float32(0.9)), float64(float32(0.95))
	lr, wd, eps := float64(float32(2e-3)), float64(float32(0.1)), float64(float32(1e-6))
	wantP, wantM, wantV := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range wantP {
		gi := float64(g[i])
		wantM[i] = b1*m0[i] + (1-b1)*gi
		wantV[i] = b2*v0[i] + (1-b2)*gi*gi
		mh := wantM[i] / (1 - pow(b1, step))
		vh := wantV[i] / (1 - pow(b2, step))
		wantP[i] = p0[i]*(1-lr*wd) - lr*mh/(sqrt(vh)+eps)
	}
	requireClose(t, "p", p, wantP, fwdTol)
	requireClose(t, "m", m, wantM, fwdTol)
	requireClose(t, "v", v, wantV, fwdTol)
}

func pow(x float64, n int) float64 {
	y := 1.0
	for range n {
		y *= x
	}
	return y
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
