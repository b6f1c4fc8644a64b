package gemm

import (
	"unsafe"

	"github.com/lathe-ml/lathe/internal/half"
)

// HasBF16 reports whether MatMul4BF16 runs in bfloat16 on this CPU now: it has AVX512_BF16 (with
// AVX-512BW) and the kernels are not limited below AVX-512 (SetISA).
func HasBF16() bool { return hasBF16 && useAVX512 }

// MatMul4BF16 is MatMul4 (y = β·y + x·Wᵀ, or with transW y = β·y + x·W, the backward pass's
// dx) computed in bfloat16, as bitsandbytes computes with bnb_4bit_compute_dtype=bfloat16, where
// this CPU has VDPBF16PS (HasBF16):
//   - up to 16 rows of x (a decoding step's GEMV, batched or not; not transW), k a multiple of 128
//     and a blocksize of 64 or a multiple of 128: x and the codebook rounded to bfloat16, their
//     products summed in float32, each block's sum scaled by its absmax in float32;
//   - more than 16 rows (prefill, training): x and the dequantized weight code·absmax rounded to
//     bfloat16, products summed in float32, through the packed GEMM with VDPBF16PS tiles (twice
//     the products an instruction of the float32 FMA).
//
// Every other call, and every call elsewhere, is MatMul4, exact in float32: bfloat16 is an
// allowance, as PyTorch's "medium" float32 matmul precision is. Rounding to bfloat16 is to
// nearest, ties to even; the kernels flush denormal inputs to zero.
func MatMul4BF16(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	q := &quant4{packed: packed, absmax: absmax, bs: blocksize, code: code}
	switch {
	case !HasBF16() || n <= 0 || k <= 0:
	case m == 1 && !transW && k%128 == 0 && (blocksize == 64 || blocksize%128 == 0):
		gemv4bf16(q, n, k, x[:k], beta, y[:n])
		return
	case m <= smallM4 && !transW && k%128 == 0 && (blocksize == 64 || blocksize%128 == 0):
		gemv4bf16Rows(q, m, n, k, x[:m*k], beta, y[:m*n])
		return
	case m > smallM4 && !transW:
		gemm4bf16(q, m, n, k, x[:m*k], beta, y[:m*n])
		return
	case m > smallM4:
		gemm4bf16T(q, m, n, k, x[:m*n], beta, y[:m*k])
		return
	}
	MatMul4(transW, m, n, k, x, packed, absmax, blocksize, code, beta, y)
}

// pairsBF16 rounds src to bfloat16 into dst's halves, in order: dst[j] holds src[2j] in its low
// half and src[2j+1] in its high half (0 past the end of src), the layout VDPBF16PS multiplies
// pairwise. len(dst) is ⌈len(src)/2⌉.
func pairsBF16(dst, src []float32) {
	w := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[0])), 2*len(dst))
	i := 0
	if n := len(src) / 32; n > 0 {
		toBF16AVX512(n, &src[0], &w[0])
		i = 32 * n
	}
	for ; i < len(src); i++ {
		w[i] = half.BF16(src[i])
	}
	if len(src)%2 == 1 {
		w[len(src)] = 0
	}
}

// gemm4bf16 is MatMul4BF16's GEMM: x and W as bfloat16 pairs (a float slot holds two depths)
// through the packed driver, whose packers only move slots, with the VDPBF16PS tiles.
func gemm4bf16(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	blockedPairs(m, k, n, x, q.packColsBF16(k), beta, y)
}

// blockedPairs is the bfloat16 packed GEMM y = β·y + x·op(B), x: m×in, y: m×out, with x rounded
// into pairs of depths and op(B) packed by pb in pairs too.
func blockedPairs(m, in, out int, x []float32, pb bPacker, beta float32, y []float32) {
	in2 := (in + 1) / 2
	xb := getBuf(m * in2)
	defer putBuf(xb)
	xp := (*xb)[:m*in2]
	for i := 0; i < m; i++ {
		pairsBF16(xp[i*in2:(i+1)*in2], x[i*in:(i+1)*in])
	}
	blocked(m, out, in2, 1, aOperand{xp, in2, false}, pb, beta, y, out, true)
}

// gemm4bf16T is MatMul4BF16's transposed GEMM, y = x·W (x: m×n, y: m×k): the depth is W's rows,
// paired two at a time (packRowsBF16).
func gemm4bf16T(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	blockedPairs(m, n, k, x, q.packRowsBF16(n, k), beta, y)
}

// gemm16bf16T is MatMul16BF16's transposed GEMM, y = x·W (x: m×n, y: m×k): the depth is W's
// rows, paired two at a time (packRows16BF16).
func gemm16bf16T(m, n, k int, x []float32, w []uint16, beta float32, y []float32) {
	blockedPairs(m, n, k, x, packRows16BF16(w, n, k), beta, y)
}

// packRows16BF16 is packRowsBF16 for a bfloat16 W, its rows widened (exactly) along the panel.
func packRows16BF16(w []uint16, n, k int) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		packRowPairs(n, p0, kcur, cols, dst, func(row int, r []float32) {
			Widen(r, w[row*k+j0:], true)
		})
	}
}

