package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/lathe-ml/lathe/quant"
)

// The layer shapes of Llama-3.2-1B (hidden 2048, intermediate 8192, 32 heads × 64, 8 KV heads):
// out × in of q_proj, k_proj, gate_proj/up_proj and down_proj.
var layers = []struct {
	name    string
	out, in int
}{
	{"q_proj", 2048, 2048},
	{"k_proj", 512, 2048},
	{"up_proj", 8192, 2048},
	{"down_proj", 2048, 8192},
}

func report(b *testing.B, flops, bytes float64) {
	s := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(flops/s/1e9, "GFLOP/s")
	b.ReportMetric(bytes/s/1e9, "GB/s")
}

// BenchmarkSgemm: y = x·Wᵀ for 1 token (GEMV) and 512 tokens (GEMM), lathe beside gonum's pure-Go
// parallel Sgemm in the same run.
func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	impl := gonum.Implementation{}
	for _, l := range layers {
		w := randn(r, l.out*l.in)
		for _, m := range []int{1, 512} {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			bytes := 4 * float64(m*l.in+l.out*l.in+m*l.out)
			shape := fmt.Sprintf("%s/m=%d/shape=%dx%dx%d", l.name, m, m, l.out, l.in)
			b.Run("lathe/"+shape, func(b *testing.B) {
				for b.Loop() {
					Sgemm(false, true, m, l.out, l.in, 1, x, l.in, w, l.in, 0, y, l.out)
				}
				report(b, flops, bytes)
			})
			b.Run("gonum/"+shape, func(b *testing.B) {
				for b.Loop() {
					impl.Sgemm(blas.NoTrans, blas.Trans, m, l.out, l.in, 1, x, l.in, w, l.in, 0, y, l.out)
				}
				report(b, flops, bytes)
			})
		}
	}
}

// BenchmarkMatMul4: the fused 4-bit matmul beside dequantize-all-of-W-then-Sgemm (the unfused path)
// in the same run. GB/s counts the 4-bit weights and their block scales, which dominate the GEMV.
func BenchmarkMatMul4(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	const bs = 64
	for _, l := range layers {
		packed, absmax, _ := quant4(r, l.out, l.in, bs, &quant.NF4Code)
		wbuf := make([]float32, l.out*l.in)
		for _, m := range []int{1, 512} {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			bytes := float64(len(packed)+4*len(absmax)) + 4*float64(m*(l.in+l.out))
			shape := fmt.Sprintf("%s/m=%d/shape=%dx%dx%d", l.name, m, m, l.out, l.in)
			b.Run("fused/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul4(false, m, l.out, l.in, x, packed, absmax, bs, &quant.NF4Code, 0, y)
				}
				report(b, flops, bytes)
			})
			b.Run("unfused/"+shape, func(b *testing.B) {
				for b.Loop() {
					dequantRows(0, l.out, l.in, packed, absmax, bs, &quant.NF4Code, wbuf)
					Sgemm(false, true, m, l.out, l.in, 1, x, l.in, wbuf, l.in, 0, y, l.out)
				}
				report(b, flops, bytes)
			})
		}
	}
}
