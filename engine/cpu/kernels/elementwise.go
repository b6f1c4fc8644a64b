package kernels

import "math"

// ReduceChunk is the fixed number of elements summed into one float64 partial by Sum, SumSquares
// and HasNonFinite; partials are combined in chunk order, so results do not depend on how many
// goroutines ran.
const ReduceChunk = 1 << 14

// ScaleCols is IA3's scaling: y = x ⊙ l, the learned vector l broadcast over the rows.
//
//	y: [rows, dim] (output; may be x), x: [rows, dim], l: [dim]
//
// Panics if a slice is shorter than its shape.
func ScaleCols(y, x, l []float32, rows, dim int) {
	need("ScaleCols", "y", len(y), rows*dim)
	need("ScaleCols", "x", len(x), rows*dim)
	need("ScaleCols", "l", len(l), dim)
	parallelFor(rows, grain(dim)*4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*dim:(r+1)*dim], y[r*dim:(r+1)*dim]
			for c, v := range xr {
				yr[c] = v * l[c]
			}
		}
	})
}

// DivSqrt is DoRA's magnitude scaling: y[r, c] = x[r, c] / sqrt(n[c]), in float64 rounded once
// (over several rows, as x times the reciprocal square root).
func DivSqrt(y, x, n []float32, rows, dim int) {
	need("DivSqrt", "y", len(y), rows*dim)
	need("DivSqrt", "x", len(x), rows*dim)
	need("DivSqrt", "n", len(n), dim)
	if rows == 1 { // a vector (DoRA's magnitudes): no reciprocals to share
		for c, v := range x[:dim] {
			y[c] = float32(float64(v) / math.Sqrt(float64(n[c])))
		}
		return
	}
	inv := make([]float64, dim) // 1/sqrt(n), shared by the rows
	for c, v := range n[:dim] {
		inv[c] = 1 / math.Sqrt(float64(v))
	}
	parallelFor(rows, grain(dim)*4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*dim:(r+1)*dim], y[r*dim:(r+1)*dim]
			for c, v := range xr {
				yr[c] = float32(float64(v) * inv[c])
			}
		}
	})
}

// ScaleColsBackward computes the gradients of ScaleCols: dx = dy ⊙ l and dl = Σ_rows dy ⊙ x (the
// column sums in float64, in row order).
//
//	dx: [rows, dim] (output, or nil when not needed; may be dy or x), dl: [dim] (output, or nil
//	when not needed; overwritten, not accumulated), dy: [rows, dim], x: [rows, dim], l: [dim]
//
// Panics if a slice is shorter than its shape.
func ScaleColsBackward(dx, dl, dy, x, l []float32, rows, dim int) {
	need("ScaleColsBackward", "dy", len(dy), rows*dim)
	if dl != nil { // before dx, so that dx may be dy or x itself
		need("ScaleColsBackward", "dl", len(dl), dim)
		need("ScaleColsBackward", "x", len(x), rows*dim)
		colSums(dl, rows, dim, func(r, lo, hi int, acc []float64) {
			xr, dyr := x[r*dim+lo:r*dim+hi], dy[r*dim+lo:r*dim+hi]
			for c, v := range xr {
				acc[c] += float64(dyr[c]) * float64(v)
			}
		})
	}
	if dx != nil {
		need("ScaleColsBackward", "l", len(l), dim)
		ScaleCols(dx, dy, l, rows, dim)
	}
}

// Add is y = a + b elementwise over len(a) elements.
//
//	y: [n] (output; may be a or b), a: [n], b: [n]
//
// Panics if y or b is shorter than a.
func Add(y, a, b []float32) {
	need("Add", "y", len(y), len(a))
	need("Add", "b", len(b), len(a))
	parallelFor(len(a), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] = a[i] + b[i]
		}
	})
}

// Mul is y = a ⊙ b elementwise over len(a) elements.
//
//	y: [n] (output; may be a or b), a: [n], b: [n]
//
// Panics if y or b is shorter than a.
func Mul(y, a, b []float32) {
	need("Mul", "y", len(y), len(a))
	need("Mul", "b", len(b), len(a))
	parallelFor(len(a), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] = a[i] * b[i]
		}
	})
}

// Scale is y = s·x elementwise over len(x) elements.
//
//	y: [n] (output; may be x), x: [n]
//
// Panics if y is shorter than x.
func Scale(y, x []float32, s float32) {
	need("Scale", "y", len(y), len(x))
	parallelFor(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] = s * x[i]
		}
	})
}

// AddScaled accumulates y += s·x elementwise over len(x) elements (gradient accumulation).
//
//	y: [n] (updated in place), x: [n]
//
// Panics if y is shorter than x.
func AddScaled(y, x []float32, s float32) {
	need("AddScaled", "y", len(y), len(x))
	parallelFor(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] += s * x[i]
		}
	})
}

// AddBias adds a bias broadcast over the rows, in place: y[r, c] += b[c].
//
//	y: [rows, dim] (updated in place), b: [dim]
//
// Its backward for b is SumRows. Panics if a slice is shorter than its shape.
func AddBias(y, b []float32, rows, dim int) {
	need("AddBias", "y", len(y), rows*dim)
	need("AddBias", "b", len(b), dim)
	parallelFor(rows, grain(dim)*4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			yr := y[r*dim : (r+1)*dim]
			for c, v := range b[:dim] {
				yr[c] += v
			}
		}
	})
}

// SumRows sums over the rows: db[c] = Σ_r dy[r, c], in float64 in row order (AddBias's backward).
//
//	db: [dim] (output), dy: [rows, dim]
//
// Panics if a slice is shorter than its shape.
func SumRows(db, dy []float32, rows, dim int) {
	need("SumRows", "db", len(db), dim)
	need("SumRows", "dy", len(dy), rows*dim)
	colSums(db, rows, dim, func(r, lo, hi int, acc []float64) {
		for c, v := range dy[r*dim+lo : r*dim+hi] {
			acc[c] += float64(v)
		}
	})
}

// chunked sums f over fixed chunks of x in parallel and combines the partials in chunk order.
func chunked(x []float32, f func(x []float32) float64) float64 {
	parts := make([]float64, (len(x)+ReduceChunk-1)/ReduceChunk)
	parallelFor(len(parts), 2, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			parts[c] = f(x[c*ReduceChunk : min((c+1)*ReduceChunk, len(x))])
		}
	})
	var s float64
	for _, p := range parts {
		s += p
	}
	return s
}

// Sum returns Σ x in float64.
//
//	x: [n]
func Sum(x []float32) float64 {
	return chunked(x, func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v)
		}
		return s
	})
}

// SumSquares returns Σ x² in float64, the building block of gradient-norm clipping. A non-finite
// element makes the result non-finite.
//
//	x: [n]
func SumSquares(x []float32) float64 {
	return chunked(x, func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		return s
	})
}

// HasNonFinite reports whether x holds a NaN or an infinity (to skip a step after overflow).
//
//	x: [n]
func HasNonFinite(x []float32) bool {
	bad := chunked(x, func(x []float32) float64 {
		for _, v := range x {
			if v-v != 0 { // NaN − NaN and ±Inf − ±Inf are NaN; any finite v − v is 0
				return 1
			}
		}
		return 0
	})
	return bad != 0
}
