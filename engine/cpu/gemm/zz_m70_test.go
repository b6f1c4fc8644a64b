package gemm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/engine/cpu/ceiling"
	"github.com/lathe-ml/lathe/quant"
)

func BenchmarkZZM70(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	const bs = 64
	for _, l := range layers {
		packed, absmax := randQuant4(r, l.out, l.in, bs)
		var pc [][]byte
		var ac [][]float32
		for c := 0; c < 16; c++ {
			pc, ac = append(pc, append([]byte(nil), packed...)), append(ac, append([]float32(nil), absmax...))
		}
		w := randn(r, l.out*l.in)
		for _, m := range []int{70} {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			shape := fmt.Sprintf("shape=%dx%dx%d/%s", m, l.out, l.in, l.name)
			b.Run("nf4/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul4(false, m, l.out, l.in, x, packed, absmax, bs, &quant.NF4Code, 0, y)
				}
				rate := flops * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(100*rate/ceiling.FMAPeak(ceiling.AVX512, runtime.GOMAXPROCS(0), 10*time.Millisecond), "%peak")
			})
			b.Run("nf4cold/"+shape, func(b *testing.B) {
				i := 0
				for b.Loop() {
					MatMul4(false, m, l.out, l.in, x, pc[i], ac[i], bs, &quant.NF4Code, 0, y)
					i = (i + 1) % len(pc)
				}
				rate := flops * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(100*rate/ceiling.FMAPeak(ceiling.AVX512, runtime.GOMAXPROCS(0), 10*time.Millisecond), "%peak")
			})
			b.Run("f32/"+shape, func(b *testing.B) {
				for b.Loop() {
					Sgemm(false, true, m, l.out, l.in, 1, x, l.in, w, l.in, 0, y, l.out)
				}
				rate := flops * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(100*rate/ceiling.FMAPeak(ceiling.AVX512, runtime.GOMAXPROCS(0), 10*time.Millisecond), "%peak")
			})
		}
	}
}
