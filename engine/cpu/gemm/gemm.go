// Package gemm holds the CPU backend's matrix kernels: a cache-blocked, packed, parallel SGEMM with
// an AVX2/FMA micro-kernel (and a portable Go one), and 4-bit blockwise dequant-matmuls (GEMV and
// GEMM) for the bitsandbytes NF4/FP4 layout.
//
// The blocking follows the BLIS/GotoBLAS scheme: B is packed a kc×nc panel at a time into strips of
// nr columns, A an mc×kc block at a time into strips of mr rows, and a micro-kernel multiplies one
// A strip by one B strip into an mr×nr tile held in registers. Transposes are absorbed by packing.
package gemm

import (
	"runtime"
	"sync"
)

const (
	mr = 6  // micro-tile rows: 6×16 floats = 12 YMM accumulators, leaving 4 for operands
	nr = 16 // micro-tile columns: two 8-float YMM registers
	kc = 256
	mc = 96   // an mc×kc A block (96 KiB) stays in L2
	nc = 3072 // a kc×nc B panel (3 MiB) stays in L3
)

// Sgemm computes C = alpha*op(A)*op(B) + beta*C, row-major; op(X) = X or Xᵀ.
// op(A) is m×k, op(B) is k×n, C is m×n; lda/ldb/ldc are row strides. beta==0 means C is not read
// (it may hold NaN). Slices too short for the shapes make it panic: callers check shapes.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if m == 1 {
		gemv(transA, transB, n, k, alpha, a, lda, b, ldb, beta, c)
		return
	}
	blocked(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		for j := range row {
			if beta == 0 {
				row[j] = 0
			} else {
				row[j] *= beta
			}
		}
	}
}

// workers is how many goroutines a problem of the given flop count gets: none below ~1 MFLOP,
// where spawning costs more than it saves.
func workers(flops int) int {
	w := runtime.GOMAXPROCS(0)
	if lim := flops / (1 << 20); lim < w {
		w = max(lim, 1)
	}
	return w
}

// parallel runs f(i) for i in [0, n) on up to w goroutines.
func parallel(n, w int, f func(i int)) {
	if w <= 1 || n <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for g := 0; g < min(w, n); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

var bufPool = sync.Pool{New: func() any { return new([]float32) }}

func getBuf(n int) *[]float32 {
	p := bufPool.Get().(*[]float32)
	if cap(*p) < n {
		*p = make([]float32, n)
	}
	*p = (*p)[:n]
	return p
}

// blocked is the packed GEMM for m > 1.
func blocked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	w := workers(2 * m * n * k)
	for jc := 0; jc < n; jc += nc {
		ncur := min(nc, n-jc)
		nstrips := (ncur + nr - 1) / nr
		for pc := 0; pc < k; pc += kc {
			kcur := min(kc, k-pc)
			bp := getBuf(nstrips * nr * kcur)
			// Pack the B panel in parallel, one strip a task.
			parallel(nstrips, min(w, nstrips/8+1), func(s int) {
				packB(transB, b, ldb, pc, jc+s*nr, kcur, min(nr, ncur-s*nr), (*bp)[s*nr*kcur:(s+1)*nr*kcur])
			})
			first := pc == 0
			mblocks := (m + mc - 1) / mc
			// Split the columns too when there are fewer row blocks than workers.
			nsplit := 1
			if mblocks < w {
				nsplit = min((w+mblocks-1)/mblocks, nstrips)
			}
			parallel(mblocks*nsplit, w, func(t int) {
				ib, js := t/nsplit, t%nsplit
				ic := ib * mc
				mcur := min(mc, m-ic)
				s0, s1 := js*nstrips/nsplit, (js+1)*nstrips/nsplit
				if s0 == s1 {
					return
				}
				mstrips := (mcur + mr - 1) / mr
				ap := getBuf(mstrips * mr * kcur)
				for s := 0; s < mstrips; s++ {
					packA(transA, a, lda, ic+s*mr, pc, min(mr, mcur-s*mr), kcur, (*ap)[s*mr*kcur:(s+1)*mr*kcur])
				}
				var tile [mr * nr]float32
				for js := s0; js < s1; js++ {
					j := jc + js*nr
					ncols := min(nr, n-j)
					bs := (*bp)[js*nr*kcur : (js+1)*nr*kcur]
					for s := 0; s < mstrips; s++ {
						i := ic + s*mr
						nrows := min(mr, m-i)
						kernel(kcur, (*ap)[s*mr*kcur:], bs, &tile)
						store(&tile, nrows, ncols, alpha, beta, first, c[i*ldc+j:], ldc)
					}
				}
				bufPool.Put(ap)
			})
			bufPool.Put(bp)
		}
	}
}

