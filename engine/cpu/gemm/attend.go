package gemm

// Attention's decoding products: a few query rows (a decoding step's query heads of one KV head)
// against a block of keys read in place. Through Sgemm these are GEMMs of 4 to 16 rows: the
// scores went to the GEMV path, a call and a horizontal sum a (row, key) pair, and P·V packed the
// value block before using it once, so decoding attention ran at a few percent of its bandwidth
// roofline. The AVX-512 kernels (attend_amd64.s) read each key and value row once for all the rows;
// other instruction sets and head sizes keep Sgemm.

// attendFast says whether the AVX-512 kernels take head size d.
func attendFast(d int) bool { return useAVX512 && d%32 == 0 }

// AttendScores sets s[r·lds + j] = scale·q_r·k_j for rows r < rows of q (row stride d) and keys
// j < n of k (row stride ldk), d floats each: Sgemm(false, true, rows, n, d, scale, q, d, k, ldk,
// 0, s, lds).
func AttendScores(rows, n, d int, scale float32, q, k []float32, ldk int, s []float32, lds int) {
	if !attendFast(d) || n < 4 {
		Sgemm(false, true, rows, n, d, scale, q, d, k, ldk, 0, s, lds)
		return
	}
	_ = k[(n-1)*ldk+d-1]
	_ = q[rows*d-1]
	_ = s[(rows-1)*lds+n-1]
	attendScoresAVX512(n/4, d/16, rows, &q[0], &k[0], ldk, scale, &s[0], lds)
	for r := 0; r < rows; r++ {
		qr := q[r*d : (r+1)*d]
		for j := n &^ 3; j < n; j++ {
			s[r*lds+j] = scale * dot(qr, k[j*ldk:j*ldk+d])
		}
	}
}

// AttendValues adds p·v to out: out[r·ldo + c] += Σ_j p[r·ldp + j]·v[j·ldv + c] for rows r < rows,
// keys j < n and columns c < d: Sgemm(false, false, rows, d, n, 1, p, ldp, v, ldv, 1, out, ldo).
func AttendValues(rows, n, d int, p []float32, ldp int, v []float32, ldv int, out []float32, ldo int) {
	if !attendFast(d) || n < 1 {
		Sgemm(false, false, rows, d, n, 1, p, ldp, v, ldv, 1, out, ldo)
		return
	}
	_ = v[(n-1)*ldv+d-1]
	_ = p[(rows-1)*ldp+n-1]
	_ = out[(rows-1)*ldo+d-1]
	r := 0
	for ; r+8 <= rows; r += 8 {
		for c := 0; c < d; c += 32 {
			attendValues8AVX512(n, &p[r*ldp], ldp, &v[c], ldv, &out[r*ldo+c], ldo)
		}
	}
	if rows-r > 4 {
		attendValuesPadded(8, rows-r, n, d, p[r*ldp:], ldp, v, ldv, out[r*ldo:], ldo)
		return
	}
	for ; r+4 <= rows; r += 4 {
		values4(n, d, p[r*ldp:], ldp, v, ldv, out[r*ldo:], ldo)
	}
	if r < rows {
		attendValuesPadded(4, rows-r, n, d, p[r*ldp:], ldp, v, ldv, out[r*ldo:], ldo)
	}
}

// AttendValuesRows is the row count for which AttendValues on head size d runs no padded copy:
// rows rounded up to its kernels' (eight, or four for a last group of up to four). A caller whose
// p and out have room for the extra rows passes that count instead, and ignores their outputs: with
// the padded copy, Qwen2-0.5B's GQA group of 7 took 30% longer than a group of 8.
func AttendValuesRows(rows, d int) int {
	if !attendFast(d) {
		return rows
	}
	switch left := rows % 8; {
	case left == 0:
		return rows
	case left > 4:
		return rows - left + 8
	default:
		return rows - left + 4
	}
}

// values4 is AttendValues for four rows: 64 columns a pass where d allows (each value row's
// slice read once, sixteen FMAs on eight loads), else 32.
func values4(n, d int, p []float32, ldp int, v []float32, ldv int, out []float32, ldo int) {
	if d%64 == 0 {
		for c := 0; c < d; c += 64 {
			attendValues4x64AVX512(n, &p[0], ldp, &v[c], ldv, &out[c], ldo)
		}
		return
	}
	for c := 0; c < d; c += 32 {
		attendValuesAVX512(n, &p[0], ldp, &v[c], ldv, &out[c], ldo)
	}
}

// attendValuesPadded is AttendValues for the last left < k rows (k 4 or 8, the kernels' rows):
// the kernel runs on a padded copy, zero weights in the missing rows.
func attendValuesPadded(k, left, n, d int, p []float32, ldp int, v []float32, ldv int, out []float32, ldo int) {
	bp := getBuf(k*n + k*d)
	defer putBuf(bp)
	pp, op := (*bp)[:k*n], (*bp)[k*n:]
	clear(pp[left*n:])
	clear(op)
	for i := 0; i < left; i++ {
		copy(pp[i*n:(i+1)*n], p[i*ldp:i*ldp+n])
	}
	if k == 4 {
		values4(n, d, pp, n, v, ldv, op, d)
	} else {
		for c := 0; c < d; c += 32 {
			attendValues8AVX512(n, &pp[0], n, &v[c], ldv, &op[c], d)
		}
	}
	for i := 0; i < left; i++ {
		o := out[i*ldo : i*ldo+d]
		for c := range o {
			o[c] += op[i*d+c]
		}
	}
}

// Max is the largest of x (not empty): a softmax row's shift. A NaN in x makes the result
// unspecified (the exponentials of that row are NaN whatever the shift).
func Max(x []float32) float32 {
	i, m := 0, x[0]
	if useAVX512 && len(x) >= 16 {
		i = len(x) &^ 15
		m = maxAVX512(i, &x[0])
	} else {
		// Eight independent lanes, so that the compare chain does not serialise.
		l := [8]float32{m, m, m, m, m, m, m, m}
		for ; i+8 <= len(x); i += 8 {
			c := (*[8]float32)(x[i : i+8])
			l[0], l[1], l[2], l[3] = max(l[0], c[0]), max(l[1], c[1]), max(l[2], c[2]), max(l[3], c[3])
			l[4], l[5], l[6], l[7] = max(l[4], c[4]), max(l[5], c[5]), max(l[6], c[6]), max(l[7], c[7])
		}
		m = max(max(max(l[0], l[1]), max(l[2], l[3])), max(max(l[4], l[5]), max(l[6], l[7])))
	}
	for ; i < len(x); i++ {
		m = max(m, x[i])
	}
	return m
}

// Scale multiplies x by a in place (a softmax row's output, rescaled as its maximum grows).
func Scale(x []float32, a float32) {
	i := 0
	if useAVX512 && len(x) >= 16 {
		i = len(x) &^ 15
		scaleAVX512(i, &x[0], a)
	}
	for ; i < len(x); i++ {
		x[i] *= a
	}
}

// AddScaled adds a·x to y (len(x) ≥ len(y)): the merge of partial softmax outputs.
func AddScaled(y, x []float32, a float32) {
	x = x[:len(y)]
	i := 0
	if useAVX512 && len(y) >= 16 {
		i = len(y) &^ 15
		addScaledAVX512(i, &y[0], &x[0], a)
	}
	for ; i < len(y); i++ {
		y[i] += a * x[i]
	}
}