// packRowsBF16 is packRows in bfloat16 pairs: depth pair p is W's rows 2p and 2p+1 (the second
// zero past W's n rows), dequantized in float32 along the panel and interleaved (packRowPairs).
func (q *quant4) packRowsBF16(n, k int) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		for r := 2 * p0; r < 2*p0+min(rowsAhead, 2*kcur); r++ {
			q.prefetch(r*k+j0, cols)
		}
		packRowPairs(n, p0, kcur, cols, dst, func(row int, r []float32) {
			q.prefetch((row+rowsAhead)*k+j0, cols)
			q.span(row*k+j0, r)
		})
	}
}

// packRowPairs packs depth pairs p0..p0+kcur of a transposed bfloat16 panel, cols wide: pair p is
// W's rows 2p and 2p+1 (the second zero past W's n rows), each written in float32 by fill (row,
// its cols columns of the panel), then rounded and interleaved into a strip row of 16 pairs at a
// time (interleaveBF16AVX512).
func packRowPairs(n, p0, kcur, cols int, dst []float32, fill func(row int, r []float32)) {
	nstrips := (cols + nr - 1) / nr
	sb := getBuf(2 * nstrips * nr) // two rows padded to whole strips with zeros (pooled: fill would move arrays to the heap)
	defer putBuf(sb)
	a, b := (*sb)[:nstrips*nr], (*sb)[nstrips*nr:]
	for p := 0; p < kcur; p++ {
		row := 2 * (p0 + p)
		clear(a[cols:])
		fill(row, a[:cols])
		if row+1 < n {
			clear(b[cols:])
			fill(row+1, b[:cols])
		} else {
			clear(b)
		}
		interleaveBF16AVX512(nstrips, &a[0], &b[0], &dst[p*nr], stripStride(kcur))
	}
}

// packColsBF16 is packCols in bfloat16 pairs: p0 and kcur count pairs of depths. Each of a strip's
// rows of W is dequantized in float32 (code·absmax, as MatMul4), rounded into pairs, and the
// strip transposed from those slots.
func (q *quant4) packColsBF16(k int) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		e0 := 2 * p0
		cnt := min(2*kcur, k-e0) // elements of a row in this block: one short at an odd k's end
		tb := getBuf(cnt)
		pb := getBuf(nr * kcur)
		defer putBuf(pb)
		defer putBuf(tb)
		tile, pairs := (*tb)[:cnt], *pb
		q.packStrips(k, j0, cols, e0, cnt, kcur, true, dst, func(j, rows int, strip []float32) {
			for r := 0; r < rows; r++ {
				q.span((j+r)*k+e0, tile)
				pairsBF16(pairs[r*kcur:(r+1)*kcur], tile)
			}
			packT(pairs, kcur, kcur, rows, strip)
		})
	}
}

// bf16Block is the layout of x the bfloat16 GEMV kernel reads (see gemv4bf16AVX512): each
// 64-element block's odd elements, then its even ones, rounded to bfloat16.
func bf16Block(xb []uint16, x []float32) {
	for h := 0; h < len(x); h += 64 {
		for i := 0; i < 32; i++ {
			xb[h+i] = half.BF16(x[h+2*i+1])
			xb[h+32+i] = half.BF16(x[h+2*i])
		}
	}
}

// bf16Scratch is a recycled buffer (give it back with putBuf) seen as n bfloat16 words, n even.
func bf16Scratch(n int) (*[]float32, []uint16) {
	b := getBuf(n / 2)
	return b, unsafe.Slice((*uint16)(unsafe.Pointer(&(*b)[0])), n)
}

// gemv4bf16 is MatMul4BF16's GEMV (gemvRows with the bfloat16 kernel).
func gemv4bf16(q *quant4, n, k int, x []float32, beta float32, y []float32) {
	xbb, xb := bf16Scratch(k)
	defer putBuf(xbb)
	bf16Block(xb, x)
	table := bf16Codes(q.code)
	intoY(y, beta, func(out []float32) {
		q.gemvRows(n, k, func(j0, rows int, w *byte, scales *float32) {
			gemv4bf16AVX512(rows, k/128, &xb[0], w, scales, &table, &out[j0])
		})
	})
}

// bf16Codes is the codebook rounded to bfloat16, the table of the GEMV kernels' VPERMW.
func bf16Codes(code *[16]float32) (t [16]uint16) {
	for i, c := range code {
		t[i] = half.BF16(c)
	}
	return t
}

// gemv4bf16Rows is MatMul4BF16's GEMV for 2 to 16 rows of x (batched decoding): each stretch of 32
// rows of W is decoded once for four rows of x at a time (gemv4bf16x4AVX512), and read again from
// cache for the next four; a last pass runs on zero rows.
func gemv4bf16Rows(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	m4 := (m + 3) &^ 3
	xbb, xb := bf16Scratch(m4 * k)
	defer putBuf(xbb)
	clear(xb[m*k:])
	for i := 0; i < m; i++ {
		bf16Block(xb[i*k:(i+1)*k], x[i*k:(i+1)*k])
	}
	table := bf16Codes(q.code)
	q.gemvRows4(m4, n, k, beta, y, func(wrows, i0 int, w *byte, scales, out *float32) {
		gemv4bf16x4AVX512(wrows, k/128, &xb[i0*k], k, w, scales, &table, out, n)
	})
}

