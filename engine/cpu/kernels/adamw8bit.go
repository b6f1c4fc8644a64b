package kernels

import (
	"math"

	"github.com/lathe-ml/lathe/quant"
)

// AdamW8bit is one step of bitsandbytes' blockwise 8-bit AdamW (engine.AdamW8bitStep), in place.
// p, g: [n]; q: [2·n4] the first moment's codes then the second's, each padded to n4 = n rounded
// up to a multiple of 4 (padding holds the code of zero); absmax: [2·nb] their block scales; code1, code2: the moments' sorted 256-value
// codes (signed, unsigned). The gradient is gs·g. Arithmetic is f32, in the order the CUDA kernel
// (and the WGSL one) uses, so that backends agree on the codes except at exact rounding ties.
// Panics if an operand is short, bs > 256 or step < 1.
func AdamW8bit(p, g []float32, gs float32, q []uint8, absmax []float32, code1, code2 *[256]float32, bs, step int, lr, beta1, beta2, eps, weightDecay float32) {
	if step < 1 {
		panic("kernels.AdamW8bit: step counts from 1")
	}
	if bs < 1 || bs > maxOptim8Block {
		panic("kernels.AdamW8bit: blocksize out of range")
	}
	n := len(p)
	nb := (n + bs - 1) / bs
	need("AdamW8bit", "g", len(g), n)
	n4 := (n + 3) &^ 3
	need("AdamW8bit", "q", len(q), 2*n4)
	need("AdamW8bit", "absmax", len(absmax), 2*nb)
	corr1 := 1 - float32(math.Pow(float64(beta1), float64(step)))
	corr2 := float32(math.Sqrt(float64(1 - float32(math.Pow(float64(beta2), float64(step))))))
	stepSize := -lr * corr2 / corr1
	epsC := corr2 * eps
	decay := 1 - lr*weightDecay
	q1, q2 := q[:n4], q[n4:]
	zero1, zero2 := quant.Quantize8(code1, 0), quant.Quantize8(code2, 0)
	parallelFor(nb, max(1, elemGrain/(4*bs)), func(lo, hi int) {
		var s1, s2 [maxOptim8Block]float32 // a block's moments before requantization (no allocation)
		for b := lo; b < hi; b++ {
			base, end := b*bs, min((b+1)*bs, n)
			a1, a2 := absmax[b], absmax[nb+b]
			var new1, new2 float32
			for i := base; i < end; i++ {
				gi := g[i] * gs
				m := code1[q1[i]]*a1*beta1 + (1-beta1)*gi
				v := code2[q2[i]]*a2*beta2 + (1-beta2)*gi*gi
				s1[i-base], s2[i-base] = m, v
				new1 = max(new1, abs32(m))
				new2 = max(new2, abs32(v))
			}
			absmax[b], absmax[nb+b] = new1, new2
			for i := base; i < end; i++ {
				m, v := s1[i-base], s2[i-base]
				pi := p[i] + stepSize*(m/(float32(math.Sqrt(float64(v)))+epsC))
				if weightDecay > 0 {
					pi *= decay
				}
				p[i] = pi
				q1[i] = quantizeSigned8(code1, m, new1, zero1)
				q2[i] = zero2
				if new2 > 0 {
					q2[i] = quant.Quantize8(code2, v/new2)
				}
			}
			for i := end; i < min(base+bs, n4); i++ {
				q1[i], q2[i] = zero1, zero2
			}
		}
	})
}

// maxOptim8Block is the largest blocksize AdamW8bit takes (engine.Optim8Block is 256).
const maxOptim8Block = 256

// quantizeSigned8 is the first moment's requantization: the nearest code of x/absmax, moved one
// step outward when rounding gave the code a sign x does not have (bitsandbytes keeps the sign of
// the momentum); zero when the block is all zero.
func quantizeSigned8(code *[256]float32, x, absmax float32, zero uint8) uint8 {
	if absmax == 0 {
		return zero
	}
	c := quant.Quantize8(code, x/absmax)
	if math.Signbit(float64(code[c])) != math.Signbit(float64(x)) {
		if x > 0 {
			c++
		} else {
			c--
		}
	}
	return c
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
