package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/quant"
)

// adamw8bitRef is the 8-bit step in float64: decode, update, new block absmax, the parameter
// update, and requantization by a search of the whole code for the nearest value (the kernel's
// binary search must find the same index), with the first moment's sign rule.
func adamw8bitRef(p, g []float64, gs float64, q []uint8, absmax []float64, c1, c2 *[256]float32, bs, step int, lr, b1, b2, eps, wd float64) {
	n := len(p)
	nb := (n + bs - 1) / bs
	n4 := (n + 3) &^ 3
	nearest := func(code *[256]float32, x float64) uint8 {
		best, bi := math.Inf(1), 0
		for i, c := range code {
			if d := math.Abs(x - float64(c)); d < best {
				best, bi = d, i
			}
		}
		return uint8(bi)
	}
	corr1 := 1 - math.Pow(b1, float64(step))
	corr2 := math.Sqrt(1 - math.Pow(b2, float64(step)))
	for b := range nb {
		lo, hi := b*bs, min((b+1)*bs, n)
		m, v := make([]float64, hi-lo), make([]float64, hi-lo)
		var a1, a2 float64
		for i := lo; i < hi; i++ {
			gi := g[i] * gs
			m[i-lo] = float64(c1[q[i]])*absmax[b]*b1 + (1-b1)*gi
			v[i-lo] = float64(c2[q[n4+i]])*absmax[nb+b]*b2 + (1-b2)*gi*gi
			a1, a2 = math.Max(a1, math.Abs(m[i-lo])), math.Max(a2, math.Abs(v[i-lo]))
		}
		absmax[b], absmax[nb+b] = a1, a2
		for i := lo; i < hi; i++ {
			mi, vi := m[i-lo], v[i-lo]
			p[i] = (p[i] - lr*corr2/corr1*mi/(math.Sqrt(vi)+corr2*eps)) * (1 - lr*wd)
			c := nearest(c1, mi/a1)
			if math.Signbit(float64(c1[c])) != math.Signbit(mi) {
				if mi > 0 {
					c++
				} else {
					c--
				}
			}
			q[i], q[n4+i] = c, nearest(c2, vi/a2)
		}
		for i := hi; i < min((b+1)*bs, n4); i++ { // padding: the code of zero
			q[i], q[n4+i] = nearest(c1, 0), nearest(c2, 0)
		}
	}
}

// TestAdamW8bitReference runs the kernel from a random 8-bit state (three blocks, the last one
// partial) against the float64 reference: parameters and block scales agree to float32 rounding,
// and every code is the reference's except where the reference value sits at a rounding tie.
func TestAdamW8bitReference(t *testing.T) {
	const n, bs = 2*256 + 77, 256
	nb := (n + bs - 1) / bs
	const n4 = n + 3
	r := newRand(81)
	c1, c2 := &quant.DynamicCode, &quant.DynamicCodeUnsigned
	for _, wd := range []float32{0, 0.01} {
		p, g := randn(r, n), randn(r, n)
		q := make([]uint8, 2*n4)
		for i := range q {
			q[i] = uint8(r.IntN(256))
		}
		absmax := make([]float32, 2*nb)
		for i := range absmax {
			absmax[i] = float32(0.01 + r.Float64()) // first moment scale, then the second's
		}
		p64, g64, am64 := to64(p), to64(g), to64(absmax)
		p0 := to64(p)
		q64 := append([]uint8(nil), q...)
		const gs, lr, step = 0.5, 1e-2, 4
		AdamW8bit(p, g, gs, q, absmax, c1, c2, bs, step, lr, 0.9, 0.999, 1e-8, wd)
		adamw8bitRef(p64, g64, gs, q64, am64, c1, c2, bs, step, lr, float64(float32(0.9)), float64(float32(0.999)), float64(float32(1e-8)), float64(wd))
		for i := range p {
			// float32 rounding of p, and of the update (large where the decoded v is near 0).
			require.InDelta(t, p64[i], float64(p[i]), 1e-6*math.Abs(p64[i])+1e-5*math.Abs(p64[i]-p0[i]), "p[%d]", i)
		}
		for i := range absmax {
			require.InEpsilon(t, am64[i], float64(absmax[i]), 1e-5, "absmax[%d]", i)
		}
		mism := 0
		for i := range q {
			if q[i] != q64[i] {
				mism++
				require.InDelta(t, int(q64[i]), int(q[i]), 1, "code %d", i)
			}
		}
		require.LessOrEqual(t, mism, 2, "codes that differ from the float64 reference")
		// The padding of each moment's last block holds the code of zero.
		for i := n; i < n4; i++ {
			require.Equal(t, quant.Quantize8(c1, 0), q[i])
			require.Equal(t, quant.Quantize8(c2, 0), q[n4+i])
		}
		// The state moved: codes and scales are not what they were.
		require.NotEqual(t, am64[0], 0.0)
	}
}

// TestAdamW8bitTracksAdamW minimises Σ(p − target)²/2 with the 8-bit and the f32 optimizer from
// a zero state: after 300 steps the 8-bit parameters sit as close to the target as AdamW's.
func TestAdamW8bitTracksAdamW(t *testing.T) {
	const n, bs, steps = 1000, 256, 300
	r := newRand(82)
	target := randn(r, n)
	p32, p8 := make([]float32, n), make([]float32, n)
	for i := range p32 {
		p32[i] = float32(r.NormFloat64())
		p8[i] = p32[i]
	}
	m, v := make([]float32, n), make([]float32, n)
	nb := (n + bs - 1) / bs
	q, absmax := make([]uint8, 2*n), make([]float32, 2*nb) // n is a multiple of 4
	loss := func(p []float32) float64 {
		var s float64
		for i := range p {
			d := float64(p[i] - target[i])
			s += d * d / 2
		}
		return s
	}
	start := loss(p32)
	grad := func(p []float32) []float32 {
		g := make([]float32, n)
		for i := range g {
			g[i] = p[i] - target[i]
		}
		return g
	}
	for s := 1; s <= steps; s++ {
		AdamW(p32, grad(p32), m, v, s, 1e-2, 0.9, 0.999, 1e-8, 0)
		AdamW8bit(p8, grad(p8), 1, q, absmax, &quant.DynamicCode, &quant.DynamicCodeUnsigned, bs, s, 1e-2, 0.9, 0.999, 1e-8, 0)
	}
	l32, l8 := loss(p32), loss(p8)
	require.Less(t, l32, start/20, "f32 AdamW converges")
	require.InDelta(t, l32, l8, 0.05*start/20, "8-bit final loss %v against f32 %v (start %v)", l8, l32, start)
}
