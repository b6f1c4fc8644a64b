package gemm

import "unsafe"

// smallM4 is the most rows of x that MatMul4 runs as GEMVs (four rows a pass over W) rather than as
// a GEMM with W dequantized into packed panels, whose fixed cost per weight only pays off beyond
// (measured on 2048×2048: 16 rows as GEMVs 4.9 ms, as a GEMM 7.6 ms; 24 rows about even).
const smallM4 = 16

// MatMul4 computes y = x·Wᵀ (transW=false: x is m×k, W is n×k, y is m×n) or y = x·W (transW=true:
// x is m×n, W is n×k, y is m×k) for a 4-bit blockwise-quantized W stored as bitsandbytes does: W
// flattened row-major, consecutive blocks of blocksize elements, two codes a byte with the first
// element in the high nibble, element = code[q]·absmax[block]. y = beta·y + result; beta == 0
// means y is not read (it may hold NaN). packed must hold ⌈n·k/2⌉ bytes and absmax ⌈n·k/blocksize⌉
// scales; slices too short for the shapes make it panic (index out of range): callers check shapes.
//
// transW=false is a linear layer's forward pass, transW=true its backward pass for the input
// (dx = dy·W). Up to 16 tokens forward (decode, batched decode) read every weight byte once and
// dequantize it in registers, four tokens at a time. More tokens, and the backward pass, run the
// packed SGEMM with a B packer that dequantizes W straight into the packed panels: every weight is
// expanded once per call and a float copy of all of W never exists.
func MatMul4(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
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
	q := &quant4{packed: packed, absmax: absmax, bs: blocksize, code: code}
	switch {
	case m <= smallM4 && !transW:
		gemv4(q, m, n, k, x[:m*k], beta, y[:m*n])
	case m == 1:
		gemv4T(q, n, k, x[:n], beta, y[:k])
	default:
		var pb bPacker
		if transW {
			pb = q.packRows(k)
		} else {
			pb = q.packCols(k)
		}
		blocked(m, out, red, 1, aOperand{x, red, false}, pb, beta, y, out, false)
	}
}

// quant4 is a 4-bit blockwise-quantized matrix in the bitsandbytes layout.
type quant4 struct {
	packed []byte
	absmax []float32
	bs     int
	code   *[16]float32
}

// span dequantizes the len(dst) elements from flat index e0 into dst, a block segment at a time.
func (q *quant4) span(e0 int, dst []float32) {
	end := e0 + len(dst)
	blk := e0 / q.bs
	for e := e0; e < end; blk++ {
		bend := min(end, (blk+1)*q.bs)
		s := q.absmax[blk]
		seg := dst[e-e0 : bend-e0]
		i := 0
		if e&1 == 1 { // starts on a low nibble
			seg[0] = q.code[q.packed[e>>1]&15] * s
			i = 1
		}
		body := (len(seg) - i) &^ 1
		if g := body / 16; g > 0 && useAVX2 {
			bytes := q.packed[(e+i)>>1 : (e+i)>>1+8*g]
			out := seg[i : i+16*g]
			if useAVX512 {
				dequant4AVX512(g, &bytes[0], s, q.code, &out[0])
			} else {
				dequant4AVX2(g, &bytes[0], s, q.code, &out[0])
			}
			i += 16 * g
			body -= 16 * g
		}
		if body > 0 {
			bytes := q.packed[(e+i)>>1 : (e+i+body)>>1]
			out := seg[i : i+body]
			for c, b := range bytes {
				out[2*c] = q.code[b>>4] * s
				out[2*c+1] = q.code[b&15] * s
			}
			i += body
		}
		if i < len(seg) { // ends on a high nibble
			seg[i] = q.code[q.packed[(e+i)>>1]>>4] * s
		}
		e = bend
	}
}

// packCols is the bPacker for op(B) = Wᵀ (k×n): a strip is nr rows of W, kcur elements of each,
// dequantized into a row-major tile and transposed into the strip.
func (q *quant4) packCols(k int) bPacker {
	return func(p0, j0, kcur, cols int, dst []float32) {
		tb := getBuf(nr * kcur)
		defer putBuf(tb)
		tile := *tb
		q.packStrips(k, j0, cols, p0, kcur, kcur, false, dst, func(j, rows int, strip []float32) {
			for r := 0; r < rows; r++ {
				q.span((j+r)*k+p0, tile[r*kcur:(r+1)*kcur])
			}
			packT(tile, kcur, kcur, rows, strip)
		})
	}
}

