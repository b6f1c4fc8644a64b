package gemm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/lathe-ml/lathe/engine/cpu/ceiling"
	"github.com/lathe-ml/lathe/quant"
)

// The projection shapes (out × in) of the 1B models the CPU backend is sized for; y = x·Wᵀ with x
// m × in. Llama-3.2-1B: hidden 2048, intermediate 8192, 32 heads × 64, 8 KV heads. TinyLlama-1.1B:
// hidden 2048, intermediate 5632, 4 KV heads. q_proj and o_proj share a shape, as do gate and up.
var layers = []struct {
	name    string
	out, in int
}{
	{"q_proj", 2048, 2048},
	{"k_proj", 512, 2048},
	{"tiny_k_proj", 256, 2048},
	{"up_proj", 8192, 2048},
	{"down_proj", 2048, 8192},
	{"tiny_up_proj", 5632, 2048},
	{"tiny_down_proj", 2048, 5632},
}

// tokens: one (decode, a GEMV) and a 512-token training micro-batch (a GEMM).
var tokens = []int{1, 512}

func report(b *testing.B, flops, bytes float64) {
	s := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(flops/s/1e9, "GFLOP/s")
	b.ReportMetric(bytes/s/1e9, "GB/s")
}

// BenchmarkSgemm: y = x·Wᵀ, lathe beside gonum's pure-Go parallel Sgemm in the same run, named
// Sgemm/{lathe,gonum}/shape=m×n×k/layer. GB/s counts x, W and y once each.
func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	impl := gonum.Implementation{}
	for _, l := range layers {
		w := randn(r, l.out*l.in)
		for _, m := range tokens {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			bytes := 4 * float64(m*l.in+l.out*l.in+m*l.out)
			shape := fmt.Sprintf("shape=%dx%dx%d/%s", m, l.out, l.in, l.name)
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

// BenchmarkSgemmBackward: the two other products of a linear layer's backward pass at 512 tokens,
// dx = dy·W (NN) and dW = dyᵀ·x (TN), on q_proj and up_proj.
func BenchmarkSgemmBackward(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	impl := gonum.Implementation{}
	const m = 512
	for _, l := range []int{0, 3} {
		out, in := layers[l].out, layers[l].in
		w, x, dy := randn(r, out*in), randn(r, m*in), randn(r, m*out)
		dx, dw := make([]float32, m*in), make([]float32, out*in)
		flops := 2 * float64(m) * float64(out) * float64(in)
		nn := fmt.Sprintf("NN/shape=%dx%dx%d/%s", m, in, out, layers[l].name)
		tn := fmt.Sprintf("TN/shape=%dx%dx%d/%s", out, in, m, layers[l].name)
		b.Run("lathe/"+nn, func(b *testing.B) {
			for b.Loop() {
				Sgemm(false, false, m, in, out, 1, dy, out, w, in, 0, dx, in)
			}
			report(b, flops, 4*float64(m*out+out*in+m*in))
		})
		b.Run("gonum/"+nn, func(b *testing.B) {
			for b.Loop() {
				impl.Sgemm(blas.NoTrans, blas.NoTrans, m, in, out, 1, dy, out, w, in, 0, dx, in)
			}
			report(b, flops, 4*float64(m*out+out*in+m*in))
		})
		b.Run("lathe/"+tn, func(b *testing.B) {
			for b.Loop() {
				Sgemm(true, false, out, in, m, 1, dy, out, x, in, 0, dw, in)
			}
			report(b, flops, 4*float64(m*out+out*in+m*in))
		})
		b.Run("gonum/"+tn, func(b *testing.B) {
			for b.Loop() {
				impl.Sgemm(blas.Trans, blas.NoTrans, out, in, m, 1, dy, out, x, in, 0, dw, in)
			}
			report(b, flops, 4*float64(m*out+out*in+m*in))
		})
	}
}

// BenchmarkMatMul4: the fused NF4 matmul beside the unfused path (dequantize all of W into a float
// buffer, then Sgemm) and, where the CPU has AVX512_BF16 and AVX512_VNNI, the bfloat16 and 8-bit
// ones (MatMul4BF16, MatMul4I8) in the same run, named MatMul4/{fused,unfused,bf16,i8}/shape=m×n×k/layer. GB/s counts
// the 4-bit weights with their block scales (which dominate the GEMV) plus x and y.
func BenchmarkMatMul4(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	const bs = 64
	for _, l := range layers {
		packed, absmax := randQuant4(r, l.out, l.in, bs)
		q := &quant4{packed: packed, absmax: absmax, bs: bs, code: &quant.NF4Code}
		wbuf := make([]float32, l.out*l.in)
		for _, m := range tokens {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			bytes := float64(len(packed)+4*len(absmax)) + 4*float64(m*(l.in+l.out))
			shape := fmt.Sprintf("shape=%dx%dx%d/%s", m, l.out, l.in, l.name)
			b.Run("fused/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul4(false, m, l.out, l.in, x, packed, absmax, bs, &quant.NF4Code, 0, y)
				}
				report(b, flops, bytes)
			})
			if HasBF16() {
				b.Run("bf16/"+shape, func(b *testing.B) {
					for b.Loop() {
						MatMul4BF16(false, m, l.out, l.in, x, packed, absmax, bs, &quant.NF4Code, 0, y)
					}
					report(b, flops, bytes)
				})
			}
			if HasI8() {
				b.Run("i8/"+shape, func(b *testing.B) {
					for b.Loop() {
						MatMul4I8(false, m, l.out, l.in, x, packed, absmax, bs, &quant.NF4Code, 0, y)
					}
					report(b, flops, bytes)
				})
			}
			b.Run("unfused/"+shape, func(b *testing.B) {
				for b.Loop() {
					parallel(l.out, workers(l.out*l.in), func(j int) { q.span(j*l.in, wbuf[j*l.in:(j+1)*l.in]) })
					Sgemm(false, true, m, l.out, l.in, 1, x, l.in, wbuf, l.in, 0, y, l.out)
				}
				report(b, flops, bytes)
			})
		}
	}
}

