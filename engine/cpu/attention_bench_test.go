package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// BenchmarkAttentionPaths: Llama-3.2-1B's attention (32 query heads, 8 KV heads × 64), decode (one
// query over 512 keys) and a 512-token causal prefill, each path beside the others in the same
// run: the plain float64 kernel, and the fast path on each instruction set.
//
//	go test -run '^$' -bench AttentionPaths -count 3 ./engine/cpu/
func BenchmarkAttentionPaths(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, a := range []engine.Attention{
		{Batch: 1, QLen: 1, KVLen: 512, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 512, KVLen: 512, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
	} {
		nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
		q, k, v := randn(r, nq, 1), randn(r, nkv, 1), randn(r, nkv, 1)
		out, lse := make([]float32, nq), make([]float32, a.Batch*a.Heads*a.QLen)
		name := fmt.Sprintf("q=%d/kv=%d", a.QLen, a.KVLen)
		b.Run(name+"/plain", func(b *testing.B) {
			for b.Loop() {
				kernels.Attention(out, lse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, nil)
			}
		})
		for _, isa := range []gemm.ISA{gemm.ISAAVX512, gemm.ISAAVX2} {
			b.Run(name+"/fast/isa="+string(isa), func(b *testing.B) {
				prev, err := gemm.SetISA(isa)
				if err != nil {
					b.Skip(err)
				}
				defer gemm.SetISA(prev)
				for b.Loop() {
					attentionForward(a, out, lse, q, k, v, nil)
				}
			})
		}
	}
}
