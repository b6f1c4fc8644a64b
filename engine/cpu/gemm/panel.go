package gemm

// Panel is op(B), k×n, packed once into the micro-kernel's strips for many products against it:
// attention's keys and values, which every query tile of a head multiplies, were packed again by
// each tile's Sgemm (a transpose of the key block each time). Strip s holds columns
// s·NR..s·NR+NR−1 over the whole depth, k groups of NR floats, the last strip zero-padded.
type Panel struct {
	k, n, stride int
	buf          *[]float32
}

// PackPanel packs op(B) of k×n: B itself (trans false, k rows of n, row stride ldb) or Bᵀ (trans
// true: B is n rows of k).
func PackPanel(trans bool, k, n int, b []float32, ldb int) Panel {
	p := Panel{k: k, n: n, stride: stripStride(k)}
	p.buf = getBuf((n + nr - 1) / nr * p.stride)
	packB(trans, b, ldb, 0, 0, k, n, *p.buf)
	return p
}

// Release returns the panel's memory; the panel must not be used afterwards.
func (p Panel) Release() { putBuf(p.buf) }

// MulPanel sets C = alpha·A·P[p0:p0+kd, j0:j0+cols] + beta·C on the calling goroutine: A is m×kd
// (row stride lda), C m×cols (row stride ldc), j0 a multiple of NR (beta == 0: C is not read).
func MulPanel(m int, alpha float32, a []float32, lda int, p Panel, p0, kd, j0, cols int, beta float32, c []float32, ldc int) {
	if m <= 0 || cols <= 0 {
		return
	}
	if j0%nr != 0 || p0 < 0 || p0+kd > p.k || j0+cols > p.n {
		panic("gemm: MulPanel outside its panel")
	}
	if kd <= 0 {
		scaleC(m, cols, beta, c, ldc)
		return
	}
	ab := getBuf(mr * min(kd, kc))
	defer putBuf(ab)
	data := *p.buf
	nstrips := (cols + nr - 1) / nr
	for pc := 0; pc < kd; pc += kc {
		kcur := min(kc, kd-pc)
		bet := beta
		if pc > 0 {
			bet = 1
		}
		for i := 0; i < m; i += mr {
			rows := min(mr, m-i)
			// The AVX-512 kernels read whole strips of A in place (see blocked).
			var as aStrip
			if useAVX512 && rows == mr {
				as = inPlace(a[i*lda+pc:], lda)
			} else {
				packA(false, a, lda, i, pc, rows, kcur, (*ab)[:mr*kcur])
				as = packed((*ab)[:mr*kcur])
			}
			js := 0
			if useAVX512 {
				for ; js+4 <= nstrips && (js+4)*nr <= cols; js += 4 {
					b := data[(j0/nr+js)*p.stride+(p0+pc)*nr:]
					if rows < mr {
						micro4Rows(kcur, as, b, p.stride, rows, alpha, bet, c[i*ldc+js*nr:], ldc)
						continue
					}
					micro4(kcur, as, b, p.stride, alpha, bet, c[i*ldc+js*nr:], ldc, false)
				}
			}
			for ; js < nstrips; js++ {
				b := data[(j0/nr+js)*p.stride+(p0+pc)*nr:]
				micro(kcur, as, b, rows, min(nr, cols-js*nr), alpha, bet, c[i*ldc+js*nr:], ldc)
			}
		}
	}
}
