package quant

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkQuantize: a Llama-3.2-1B MLP weight (8192×2048) to NF4 and FP4, blocksize 64, with
// and without double quantization, as `--quantize` does to every linear layer while a model
// loads. ns/weight is the wall time per element (all threads).
//
//	go test -run '^$' -bench Quantize ./quant/
func BenchmarkQuantize(b *testing.B) {
	data := randNormal(rand.New(rand.NewPCG(1, 2)), 8192*2048, 0.02)
	for _, typ := range []Type{NF4, FP4} {
		for _, dq := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/double=%v", typ, dq), func(b *testing.B) {
				for b.Loop() {
					if _, err := Quantize(data, []int{8192, 2048}, typ, 64, dq); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(b.N)/float64(len(data)), "ns/weight")
			})
		}
	}
}
