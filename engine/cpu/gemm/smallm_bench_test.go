package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/quant"
)

// BenchmarkSmallMTransB: y = x·Wᵀ for a few rows (decoding a batch through the output layer):
// the GEMV path (W streamed once, a dot product per output) beside the blocked path (W packed),
// around smallM. At 8 rows the two measured within noise of each other (8.7 vs 8.4 ms, 10.5 vs
// 11.1 ms in two runs), so smallM stays 4.
func BenchmarkSmallMTransB(b *testing.B) {
	const n, k = 8192, 2048
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	for _, m := range []int{2, smallM} {
		x := make([]float32, m*k)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		c := make([]float32, m*n)
		b.Run(fmt.Sprintf("m=%d/gemv", m), func(b *testing.B) {
			for range b.N {
				gemv(false, true, m, n, k, 1, x, k, w, k, 0, c, n)
			}
		})
		b.Run(fmt.Sprintf("m=%d/blocked", m), func(b *testing.B) {
			for range b.N {
				blocked(m, n, k, 1, aOperand{x, k, false},
					func(p0, j0, kcur, cols int, dst []float32) { packB(true, w, k, p0, j0, kcur, cols, dst) },
					0, c, n, false)
			}
		})
	}
}

// BenchmarkMatMul4Rows: the fused NF4 GEMV for a decode batch of m rows, 2048 → 8192 (up_proj),
// in GB/s of 4-bit weights read, and where the CPU has AVX512_BF16 and AVX512_VNNI the same in
// bfloat16 (MatMul4BF16) and 8-bit (MatMul4I8) products in the same run.
//
//	go test -run '^$' -bench MatMul4Rows -benchtime 20x ./engine/cpu/gemm/
func BenchmarkMatMul4Rows(b *testing.B) {
	const n, k, bs = 8192, 2048, 64
	r := rand.New(rand.NewPCG(3, 4))
	packed, absmax := randQuant4(r, n, k, bs)
	for _, m := range []int{1, 4, 8, 16} {
		x := randn(r, m*k)
		y := make([]float32, m*n)
		b.Run(fmt.Sprintf("m=%d", m), func(b *testing.B) {
			for range b.N {
				MatMul4(false, m, n, k, x, packed, absmax, bs, &quant.NF4Code, 0, y)
			}
			b.ReportMetric(float64(n*k)/2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
		if HasBF16() {
			b.Run(fmt.Sprintf("bf16/m=%d", m), func(b *testing.B) {
				for range b.N {
					MatMul4BF16(false, m, n, k, x, packed, absmax, bs, &quant.NF4Code, 0, y)
				}
				b.ReportMetric(float64(n*k)/2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
		if HasI8() {
			b.Run(fmt.Sprintf("i8/m=%d", m), func(b *testing.B) {
				for range b.N {
					MatMul4I8(false, m, n, k, x, packed, absmax, bs, &quant.NF4Code, 0, y)
				}
				b.ReportMetric(float64(n*k)/2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
