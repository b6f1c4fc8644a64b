// Package gemm holds the CPU backend's matrix kernels.
package gemm

// Sgemm computes C = alpha*op(A)*op(B) + beta*C, row-major; op(X) = X or Xᵀ.
// op(A) is m×k, op(B) is k×n, C is m×n; lda/ldb/ldc are row strides. beta==0 means C is not read.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var acc float32
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				acc += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * acc
			} else {
				c[i*ldc+j] = alpha*acc + beta*c[i*ldc+j]
			}
		}
	}
}

// MatMul4 computes y = x·Wᵀ (transW=false) or y = x·W (transW=true) for a 4-bit blockwise W [n, k].
func MatMul4(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	w := make([]float32, n*k)
	for i := range w {
		q := packed[i/2] >> 4
		if i%2 == 1 {
			q = packed[i/2] & 15
		}
		w[i] = code[q] * absmax[i/blocksize]
	}
	if transW {
		Sgemm(false, false, m, k, n, 1, x, n, w, k, beta, y, k)
	} else {
		Sgemm(false, true, m, n, k, 1, x, k, w, k, beta, y, n)
	}
}
