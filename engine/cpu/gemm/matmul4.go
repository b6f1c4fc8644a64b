package gemm

// MatMul4 computes y = x·Wᵀ (transW=false: x is m×k, W is n×k, y is m×n) or y = x·W (transW=true:
// x is m×n, W is n×k, y is m×k) for a 4-bit blockwise-quantized W stored as bitsandbytes does: W
// flattened row-major, consecutive blocks of blocksize elements, two codes a byte with the first
// element in the high nibble, element = code[q]·absmax[block]. y = beta·y + result; beta == 0
// means y is not read. Slices too short for the shapes make it panic: callers check shapes.
//
// One token (m == 1, decode) reads every weight byte once and dequantizes in registers; more
// tokens dequantize W a slab of rows at a time into a float buffer reused across all m rows and
// multiply it with the packed SGEMM.
func MatMul4(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	if m == 1 && !transW {
		gemv4(n, k, x, packed, absmax, blocksize, code, beta, y)
		return
	}
	// Slabs of rows of W: big enough to keep the GEMM efficient, small enough to stay in cache.
	rows := max(1, min(n, (1<<18)/max(k, 1)))
	rows = (rows + nr - 1) / nr * nr
	buf := getBuf(rows * k)
	defer bufPool.Put(buf)
	for j0 := 0; j0 < n; j0 += rows {
		j1 := min(n, j0+rows)
		w := (*buf)[:(j1-j0)*k]
		dequantRows(j0, j1, k, packed, absmax, blocksize, code, w)
		if transW { // y[m,k] (+)= x[:, j0:j1] · W[j0:j1, :]
			b := beta
			if j0 > 0 {
				b = 1
			}
			Sgemm(false, false, m, k, j1-j0, 1, x[j0:], n, w, k, b, y, k)
		} else { // y[:, j0:j1] = x · W[j0:j1, :]ᵀ
			Sgemm(false, true, m, j1-j0, k, 1, x, k, w, k, beta, y[j0:], n)
		}
	}
}

// dequantRows expands rows j0..j1 of W (k columns) into dst, in parallel.
func dequantRows(j0, j1, k int, packed []byte, absmax []float32, blocksize int, code *[16]float32, dst []float32) {
	parallel(j1-j0, workers((j1-j0)*k*4), func(r int) {
		e := (j0 + r) * k
		row := dst[r*k : (r+1)*k]
		for i := range row {
			q := packed[(e+i)>>1]
			if (e+i)&1 == 0 {
				q >>= 4
			}
			row[i] = code[q&15] * absmax[(e+i)/blocksize]
		}
	})
}

// gemv4 is y = x·Wᵀ for one token: each output is a dot product of x with a row of W dequantized
// on the fly, block by block, two codes a byte through a 256-entry pair table.
func gemv4(n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	var pairs [256][2]float32
	for b := range pairs {
		pairs[b] = [2]float32{code[b>>4], code[b&15]}
	}
	const chunk = 16
	parallel((n+chunk-1)/chunk, workers(2*n*k), func(t int) {
		for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
			e0, e1 := j*k, (j+1)*k
			var acc float32
			for e := e0; e < e1; {
				blk := e / blocksize
				end := min(e1, (blk+1)*blocksize)
				var s0, s1 float32
				i := e
				if i&1 == 1 { // the row starts on a low nibble
					s0 += x[i-e0] * code[packed[i>>1]&15]
					i++
				}
				xs := x[i-e0 : end-e0]
				bs := packed[i>>1 : (end+1)>>1]
				c := 0
				for ; c+1 < len(xs); c += 2 {
					p := &pairs[bs[c>>1]]
					s0 += xs[c] * p[0]
					s1 += xs[c+1] * p[1]
				}
				if c < len(xs) { // ends on a high nibble
					s0 += xs[c] * code[bs[c>>1]>>4]
				}
				acc += (s0 + s1) * absmax[blk]
				e = end
			}
			if beta != 0 {
				acc += beta * y[j]
			}
			y[j] = acc
		}
	})
}
