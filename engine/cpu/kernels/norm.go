package kernels

import "math"

// RMSNorm is Hugging Face's LlamaRMSNorm: y = x / sqrt(mean(x²) + eps) ⊙ w, row by row.
//
//	y: [rows, dim] (output; may be x), x: [rows, dim], w: [dim]
//
// The mean of squares and the product are taken in float64 and rounded once. Panics if a slice
// is shorter than its shape.
func RMSNorm(y, x, w []float32, rows, dim int, eps float32) {
	n := rows * dim
	need("RMSNorm", "y", len(y), n)
	need("RMSNorm", "x", len(x), n)
	need("RMSNorm", "w", len(w), dim)
	if n == 0 {
		return
	}
	parallelFor(rows, grain(2*dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*dim:(r+1)*dim], y[r*dim:(r+1)*dim]
			rstd := rmsInv(xr, eps)
			for i, v := range xr {
				yr[i] = float32(float64(v) * rstd * float64(w[i]))
			}
		}
	})
}

// rmsInv returns 1/sqrt(mean(x²)+eps) in float64.
func rmsInv(x []float32, eps float32) float64 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	return 1 / math.Sqrt(ss/float64(len(x))+float64(eps))
}

// RMSNormBackward computes the gradients of RMSNorm. With r = 1/sqrt(mean(x²)+eps):
//
//	dx[i] = r·w[i]·dy[i] − r³/dim · x[i] · Σ_j dy[j]·w[j]·x[j]
//	dw[i] = Σ_rows dy[i]·x[i]·r
//
//	dx: [rows, dim] (output; may be dy or x), dw: [dim] (output, or nil when w is frozen;
//	overwritten, not accumulated), dy: [rows, dim], x: [rows, dim], w: [dim]
//
// Panics if a slice is shorter than its shape.
func RMSNormBackward(dx, dw, dy, x, w []float32, rows, dim int, eps float32) {
	n := rows * dim
	need("RMSNormBackward", "dx", len(dx), n)
	need("RMSNormBackward", "dy", len(dy), n)
	need("RMSNormBackward", "x", len(x), n)
	need("RMSNormBackward", "w", len(w), dim)
	if dw != nil {
		need("RMSNormBackward", "dw", len(dw), dim)
	}
	if dim == 0 {
		return
	}
	if rows == 0 {
		if dw != nil {
			clear(dw[:dim])
		}
		return
	}
	// rstd first, then dw, then dx: dx is written last so it may be dy or x itself.
	rstd := make([]float64, rows)
	parallelFor(rows, grain(dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			rstd[r] = rmsInv(x[r*dim:(r+1)*dim], eps)
		}
	})
	if dw != nil {
		colSums(dw, rows, dim, func(r, lo, hi int, acc []float64) {
			xr, dyr, rs := x[r*dim+lo:r*dim+hi], dy[r*dim+lo:r*dim+hi], rstd[r]
			for c, v := range xr {
				acc[c] += float64(dyr[c]) * float64(v) * rs
			}
		})
	}
	parallelFor(rows, grain(3*dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, dyr, dxr := x[r*dim:(r+1)*dim], dy[r*dim:(r+1)*dim], dx[r*dim:(r+1)*dim]
			rs := rstd[r]
			var dot float64 // Σ dy·w·x
			for i, v := range xr {
				dot += float64(dyr[i]) * float64(w[i]) * float64(v)
			}
			c := rs * rs * rs * dot / float64(dim)
			for i, v := range xr {
				dxr[i] = float32(rs*float64(w[i])*float64(dyr[i]) - c*float64(v))
			}
		}
	})
}