// packA copies rows i0..i0+rows of op(A), columns p0..p0+kcur, into dst as kcur groups of mr
// floats (row-interleaved), zero-padding missing rows.
func packA(trans bool, a []float32, lda, i0, p0, rows, kcur int, dst []float32) {
	if trans { // op(A)[i][p] = a[p*lda+i]: rows of a are contiguous in i
		for p := 0; p < kcur; p++ {
			src := a[(p0+p)*lda+i0:]
			d := dst[p*mr : p*mr+mr]
			for r := 0; r < mr; r++ {
				if r < rows {
					d[r] = src[r]
				} else {
					d[r] = 0
				}
			}
		}
		return
	}
	for r := 0; r < mr; r++ {
		if r >= rows {
			for p := 0; p < kcur; p++ {
				dst[p*mr+r] = 0
			}
			continue
		}
		src := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kcur]
		for p, v := range src {
			dst[p*mr+r] = v
		}
	}
}

// packB copies rows p0..p0+kcur of op(B), columns j0..j0+cols, into dst as kcur groups of nr
// floats, zero-padding missing columns.
func packB(trans bool, b []float32, ldb, p0, j0, kcur, cols int, dst []float32) {
	if !trans { // op(B)[p][j] = b[p*ldb+j]: contiguous in j
		for p := 0; p < kcur; p++ {
			src := b[(p0+p)*ldb+j0:]
			d := dst[p*nr : p*nr+nr]
			if cols == nr {
				copy(d, src[:nr])
				continue
			}
			for j := 0; j < nr; j++ {
				if j < cols {
					d[j] = src[j]
				} else {
					d[j] = 0
				}
			}
		}
		return
	}
	for j := 0; j < nr; j++ {
		if j >= cols {
			for p := 0; p < kcur; p++ {
				dst[p*nr+j] = 0
			}
			continue
		}
		src := b[(j0+j)*ldb+p0 : (j0+j)*ldb+p0+kcur]
		for p, v := range src {
			dst[p*nr+j] = v
		}
	}
}

// store writes the valid part of a tile into C: C = alpha·tile + beta·C on the first k-block,
// C += alpha·tile on the later ones.
func store(tile *[mr * nr]float32, rows, cols int, alpha, beta float32, first bool, c []float32, ldc int) {
	for r := 0; r < rows; r++ {
		row := c[r*ldc : r*ldc+cols]
		t := tile[r*nr : r*nr+cols]
		switch {
		case !first:
			for j, v := range t {
				row[j] += alpha * v
			}
		case beta == 0:
			for j, v := range t {
				row[j] = alpha * v
			}
		default:
			for j, v := range t {
				row[j] = alpha*v + beta*row[j]
			}
		}
	}
}

// kernelGo is the portable micro-kernel: tile = Σ_p a[p·mr:+mr] ⊗ b[p·nr:+nr].
func kernelGo(k int, a, b []float32, tile *[mr * nr]float32) {
	var acc [mr * nr]float32
	for p := 0; p < k; p++ {
		av := a[p*mr : p*mr+mr]
		bv := b[p*nr : p*nr+nr]
		for r := 0; r < mr; r++ {
			x := av[r]
			row := acc[r*nr : r*nr+nr]
			for j := range row {
				row[j] += x * bv[j]
			}
		}
	}
	*tile = acc
}

// gemv is Sgemm for m == 1: y = alpha·op(x)·op(B) + beta·y.
func gemv(transA, transB bool, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32) {
	x := a[:k]
	if transA { // op(A) is 1×k from a column of a k×1 matrix
		buf := make([]float32, k)
		for p := range buf {
			buf[p] = a[p*lda]
		}
		x = buf
	}
	y := c[:n]
	const chunk = 64
	chunks := (n + chunk - 1) / chunk
	w := workers(2 * n * k)
	if transB { // y[j] = x · B[j,:]
		parallel(chunks, w, func(t int) {
			for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
				v := alpha * dot(x, b[j*ldb:j*ldb+k])
				if beta != 0 {
					v += beta * y[j]
				}
				y[j] = v
			}
		})
		return
	}
	// y = Σ_p x[p]·B[p,:], each worker owning a range of columns.
	parallel(chunks, w, func(t int) {
		j0, j1 := t*chunk, min(n, (t+1)*chunk)
		var acc [chunk]float32
		seg := acc[:j1-j0]
		for p := 0; p < k; p++ {
			axpy(x[p], b[p*ldb+j0:p*ldb+j1], seg)
		}
		for j, v := range seg {
			if beta != 0 {
				v = alpha*v + beta*y[j0+j]
			} else {
				v *= alpha
			}
			y[j0+j] = v
		}
	})
}

func dotGo(x, y []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyGo(alpha float32, x, y []float32) {
	for i, v := range x {
		y[i] += alpha * v
	}
}
