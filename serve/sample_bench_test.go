package serve

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSampler picks a token from Llama 3's 128256 logits under the common settings.
//
//	go test -run '^$' -bench Sampler ./serve/
func BenchmarkSampler(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 128256)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	work := make([]float32, len(logits))
	for _, c := range []struct {
		temp, topP float64
		topK       int
	}{{0, 1, 0}, {1, 1, 0}, {0.7, 0.9, 0}, {0.8, 1, 40}} {
		sp := DefaultSampling()
		sp.Temperature, sp.TopP, sp.TopK = c.temp, c.topP, c.topK
		b.Run(fmt.Sprintf("t=%g/p=%g/k=%d", c.temp, c.topP, c.topK), func(b *testing.B) {
			s := NewSampler(sp)
			for range b.N {
				copy(work, logits)
				s.Next(work, nil, 0)
			}
		})
	}
}
