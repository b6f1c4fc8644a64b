package kernels

import "math"

// elemGrain is the fewest elements one goroutine takes in a cheap elementwise loop.
const elemGrain = 1 << 15

// sigmoid is 1/(1+e^−x) in float64; it saturates cleanly to 0 or 1.
func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// SiLU is y = x·sigmoid(x), elementwise over len(x) elements.
//
//	y: [n] (output; may be x), x: [n]
//
// Panics if y is shorter than x.
func SiLU(y, x []float32) {
	need("SiLU", "y", len(y), len(x))
	parallelFor(len(x), elemGrain/8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			y[i] = float32(v * sigmoid(v))
		}
	})
}

// siluGrad is d silu(x)/dx = σ(x)·(1 + x·(1−σ(x))).
func siluGrad(x float64) float64 {
	s := sigmoid(x)
	return s * (1 + x*(1-s))
}

// SiLUBackward is dx = dy · σ(x)·(1 + x·(1−σ(x))), elementwise over len(x) elements.
//
//	dx: [n] (output; may be dy or x), dy: [n], x: [n]
//
// Panics if dx or dy is shorter than x.
func SiLUBackward(dx, dy, x []float32) {
	need("SiLUBackward", "dx", len(dx), len(x))
	need("SiLUBackward", "dy", len(dy), len(x))
	parallelFor(len(x), elemGrain/8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dx[i] = float32(float64(dy[i]) * siluGrad(float64(x[i])))
		}
	})
}

// SwiGLU is the gated MLP activation y = silu(gate) ⊙ up, elementwise over len(gate) elements.
//
//	y: [n] (output; may be gate or up), gate: [n], up: [n]
//
// Panics if y or up is shorter than gate.
func SwiGLU(y, gate, up []float32) {
	need("SwiGLU", "y", len(y), len(gate))
	need("SwiGLU", "up", len(up), len(gate))
	parallelFor(len(gate), elemGrain/8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := float64(gate[i])
			y[i] = float32(g * sigmoid(g) * float64(up[i]))
		}
	})
}

// SwiGLUBackward computes dgate = dy ⊙ up ⊙ silu'(gate) and dup = dy ⊙ silu(gate).
//
//	dgate: [n] (output), dup: [n] (output), dy: [n], gate: [n], up: [n]
//
// Each output may be one of dy, gate or up (every element is read before it is written), but not
// the other output. Panics if a slice is shorter than gate.
func SwiGLUBackward(dgate, dup, dy, gate, up []float32) {
	n := len(gate)
	need("SwiGLUBackward", "dgate", len(dgate), n)
	need("SwiGLUBackward", "dup", len(dup), n)
	need("SwiGLUBackward", "dy", len(dy), n)
	need("SwiGLUBackward", "up", len(up), n)
	parallelFor(n, elemGrain/8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g, d := float64(gate[i]), float64(dy[i])
			s := sigmoid(g)
			dgate[i] = float32(d * float64(up[i]) * s * (1 + g*(1-s)))
			dup[i] = float32(d * g * s)
		}
	})
}

// Softmax is the row softmax y = exp(x − max) / Σ exp(x − max), the denominator in float64.
//
//	y: [rows, cols] (output; may be x), x: [rows, cols]
//
// Panics if a slice is shorter than its shape.
func Softmax(y, x []float32, rows, cols int) {
	need("Softmax", "y", len(y), rows*cols)
	need("Softmax", "x", len(x), rows*cols)
	if cols == 0 {
		return
	}
	parallelFor(rows, grain(8*cols), func(lo, hi int) {
		e := make([]float64, cols)
		for r := lo; r < hi; r++ {
			xr, yr := x[r*cols:(r+1)*cols], y[r*cols:(r+1)*cols]
			m := math.Inf(-1)
			for _, v := range xr {
				m = max(m, float64(v))
			}
			var sum float64
			for i, v := range xr {
				e[i] = math.Exp(float64(v) - m)
				sum += e[i]
			}
			for i := range yr {
				yr[i] = float32(e[i] / sum)
			}
		}
	})
}

// SoftmaxBackward computes dx = y ⊙ (dy − Σ_row dy ⊙ y) from the softmax output y.
//
//	dx: [rows, cols] (output; may be dy), dy: [rows, cols], y: [rows, cols]
//
// Panics if a slice is shorter than its shape.
func SoftmaxBackward(dx, dy, y []float32, rows, cols int) {
	n := rows * cols
	need("SoftmaxBackward", "dx", len(dx), n)
	need("SoftmaxBackward", "dy", len(dy), n)
	need("SoftmaxBackward", "y", len(y), n)
	parallelFor(rows, grain(3*cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dyr, yr, dxr := dy[r*cols:(r+1)*cols], y[r*cols:(r+1)*cols], dx[r*cols:(r+1)*cols]
			dot := dot64(dyr, yr)
			for i, v := range yr {
				dxr[i] = float32(float64(v) * (float64(dyr[i]) - dot))
			}
		}
	})
}