// gemvRows4 runs kernel, a GEMV of four rows of x from row i0 against wrows ≤ 32 rows of W (w their
// first byte, scales theirs) writing out[r·n + j], over the stretches of 32 rows of W that gemvRows
// hands out, for m4 rows of x four at a time (so each stretch, decoded once for four rows of x, is
// read again from cache for the next four); then y = result + β·y for y's rows.
func (q *quant4) gemvRows4(m4, n, k int, beta float32, y []float32, kernel func(wrows, i0 int, w *byte, scales, out *float32)) {
	ob := getBuf(m4 * n)
	defer putBuf(ob)
	o := (*ob)[:m4*n]
	scalesPerRow := k / 64
	q.gemvRows(n, k, func(j0, rows int, w *byte, scales *float32) {
		ws := unsafe.Slice(w, rows*k/2)
		ss := unsafe.Slice(scales, rows*scalesPerRow)
		for r0 := 0; r0 < rows; r0 += 32 {
			for i0 := 0; i0 < m4; i0 += 4 {
				kernel(min(32, rows-r0), i0, &ws[r0*k/2], &ss[r0*scalesPerRow], &o[i0*n+j0+r0])
			}
		}
	})
	addScaled(y, o, beta) // the first rows, as many as y holds
}

// MatMul16BF16 is MatMul16 (y = β·y + x·Wᵀ, or with transW y = β·y + x·W, the backward pass's
// dx) for a bfloat16 W computed without widening it: x rounded to bfloat16 and the products summed
// in float32 (VDPBF16PS), where HasBF16, for
//   - up to four rows of x, k even (decoding, batched or not): a GEMV streaming W once, each of its
//     rows dotted with every row of x;
//   - more than four rows, k even (prefill, training): the packed GEMM, W's rows already being
//     bfloat16 pairs, so packing only moves them;
//   - with transW, more than four rows: the packed GEMM with W's rows paired two at a time.
//
// Every other call is MatMul16, exact in float32 on the widened W.
func MatMul16BF16(transW bool, m, n, k int, x []float32, w []uint16, beta float32, y []float32) {
	switch {
	case !HasBF16() || n <= 0 || k <= 0:
	case !transW && k%2 == 0 && m <= smallM16:
		gemv16bf16(m, n, k, x[:m*k], w[:n*k], beta, y[:m*n])
		return
	case !transW && k%2 == 0:
		gemm16bf16(m, n, k, x[:m*k], w[:n*k], beta, y[:m*n])
		return
	case transW && m > smallM16:
		gemm16bf16T(m, n, k, x[:m*n], w[:n*k], beta, y[:m*k])
		return
	}
	MatMul16(transW, m, n, k, x, w, true, beta, y)
}

// gemv16bf16 is MatMul16BF16's GEMV for m ≤ smallM16 rows of x: each row of W, read once, is
// dotted with every row of x (from L1 after the first); rows of W are split across cores as
// gemv4bf16 splits them.
func gemv16bf16(m, n, k int, x []float32, w []uint16, beta float32, y []float32) {
	k2 := k / 2
	xb := getBuf(m * k2)
	defer putBuf(xb)
	xp := (*xb)[:m*k2]
	for i := 0; i < m; i++ {
		pairsBF16(xp[i*k2:(i+1)*k2], x[i*k:(i+1)*k])
	}
	xw := unsafe.Slice((*uint16)(unsafe.Pointer(&xp[0])), m*k)
	n64 := k / 64
	wk := workers(8 * m * n * k)
	chunk := max(16, n/(4*wk))
	parallel((n+chunk-1)/chunk, wk, func(t int) {
		for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
			row := w[j*k : (j+1)*k]
			for i := 0; i < m; i++ {
				xi := xw[i*k : (i+1)*k]
				var s float32
				if n64 > 0 {
					s = dot16BF16AVX512(n64, &xi[0], &row[0])
				}
				for c := 64 * n64; c < k; c++ {
					s += half.BF16ToFloat32(xi[c]) * half.BF16ToFloat32(row[c])
				}
				if beta != 0 {
					s += beta * y[i*n+j]
				}
				y[i*n+j] = s
			}
		}
	})
}

// gemm16bf16 is MatMul16BF16's GEMM: x rounded into bfloat16 pairs, W's rows read as pairs in
// place (k even), through the packed driver with the VDPBF16PS tiles.
func gemm16bf16(m, n, k int, x []float32, w []uint16, beta float32, y []float32) {
	k2 := k / 2
	wp := unsafe.Slice((*float32)(unsafe.Pointer(&w[0])), n*k2)
	blockedPairs(m, k, n, x, func(p0, j0, kcur, cols int, dst []float32) {
		packB(true, wp, k2, p0, j0, kcur, cols, dst)
	}, beta, y)
}