// packStrips is the strip loop of packCols and packColsBF16 (kcur slots a strip row): over the
// strips of columns j0..j0+cols, elements e0..e0+cnt of each row of W, it prefetches the rows each
// strip reads next, packs whole strips straight from the codes where it can (packStrip; with bf
// in bfloat16 pairs) and hands the others to plain (the strip's first row of W, its rows, and
// where the strip goes).
func (q *quant4) packStrips(k, j0, cols, e0, cnt, kcur int, bf bool, dst []float32, plain func(j, rows int, strip []float32)) {
	q.prefetchCols(k, j0, min(nr, cols), e0, cnt)
	fast := q.stripsFromCodes(k, e0, cnt)
	for s := 0; s*nr < cols; s++ {
		rows := min(nr, cols-s*nr)
		q.prefetchAhead(k, j0, cols, s, e0, cnt)
		strip := dst[s*stripStride(kcur):]
		if fast && rows == nr {
			q.packStrip(k, j0+s*nr, e0, cnt, bf, strip)
			continue
		}
		plain(j0+s*nr, rows, strip)
	}
}

// prefetchCols asks for rows j0..j0+rows of W, elements p0..p0+cnt of each, and their block
// scales to be fetched: what a packer of op(B) = Wᵀ reads for one strip. Those rows are k elements
// apart, so the hardware prefetcher sees short unrelated runs; read cold (a prompt's GEMM reads its
// weights once, from memory), each waited on DRAM in turn, and packing took a quarter of the
// prefill.
func (q *quant4) prefetchCols(k, j0, rows, p0, cnt int) {
	for j := j0; j < j0+rows; j++ {
		q.prefetch(j*k+p0, cnt)
	}
}

// prefetchAhead is prefetchCols for the strip after strip s of a packCols call (columns j0..j0+cols,
// depths p0..p0+kcur), or after the last, for the first strip of the next depth block, which
// blockedRows packs next.
func (q *quant4) prefetchAhead(k, j0, cols, s, p0, kcur int) {
	switch next := (s + 1) * nr; {
	case next < cols:
		q.prefetchCols(k, j0+next, min(nr, cols-next), p0, kcur)
	case p0+kcur < k:
		q.prefetchCols(k, j0, min(nr, cols), p0+kcur, min(kcur, k-p0-kcur))
	}
}

// usePackFromCodes turns the packers' fast path (packStrip) on; off in the test that checks it
// against the plain one.
var usePackFromCodes = true

// stripsFromCodes reports whether packCols and packColsBF16 can take whole strips of depths
// e0..e0+cnt straight from the codes (packStrip): with AVX-512, k a multiple of 32 and of the
// blocksize, the blocksize a multiple of 32 and e0 and cnt multiples of it, so that every 16 bytes
// of a row share one block and start on a byte.
func (q *quant4) stripsFromCodes(k, e0, cnt int) bool {
	return usePackFromCodes && useAVX512 && k%32 == 0 && q.bs%32 == 0 && k%q.bs == 0 && e0%q.bs == 0 && cnt%q.bs == 0
}

// packStrip packs one whole strip (W's rows j..j+16, elements e0..e0+cnt of each; see
// stripsFromCodes) straight from the codes: dequantized, transposed and, with bf, rounded into
// bfloat16 pairs in registers (packNF4AVX512, packNF4BF16AVX512), where the plain packers
// dequantize each row into a buffer, then round and transpose it. Measured on a 70-token prefill
// of four Llama-3.2-1B-shaped layers: packing had taken a third of the time with bfloat16
// products.
func (q *quant4) packStrip(k, j, e0, cnt int, bf bool, dst []float32) {
	nblk := cnt / q.bs
	sb := getBuf(nr * nblk) // the strip's block scales, a block's 16 rows together
	defer putBuf(sb)
	sv := *sb
	for r := 0; r < nr; r++ {
		b0 := ((j+r)*k + e0) / q.bs
		for b := range nblk {
			sv[b*nr+r] = q.absmax[b0+b]
		}
	}
	w0 := (j*k + e0) / 2
	_ = q.packed[w0+(nr-1)*k/2+cnt/2-1]
	if bf {
		_ = dst[(cnt/2-1)*nr+nr-1]
		packNF4BF16AVX512(cnt/32, q.bs/32, &q.packed[w0], k/2, &sv[0], q.code, &dst[0])
		return
	}
	_ = dst[(cnt-1)*nr+nr-1]
	packNF4AVX512(cnt/32, q.bs/32, &q.packed[w0], k/2, &sv[0], q.code, &dst[0])
}

