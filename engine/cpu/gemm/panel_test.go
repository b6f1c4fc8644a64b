package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMulPanelAgainstFloat64 multiplies sub-blocks of packed panels (a depth range from p0, a
// column range from a strip boundary) on every instruction set against the float64 reference:
// row counts around the 6-row tile, column counts around the 16- and 64-column tiles, depths
// past one kc block, B given as itself and transposed, β = 0 (C NaN, never read) and β ≠ 0.
func TestMulPanelAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	withAVX2(t, func(t *testing.T) {
		for _, trans := range []bool{false, true} {
			for _, sh := range [][2]int{{64, 200}, {300, 70}, {37, 129}} {
				k, n := sh[0], sh[1]
				ldb := n + 3
				if trans {
					ldb = k + 5
				}
				rowsB := k
				if trans {
					rowsB = n
				}
				b := randn(r, rowsB*ldb)
				p := PackPanel(trans, k, n, b, ldb)
				for _, m := range []int{1, 5, 6, 13, 72} {
					for _, sub := range [][4]int{{0, k, 0, n}, {k / 3, k - k/3, 16, n - 16 - 3}, {1, k / 2, 64, min(n-64, 65)}} {
						p0, kd, j0, cols := sub[0], sub[1], sub[2], sub[3]
						if cols <= 0 || kd <= 0 {
							continue
						}
						for _, beta := range []float32{0, 0.7} {
							name := fmt.Sprintf("trans=%v k=%d n=%d m=%d p0=%d kd=%d j0=%d cols=%d β=%v", trans, k, n, m, p0, kd, j0, cols, beta)
							lda, ldc := kd+2, cols+1
							a := randn(r, m*lda)
							c := randn(r, m*ldc)
							if beta == 0 {
								for i := range c {
									c[i] = float32(math.NaN())
								}
							}
							// The reference reads op(B)[p0+q][j0+j].
							bsub := make([]float32, kd*cols)
							for q := 0; q < kd; q++ {
								for j := 0; j < cols; j++ {
									if trans {
										bsub[q*cols+j] = b[(j0+j)*ldb+p0+q]
									} else {
										bsub[q*cols+j] = b[(p0+q)*ldb+j0+j]
									}
								}
							}
							want, mag := refGemm(false, false, m, cols, kd, 1.5, a, lda, bsub, cols, float64(beta), c, ldc)
							MulPanel(m, 1.5, a, lda, p, p0, kd, j0, cols, beta, c, ldc)
							for i := 0; i < m; i++ {
								for j := 0; j < cols; j++ {
									require.InDelta(t, want[i*cols+j], c[i*ldc+j], 1e-5*(mag[i*cols+j]+1e-3), "%s [%d,%d]", name, i, j)
								}
								if beta == 0 {
									require.True(t, math.IsNaN(float64(c[i*ldc+cols])), "%s: padding written", name)
								}
							}
						}
					}
				}
				p.Release()
			}
		}
	})
}
