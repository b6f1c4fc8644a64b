package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/quant"
)

// fastISAs are the assembly instruction sets this CPU runs, widest first.
func fastISAs() []ISA {
	var out []ISA
	if hasAVX512 {
		out = append(out, ISAAVX512)
	}
	if hasAVX2 {
		out = append(out, ISAAVX2)
	}
	return out
}

// BenchmarkISA runs each kernel on every assembly instruction set this CPU runs, one after the other inside
// each shape, so that -count repeats interleave them (the host may be loaded): the NF4 GEMV of
// decode (4096×4096, 9.4 MB read, and 8192×2048, one token and eight), the NF4 GEMM of a 512-token prefill and an f32
// GEMM, named ISA/kernel/shape/isa=....
//
//	go test -run '^$' -bench ISA -count 5 ./engine/cpu/gemm/
func BenchmarkISA(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	const bs = 64
	type shape struct {
		kernel  string
		m, n, k int
	}
	for _, s := range []shape{{"nf4_gemv", 1, 4096, 4096}, {"nf4_gemv", 1, 8192, 2048}, {"nf4_gemv", 8, 8192, 2048}, {"nf4_gemm", 512, 2048, 2048}, {"sgemm", 512, 2048, 2048}} {
		x, y := randn(r, s.m*s.k), make([]float32, s.m*s.n)
		var packed []byte
		var absmax, w []float32
		bytes := 4 * float64(s.m*(s.k+s.n))
		if s.kernel == "sgemm" {
			w = randn(r, s.n*s.k)
			bytes += 4 * float64(len(w))
		} else {
			packed, absmax = randQuant4(r, s.n, s.k, bs)
			bytes += float64(len(packed) + 4*len(absmax))
		}
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		for _, isa := range fastISAs() {
			b.Run(fmt.Sprintf("%s/%dx%dx%d/isa=%s", s.kernel, s.m, s.n, s.k, isa), func(b *testing.B) {
				prev, err := SetISA(isa)
				if err != nil {
					b.Fatal(err)
				}
				defer SetISA(prev)
				for b.Loop() {
					if w != nil {
						Sgemm(false, true, s.m, s.n, s.k, 1, x, s.k, w, s.k, 0, y, s.n)
					} else {
						MatMul4(false, s.m, s.n, s.k, x, packed, absmax, bs, &quant.NF4Code, 0, y)
					}
				}
				report(b, flops, bytes)
			})
		}
	}
}