// rowsAhead is how many rows of W ahead packRows and packRowsBF16 ask for: each reads a panel's
// stretch of a row (up to nc elements, 128 bytes), rows k elements apart.
const rowsAhead = 8

// prefetch asks for elements e..e+cnt of W's flat layout and their block scales to be fetched.
func (q *quant4) prefetch(e, cnt int) {
	b0, b1 := e/2, min((e+cnt+1)/2, len(q.packed))
	if cnt <= 0 || b0 >= b1 {
		return
	}
	prefetchSpan(&q.packed[b0], b1-b0)
	if s0, s1 := e/q.bs, min((e+cnt-1)/q.bs+1, len(q.absmax)); s0 < s1 {
		prefetchSpan((*byte)(unsafe.Pointer(&q.absmax[s0])), 4*(s1-s0))
	}
}

// packRows is the bPacker for op(B) = W (n×k): each of the kcur rows of W is dequantized along the
// panel, then cut into the strips. With AVX-512, where whole groups of 16 never straddle a block,
// the full strips are dequantized straight into place (dequant4StripsAVX512).
func (q *quant4) packRows(k int) bPacker {
	direct := useAVX512 && q.bs%16 == 0 && k%16 == 0
	return func(p0, j0, kcur, cols int, dst []float32) {
		nstrips := (cols + nr - 1) / nr
		full := 0 // strips dequantized in place
		if direct && j0%16 == 0 {
			full = cols / nr
		}
		var row [nc]float32
		for p := 0; p < min(rowsAhead, kcur); p++ {
			q.prefetch((p0+p)*k+j0, cols)
		}
		for p := 0; p < kcur; p++ {
			q.prefetch((p0+p+rowsAhead)*k+j0, cols) // past kcur: the next depth block's first rows
			e := (p0+p)*k + j0
			if full > 0 {
				gpb := q.bs / 16
				_ = q.packed[(e+full*nr)/2-1]
				_ = q.absmax[(e+full*nr-1)/q.bs]
				_ = dst[(full-1)*stripStride(kcur)+p*nr+nr-1]
				dequant4StripsAVX512(full, gpb-e%q.bs/16, gpb, &q.packed[e/2], &q.absmax[e/q.bs], q.code, &dst[p*nr], stripStride(kcur))
			}
			if full == nstrips {
				continue
			}
			r := row[full*nr : cols]
			q.span(e+full*nr, r)
			for s := full; s < nstrips; s++ {
				d := dst[s*stripStride(kcur)+p*nr:][:nr]
				n := copy(d, row[s*nr:cols])
				clear(d[n:])
			}
		}
	}
}

// gemv4 is y = x·Wᵀ for a few tokens (m ≤ smallM4): every output is the dot product of a row of x
// with a row of W dequantized on the fly, so W is read once, whatever m. Parallel over rows of W.
func gemv4(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	if m == 1 && useAVX512 && k%128 == 0 && q.bs%64 == 0 {
		gemv4g128(q, n, k, x, beta, y)
		return
	}
	// The AVX2 kernels take whole 16-element groups that never straddle a block, and x with each
	// group's even elements first (the high nibbles of its 8 bytes), then the odd ones. Beyond one
	// row, x goes four rows at a time up to four, else eight (zero rows pad the last pass).
	fast := useAVX2 && k%16 == 0 && q.bs%16 == 0
	var xp []float32
	rows, step := m, 1
	if fast {
		switch {
		case m > 4:
			step = 8
		case m > 1:
			step = 4
		}
		rows = (m + step - 1) / step * step
		buf := getBuf(rows * k)
		defer putBuf(buf)
		xp = *buf
		clear(xp[m*k:])
		for i := 0; i < m; i++ {
			xi, pi := x[i*k:(i+1)*k], xp[i*k:(i+1)*k]
			for g := 0; g < k; g += 16 {
				for e := 0; e < 8; e++ {
					pi[g+e], pi[g+8+e] = xi[g+2*e], xi[g+2*e+1]
				}
			}
		}
	}
	var pairs *[256][2]float32
	if !fast {
		pairs = new([256][2]float32)
		for b := range pairs {
			pairs[b] = [2]float32{q.code[b>>4], q.code[b&15]}
		}
	}
	put := func(i, j int, v float32) {
		if beta != 0 {
			v += beta * y[i*n+j]
		}
		y[i*n+j] = v
	}
	w := workers(2 * m * n * k)
	chunk := max(32, n/(4*w)) // long runs of rows, as in gemv4g128
	parallel((n+chunk-1)/chunk, w, func(t int) {
		for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
			switch {
			case fast && m == 1:
				put(0, j, q.dotRowAVX2(j*k, k, xp))
			case fast && step == 4:
				var out [4]float32
				q.dotRows4AVX2(j*k, k, xp, &out)
				for r := 0; r < m; r++ {
					put(r, j, out[r])
				}
			case fast:
				for i := 0; i < m; i += 8 {
					var out [8]float32
					q.dotRows8AVX2(j*k, k, xp[i*k:], &out)
					for r := i; r < min(m, i+8); r++ {
						put(r, j, out[r-i])
					}
				}
			default:
				for i := 0; i < m; i++ {
					put(i, j, q.dotRow(j*k, x[i*k:(i+1)*k], pairs))
				}
			}
		}
	})
}