// BenchmarkMatMul4Backward: dx = dy·W through the 4-bit weight (transW), one token and 512, and
// where the CPU has AVX512_BF16 the same in bfloat16 (MatMul4BF16) in the same run.
func BenchmarkMatMul4Backward(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 4))
	const bs = 64
	l := layers[0]
	packed, absmax := randQuant4(r, l.out, l.in, bs)
	for _, m := range tokens {
		dy, dx := randn(r, m*l.out), make([]float32, m*l.in)
		flops := 2 * float64(m) * float64(l.out) * float64(l.in)
		bytes := float64(len(packed)+4*len(absmax)) + 4*float64(m*(l.in+l.out))
		b.Run(fmt.Sprintf("fused/shape=%dx%dx%d/%s", m, l.in, l.out, l.name), func(b *testing.B) {
			for b.Loop() {
				MatMul4(true, m, l.out, l.in, dy, packed, absmax, bs, &quant.NF4Code, 0, dx)
			}
			report(b, flops, bytes)
		})
		if HasBF16() {
			b.Run(fmt.Sprintf("bf16/shape=%dx%dx%d/%s", m, l.in, l.out, l.name), func(b *testing.B) {
				for b.Loop() {
					MatMul4BF16(true, m, l.out, l.in, dy, packed, absmax, bs, &quant.NF4Code, 0, dx)
				}
				report(b, flops, bytes)
			})
		}
	}
}

// BenchmarkSgemmEfficiency: square f32 products (1536³ as lathe bench --quick, 2048³ as lathe
// bench), each timed and followed at once by the FMA-peak probe of engine/cpu/ceiling on as many
// threads, reported as the median share of that peak (%fma-peak). On a shared host whose clock
// and memory move from minute to minute, the share is far steadier than the time:
//
//	go test -run '^$' -bench SgemmEfficiency -benchtime 20x -cpu 2 ./engine/cpu/gemm/
func BenchmarkSgemmEfficiency(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1536, 2048} {
		a, w, c := randn(r, n*n), randn(r, n*n), make([]float32, n*n)
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			unit := ceiling.AVX2
			if CurrentISA() == ISAAVX512 {
				unit = ceiling.AVX512
			}
			if !ceiling.Has(unit) {
				b.Skip("no FMA unit to measure a peak of")
			}
			var shares []float64
			for b.Loop() {
				t := time.Now()
				Sgemm(false, false, n, n, n, 1, a, n, w, n, 0, c, n)
				rate := 2 * float64(n*n*n) / time.Since(t).Seconds()
				shares = append(shares, rate/ceiling.FMAPeak(unit, runtime.GOMAXPROCS(0), 10*time.Millisecond))
			}
			slices.Sort(shares)
			b.ReportMetric(100*shares[len(shares)/2], "%fma-peak")
		})
	}
}
