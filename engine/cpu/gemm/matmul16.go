package gemm

import (
	"math"

	"github.com/x448/float16"
)

// smallM16 is the most rows of x that MatMul16 runs as GEMVs (each row of W widened once into a
// per-worker buffer, then dotted with every row of x) rather than as the blocked GEMM with W widened
// into its packed panels.
const smallM16 = 4

// MatMul16 computes y = x·Wᵀ (transW=false: x is m×k, W is n×k, y is m×n) or y = x·W (transW=true:
// x is m×n, W is n×k, y is m×k) for a W stored in 16 bits, row-major: IEEE halves, or bfloat16s
// with bf. Products accumulate in float32 exactly as Sgemm's do on the widened W: the weight is
// widened a tile at a time (into a worker's row buffer on the GEMV paths, into the packed panels of
// the blocked GEMM), so a float32 copy of all of W never exists. y = beta·y + result; beta == 0
// means y is not read. Slices too short for the shapes make it panic: callers check shapes.
func MatMul16(transW bool, m, n, k int, x []float32, w []uint16, bf bool, beta float32, y []float32) {
	out, red := n, k // output columns, reduction length
	if transW {
		out, red = k, n
	}
	if m <= 0 || out <= 0 {
		return
	}
	if red <= 0 {
		scaleC(m, out, beta, y, out)
		return
	}
	w = w[:n*k]
	switch {
	case m <= smallM16 && !transW:
		gemv16(m, n, k, x[:m*k], w, bf, beta, y[:m*n])
	case m == 1:
		gemv16T(n, k, x[:n], w, bf, beta, y[:k])
	default:
		var pb bPacker
		if transW {
			pb = packRows16(w, k, bf)
		} else {
			pb = packCols16(w, k, bf)
		}
		blocked(m, out, red, 1, aOperand{x, red, false}, pb, beta, y, out, false)
	}
}

// Widen sets dst[i] to the 16-bit float src[i] (bfloat16 with bf, else IEEE half), exactly.
func Widen(dst []float32, src []uint16, bf bool) {
	src = src[:len(dst)]
	i := 0
	if n8 := len(dst) / 8; n8 > 0 && useF16C {
		if bf {
			widenBF16x8(n8, &src[0], &dst[0])
		} else {
			widenF16x8(n8, &src[0], &dst[0])
		}
		i = 8 * n8
	}
	if bf {
		for ; i < len(dst); i++ {
			dst[i] = math.Float32frombits(uint32(src[i]) << 16)
		}
		return
	}
	for ; i < len(dst); i++ {
		dst[i] = float16.Frombits(src[i]).Float32()
	}
}

// packCols16 is the bPacker for op(B) = Wᵀ (k×n): a strip is nr rows of W, kcur elements of each,
// widened into a row-major tile and transposed into the strip.
func packCols16(w []uint16, k int, bf bool) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		tb := getBuf(nr * kcur)
		tile := *tb
		for s := 0; s*nr < cols; s++ {
			rows := min(nr, cols-s*nr)
			for j := 0; j < rows; j++ {
				r := (j0 + s*nr + j) * k
				Widen(tile[j*kcur:(j+1)*kcur], w[r+p0:r+p0+kcur], bf)
			}
			packT(tile, kcur, kcur, rows, dst[s*stripStride(kcur):])
		}
		putBuf(tb)
	}
}

// packRows16 is the bPacker for op(B) = W (n×k): each of the kcur rows of W is contiguous along the
// panel, so each strip's nr elements are widened straight into place.
func packRows16(w []uint16, k int, bf bool) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		full := cols / nr
		for p := 0; p < kcur; p++ {
			row := w[(p0+p)*k+j0 : (p0+p)*k+j0+cols]
			for s := 0; s < full; s++ {
				Widen(dst[s*stripStride(kcur)+p*nr:][:nr], row[s*nr:(s+1)*nr], bf)
			}
			if full*nr < cols { // the last, partial strip
				d := dst[full*stripStride(kcur)+p*nr:][:nr]
				Widen(d[:cols-full*nr], row[full*nr:], bf)
				clear(d[cols-full*nr:])
			}
		}
	}
}

// gemv16 is y = x·Wᵀ for a few rows of x: each row of W is widened once into the worker's buffer
// and dotted with every row of x, so W is read once whatever m. Parallel over rows of W. With
// AVX-512 the widening happens in registers inside the dot product instead (dot16), the row (a few
// KiB, in L1 after the first row of x) read once a row of x.
func gemv16(m, n, k int, x []float32, w []uint16, bf bool, beta float32, y []float32) {
	wk := workers(2 * m * n * k)
	chunk := max(32, n/(4*wk)) // long runs of rows: each core streams W, and the prefetchers follow
	parallel((n+chunk-1)/chunk, wk, func(t int) {
		if useAVX512 && k >= 64 {
			for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
				for i := 0; i < m; i++ {
					v := dot16(x[i*k:(i+1)*k], w[j*k:(j+1)*k], bf)
					if beta != 0 {
						v += beta * y[i*n+j]
					}
					y[i*n+j] = v
				}
			}
			return
		}
		rb := getBuf(k)
		row := *rb
		for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
			Widen(row, w[j*k:(j+1)*k], bf)
			for i := 0; i < m; i++ {
				v := dot(x[i*k:(i+1)*k], row)
				if beta != 0 {
					v += beta * y[i*n+j]
				}
				y[i*n+j] = v
			}
		}
		putBuf(rb)
	})
}

// gemv16T is y = x·W for one row of x (the backward pass of decode): y = Σ_j x[j]·W[j,:]. Each task
// takes a range of rows of W, widens them in order into its own partial sums, added up at the end.
func gemv16T(n, k int, x []float32, w []uint16, bf bool, beta float32, y []float32) {
	wk := workers(2 * n * k)
	parts := min(wk, n)
	accb := getBuf(parts * k)
	acc := *accb
	clear(acc)
	parallel(parts, wk, func(t int) {
		mine := acc[t*k : (t+1)*k]
		rb := getBuf(k)
		row := *rb
		for j := t * n / parts; j < (t+1)*n/parts; j++ {
			Widen(row, w[j*k:(j+1)*k], bf)
			axpy(x[j], row, mine)
		}
		putBuf(rb)
	})
	for c := range y {
		v := acc[c]
		for t := 1; t < parts; t++ {
			v += acc[t*k+c]
		}
		if beta != 0 {
			v += beta * y[c]
		}
		y[c] = v
	}
	putBuf(accb)
}

// dot16 is Σ x[i]·w[i] over 16-bit weights (len(x) ≥ 64) on the AVX-512 path: whole groups of 64
// in assembly, the tail widened in Go.
func dot16(x []float32, w []uint16, bf bool) float32 {
	k := len(x)
	w = w[:k]
	m := k &^ 63
	var v float32
	if bf {
		v = dotBF16AVX512(m, &x[0], &w[0])
	} else {
		v = dotF16AVX512(m, &x[0], &w[0])
	}
	for i := m; i < k; i++ {
		if bf {
			v += x[i] * math.Float32frombits(uint32(w[i])<<16)
		} else {
			v += x[i] * float16.Frombits(w[i]).Float32()
		}
	}
	return v
}