// gemv4g128 is gemv4 for one row of x on AVX-512 with k a multiple of 128 and the blocksize of 64:
// whole 128-code groups, each half within one block (gemv4g128AVX512).
func gemv4g128(q *quant4, n, k int, x []float32, beta float32, y []float32) {
	buf := getBuf(k)
	defer putBuf(buf)
	xp := (*buf)[:k]
	for g := 0; g < k; g += 128 {
		for s := 0; s < 8; s++ {
			for l := 0; l < 16; l++ {
				xp[g+16*s+l] = x[g+8*l+(s^1)]
			}
		}
	}
	intoY(y, beta, func(out []float32) {
		q.gemvRows(n, k, func(j0, rows int, w *byte, scales *float32) {
			gemv4g128AVX512(rows, k/128, &xp[0], w, scales, q.code, &out[j0])
		})
	})
}

// intoY calls f with where a kernel that writes (not adds) its results should put them: y itself,
// or with beta ≠ 0 a scratch buffer, whose results are then added to beta·y (addScaled).
func intoY(y []float32, beta float32, f func(out []float32)) {
	if beta == 0 {
		f(y)
		return
	}
	b := getBuf(len(y))
	defer putBuf(b)
	out := (*b)[:len(y)]
	f(out)
	addScaled(y, out, beta)
}

// addScaled sets y = out + beta·y (y = out when beta is 0: y is not read).
func addScaled(y, out []float32, beta float32) {
	out = out[:len(y)]
	if beta == 0 {
		copy(y, out)
		return
	}
	for j := range y {
		y[j] = out[j] + beta*y[j]
	}
}

// gemvRows runs kernel, a GEMV of whole 128-code groups with two scales a group, over the n rows
// of W split across cores: kernel(j0, rows, w, scales) takes W's rows j0..j0+rows (w their first
// byte). With blocksize 64 it gets long runs of rows, the halves' scales being consecutive absmax
// entries across rows too; otherwise single rows, each half's scale repeated from the row's
// blocks.
func (q *quant4) gemvRows(n, k int, kernel func(j0, rows int, w *byte, scales *float32)) {
	_ = q.absmax[(n*k-1)/q.bs]
	_ = q.packed[n*k/2-1]
	// A GEMV does far less arithmetic a byte than a GEMM: weigh its flops eightfold, so that a
	// k_proj-sized layer (512×2048) is shared between cores too.
	w := workers(16 * n * k)
	chunk := max(16, n/(4*w)) // long runs of rows: each core streams W, and the prefetchers follow
	parallel((n+chunk-1)/chunk, w, func(t int) {
		j0, j1 := t*chunk, min(n, (t+1)*chunk)
		if q.bs == 64 {
			kernel(j0, j1-j0, &q.packed[j0*k/2], &q.absmax[j0*k/64])
			return
		}
		halves := make([]float32, k/64)
		for j := j0; j < j1; j++ {
			for h := range halves {
				halves[h] = q.absmax[(j*k+64*h)/q.bs]
			}
			kernel(j, 1, &q.packed[j*k/2], &halves[0])
		}
	})
}

