package gemm

import "math"

// The vectorised forms of the elementwise kernels that decoding and prefill spend time in, beside
// the float64 references in engine/cpu/kernels (which the tests hold them to). They run AVX-512
// where the CPU has it; elsewhere (and for the tails) plain Go in float32, or the reference.

// elemChunk is the most elements one task of SwiGLU takes: enough to hide a goroutine's start.
const elemChunk = 1 << 14

// SwiGLU sets y = silu(gate) ⊙ up elementwise (y may be gate or up), split over the cores for
// large inputs. On the vector path a gate below −88.7 is clamped there, which changes only results
// under 1e-35 in magnitude (silu tends to 0).
func SwiGLU(y, gate, up []float32) {
	n := len(gate)
	y, up = y[:n], up[:n]
	parallel((n+elemChunk-1)/elemChunk, workers(64*n), func(t int) {
		lo, hi := t*elemChunk, min(n, (t+1)*elemChunk)
		i := lo
		if useAVX512 && hi-lo >= 16 {
			m := (hi - lo) &^ 15
			swigluAVX512(m, &gate[lo], &up[lo], &y[lo])
			i += m
		}
		for ; i < hi; i++ {
			g := float64(gate[i])
			y[i] = float32(g / (1 + math.Exp(-g)) * float64(up[i]))
		}
	})
}

// SwiGLUBackward sets SwiGLU's gradients: with s = sigmoid(gate[i]),
// dup[i] = dy[i]·gate[i]·s and dgate[i] = dy[i]·up[i]·s·(1 + gate[i]·(1 − s)), in float32 with the
// vector exponential where the CPU has AVX-512 (as SwiGLU), else in float64 (kernels'). The
// outputs may be inputs. It was the largest elementwise kernel of a QLoRA step: a scalar float64
// exponential an element.
func SwiGLUBackward(dgate, dup, dy, gate, up []float32) {
	n := len(gate)
	dgate, dup, dy, up = dgate[:n], dup[:n], dy[:n], up[:n]
	parallel((n+elemChunk-1)/elemChunk, workers(64*n), func(t int) {
		lo, hi := t*elemChunk, min(n, (t+1)*elemChunk)
		i := lo
		if useAVX512 && hi-lo >= 16 {
			m := (hi - lo) &^ 15
			swigluBackwardAVX512(m, &gate[lo], &up[lo], &dy[lo], &dgate[lo], &dup[lo])
			i += m
		}
		for ; i < hi; i++ {
			g, d := float64(gate[i]), float64(dy[i])
			s := 1 / (1 + math.Exp(-g))
			dgate[i] = float32(d * float64(up[i]) * s * (1 + g*(1-s)))
			dup[i] = float32(d * g * s)
		}
	})
}

// RMSNorm is Hugging Face's LlamaRMSNorm, y = x / sqrt(mean(x²) + eps) ⊙ w row by row (y may be
// x): a pass for the sum of squares, a pass for the product, rows split over the cores. The sum
// of squares is float32 in sixteen lanes and four accumulators (relative error ~1e-7·√dim/64).
func RMSNorm(y, x, w []float32, rows, dim int, eps float32) {
	if rows <= 0 || dim <= 0 {
		return
	}
	x, y, w = x[:rows*dim], y[:rows*dim], w[:dim]
	per := max(1, elemChunk/dim)
	parallel((rows+per-1)/per, workers(64*rows*dim), func(t int) {
		for r := t * per; r < min(rows, (t+1)*per); r++ {
			xr, yr := x[r*dim:(r+1)*dim], y[r*dim:(r+1)*dim]
			m := 0
			if useAVX512 {
				m = dim &^ 15
			}
			ss := sumSquares(xr)
			rstd := float32(1 / math.Sqrt(float64(ss)/float64(dim)+float64(eps)))
			if m > 0 {
				scaleMulAVX512(m, &xr[0], &w[0], &yr[0], rstd)
			}
			for i := m; i < dim; i++ {
				yr[i] = xr[i] * rstd * w[i]
			}
		}
	})
}

// sumSquares is Σ x[i]², in sixteen float32 lanes and four accumulators with AVX-512.
func sumSquares(x []float32) float32 {
	m := 0
	if useAVX512 {
		m = len(x) &^ 15
	}
	var ss float32
	if m > 0 {
		ss = sumSquaresAVX512(m, &x[0])
	}
	for _, v := range x[m:] {
		ss += v * v
	}
	return ss
}
