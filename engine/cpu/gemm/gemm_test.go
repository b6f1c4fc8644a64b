package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/quant"
)

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// refGemm is the float64 reference, also returning Σ|a||b| per element for the tolerance.
func refGemm(transA, transB bool, m, n, k int, alpha float64, a []float32, lda int, b []float32, ldb int, beta float64, c []float32, ldc int) (want, mag []float64) {
	want, mag = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s, g := 0.0, 0.0
			for p := 0; p < k; p++ {
				var av, bv float64
				if transA {
					av = float64(a[p*lda+i])
				} else {
					av = float64(a[i*lda+p])
				}
				if transB {
					bv = float64(b[j*ldb+p])
				} else {
					bv = float64(b[p*ldb+j])
				}
				s += av * bv
				g += math.Abs(av * bv)
			}
			v := alpha * s
			if beta != 0 {
				v += beta * float64(c[i*ldc+j])
			}
			want[i*n+j], mag[i*n+j] = v, math.Abs(alpha)*g+math.Abs(beta*float64(c[i*ldc+j]))
		}
	}
	return
}

func checkSgemm(t *testing.T, r *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad int) {
	t.Helper()
	lda, ldb, ldc := k+pad, n+pad, n+pad
	arows, brows := m, k
	if transA {
		lda, arows = m+pad, k
	}
	if transB {
		ldb, brows = k+pad, n
	}
	a, b := randn(r, arows*lda), randn(r, brows*ldb)
	c := randn(r, m*ldc)
	if beta == 0 {
		for i := range c {
			c[i] = float32(math.NaN()) // must not leak into the result
		}
	}
	want, mag := refGemm(transA, transB, m, n, k, float64(alpha), a, lda, b, ldb, float64(beta), c, ldc)
	Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			got := float64(c[i*ldc+j])
			tol := 1e-6*mag[i*n+j]*math.Sqrt(float64(k)+1) + 1e-6
			if math.IsNaN(got) || math.Abs(got-want[i*n+j]) > tol {
				t.Fatalf("Sgemm(%v,%v,%d,%d,%d,α=%v,β=%v) C[%d,%d] = %v, want %v (tol %g)", transA, transB, m, n, k, alpha, beta, i, j, got, want[i*n+j], tol)
			}
		}
		for j := n; j < ldc; j++ { // the padding between rows is left alone
			if beta != 0 {
				continue
			}
			require.True(t, math.IsNaN(float64(c[i*ldc+j])), "Sgemm wrote outside the matrix")
		}
	}
}

var sizes = []int{1, 2, 3, 5, 7, 17, 31, 33, 65, 127}

func TestSgemmAgainstFloat64(t *testing.T) {
	for _, fast := range []bool{true, false} {
		if fast && !useAVX2 {
			continue
		}
		t.Run(fmt.Sprintf("avx2=%v", fast), func(t *testing.T) {
			defer func(v bool) { useAVX2 = v }(useAVX2)
			useAVX2 = fast
			r := rand.New(rand.NewPCG(1, 2))
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for i, m := range sizes {
					n := sizes[(i+3)%len(sizes)]
					k := sizes[(i+6)%len(sizes)]
					checkSgemm(t, r, tr[0], tr[1], m, n, k, 1, 0, 0)
					checkSgemm(t, r, tr[0], tr[1], m, n, k, -0.7, 0.5, 3)
					checkSgemm(t, r, tr[0], tr[1], n, k, m, 1.3, 1, 1)
				}
				// Sizes that cross the kc, mc and nr block edges, with padding.
				checkSgemm(t, r, tr[0], tr[1], 97, 35, 257+kc, 1, 0, 2)
				checkSgemm(t, r, tr[0], tr[1], 1, 300, 257, 0.5, 0.5, 1)
			}
		})
	}
}

func TestSgemmLargeCrossesEveryBlock(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	checkSgemm(t, r, false, true, 2*mc+7, nc+19, 2*kc+3, 1, 0, 0)
}

// The AVX2 micro-kernel and the Go one agree bit for bit on the same packed operands? Not quite:
// FMA rounds once where Go rounds twice. They agree to float32 rounding on every tile shape.
func TestKernelsAgree(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2/FMA on this CPU: only the Go kernel runs")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, k := range []int{1, 2, 7, 256} {
		a, b := randn(r, k*mr), randn(r, k*nr)
		var fast, slow [mr * nr]float32
		kernel(k, a, b, &fast)
		kernelGo(k, a, b, &slow)
		for i := range fast {
			require.InDelta(t, slow[i], fast[i], 1e-5*float64(k), "k=%d [%d]", k, i)
		}
	}
	x, y := randn(r, 1001), randn(r, 1001)
	require.InDelta(t, dotGo(x, y), dot(x, y), 1e-3)
	y2 := append([]float32(nil), y...)
	axpy(0.3, x, y)
	axpyGo(0.3, x, y2)
	for i := range y {
		require.InDelta(t, y2[i], y[i], 1e-6)
	}
}

// quant4 is a random 4-bit weight [n, k] and its dequantized values.
func quant4(r *rand.Rand, n, k, blocksize int, code *[16]float32) (packed []byte, absmax []float32, w []float64) {
	packed = make([]byte, (n*k+1)/2)
	for i := range packed {
		packed[i] = byte(r.IntN(256))
	}
	absmax = make([]float32, (n*k+blocksize-1)/blocksize)
	for i := range absmax {
		absmax[i] = float32(0.1 + r.Float64())
	}
	w = make([]float64, n*k)
	for i := range w {
		q := packed[i/2] >> 4
		if i%2 == 1 {
			q = packed[i/2] & 15
		}
		w[i] = float64(code[q]) * float64(absmax[i/blocksize])
	}
	return
}

func TestMatMul4AgainstDequantizedFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, code := range []*[16]float32{&quant.NF4Code, &quant.FP4Code} {
		for _, bs := range []int{64, 128} {
			for _, m := range []int{1, 3, 64} {
				for _, dims := range [][2]int{{37, 53}, {129, 31}, {5, 301}} {
					n, k := dims[0], dims[1] // n·k is not a multiple of the blocksize: blocks span rows
					packed, absmax, w := quant4(r, n, k, bs, code)
					for _, transW := range []bool{false, true} {
						in, out := k, n
						if transW {
							in, out = n, k
						}
						x := randn(r, m*in)
						y := randn(r, m*out)
						beta := float32(0)
						if m == 3 {
							beta = 0.5
						}
						y0 := append([]float32(nil), y...)
						MatMul4(transW, m, n, k, x, packed, absmax, bs, code, beta, y)
						for i := 0; i < m; i++ {
							for o := 0; o < out; o++ {
								s, g := 0.0, 0.0
								for c := 0; c < in; c++ {
									var wv float64
									if transW {
										wv = w[c*k+o]
									} else {
										wv = w[o*k+c]
									}
									s += float64(x[i*in+c]) * wv
									g += math.Abs(float64(x[i*in+c]) * wv)
								}
								s += float64(beta) * float64(y0[i*out+o])
								require.InDelta(t, s, float64(y[i*out+o]), 1e-5*g+1e-6, "transW=%v m=%d n=%d k=%d bs=%d [%d,%d]", transW, m, n, k, bs, i, o)
							}
						}
					}
				}
			}
		}
	}
}