// dotRows4AVX2 is dotRowAVX2 for the four rows of xp (stride k) at once.
func (q *quant4) dotRows4AVX2(e0, k int, xp []float32, out *[4]float32) {
	blk := e0 / q.bs
	first := (q.bs - e0%q.bs) / 16
	nblk := (e0+k-1)/q.bs - blk + 1
	_ = q.absmax[blk+nblk-1]
	_ = q.packed[(e0+k)/2-1]
	_ = xp[4*k-1]
	if useAVX512 {
		gemv4x4AVX512(k/16, first, q.bs/16, &xp[0], k, &q.packed[e0/2], &q.absmax[blk], q.code, out)
		return
	}
	gemv4x4AVX2(k/16, first, q.bs/16, &xp[0], k, &q.packed[e0/2], &q.absmax[blk], q.code, out)
}

// dotRows8AVX2 is dotRowAVX2 for the eight rows of xp (stride k) at once.
func (q *quant4) dotRows8AVX2(e0, k int, xp []float32, out *[8]float32) {
	blk := e0 / q.bs
	first := (q.bs - e0%q.bs) / 16
	nblk := (e0+k-1)/q.bs - blk + 1
	_ = q.absmax[blk+nblk-1]
	_ = q.packed[(e0+k)/2-1]
	_ = xp[8*k-1]
	if useAVX512 {
		gemv4x8AVX512(k/16, first, q.bs/16, &xp[0], k, &q.packed[e0/2], &q.absmax[blk], q.code, out)
		return
	}
	gemv4x8AVX2(k/16, first, q.bs/16, &xp[0], k, &q.packed[e0/2], &q.absmax[blk], q.code, out)
}

// dotRowAVX2 is x·W[e0:e0+k] for a row starting at flat index e0, with e0, k and the blocksize
// multiples of 16 and xp permuted as gemv4 describes.
func (q *quant4) dotRowAVX2(e0, k int, xp []float32) float32 {
	blk := e0 / q.bs
	first := (q.bs - e0%q.bs) / 16 // groups until the first block boundary
	nblk := (e0+k-1)/q.bs - blk + 1
	_ = q.absmax[blk+nblk-1]
	_ = q.packed[(e0+k)/2-1]
	if useAVX512 {
		return gemv4AVX512(k/16, first, q.bs/16, &xp[0], &q.packed[e0/2], &q.absmax[blk], q.code)
	}
	return gemv4AVX2(k/16, first, q.bs/16, &xp[0], &q.packed[e0/2], &q.absmax[blk], q.code)
}

// dotRow is the portable x·W[e0:e0+len(x)], two codes a byte through a pair table.
func (q *quant4) dotRow(e0 int, x []float32, pairs *[256][2]float32) float32 {
	e1 := e0 + len(x)
	var acc float32
	for e := e0; e < e1; {
		blk := e / q.bs
		end := min(e1, (blk+1)*q.bs)
		var s0, s1 float32
		i := e
		if i&1 == 1 { // starts on a low nibble
			s0 += x[i-e0] * q.code[q.packed[i>>1]&15]
			i++
		}
		xs := x[i-e0 : end-e0]
		bs := q.packed[i>>1 : (end+1)>>1]
		c := 0
		for ; c+1 < len(xs); c += 2 {
			p := &pairs[bs[c>>1]]
			s0 += xs[c] * p[0]
			s1 += xs[c+1] * p[1]
		}
		if c < len(xs) { // ends on a high nibble
			s0 += xs[c] * q.code[bs[c>>1]>>4]
		}
		acc += (s0 + s1) * q.absmax[blk]
		e = end
	}
	return acc
}

// gemv4T is y = x·W for one token (the backward pass of decode): y = Σ_j x[j]·W[j,:]. Each task
// takes a range of rows of W, dequantizes them whole and in order into its own partial sums, which
// are added up at the end.
func gemv4T(q *quant4, n, k int, x []float32, beta float32, y []float32) {
	w := workers(2 * n * k)
	parts := min(w, n)
	accb := getBuf(parts * k)
	acc := *accb
	clear(acc)
	parallel(parts, w, func(t int) {
		mine := acc[t*k : (t+1)*k]
		rb := getBuf(k)
		row := *rb
		for j := t * n / parts; j < (t+1)*n/parts; j++ {
			q.span(j*k, row)
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
