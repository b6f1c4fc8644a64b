package kernels

import "math"

// AdamW is one step of torch.optim.AdamW (decoupled weight decay, no amsgrad), in place:
//
//	p ← p·(1 − lr·weightDecay)
//	m ← beta1·m + (1 − beta1)·g
//	v ← beta2·v + (1 − beta2)·g²
//	p ← p − lr · (m/(1 − beta1^step)) / (sqrt(v/(1 − beta2^step)) + eps)
//
//	p, m, v: [n] (updated in place), g: [n]
//
// step counts from 1. Each element is computed in float64; p after decay, m and v are rounded to
// float32 before the final update reads them, as torch stores them. Panics if step < 1 or m, v or
// g is shorter than p.
func AdamW(p, g, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	AdamWScaled(p, g, 1, m, v, step, lr, beta1, beta2, eps, weightDecay)
}

// AdamWScaled is AdamW with the gradient gs·g, the product rounded to float32 first (as a Scale
// kernel before AdamW computes it): the update after clipping.
func AdamWScaled(p, g []float32, gs float32, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	if step < 1 {
		panic("kernels.AdamW: step counts from 1")
	}
	n := len(p)
	need("AdamW", "g", len(g), n)
	need("AdamW", "m", len(m), n)
	need("AdamW", "v", len(v), n)
	b1, b2 := float64(beta1), float64(beta2)
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	decay := 1 - float64(lr)*float64(weightDecay)
	stepSize := float64(lr) / bc1
	e := float64(eps)
	parallelFor(n, elemGrain/4, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gi := float64(float32(gs * g[i]))
			mi := b1*float64(m[i]) + (1-b1)*gi
			vi := b2*float64(v[i]) + (1-b2)*gi*gi
			m[i], v[i] = float32(mi), float32(vi)
			// Like torch, the decayed p, m and v are rounded to float32 before the update reads them.
			pi := float64(float32(float64(p[i]) * decay))
			p[i] = float32(pi - stepSize*float64(m[i])/(math.Sqrt(float64(v[i])/bc2)+e))
		}
	})
}
