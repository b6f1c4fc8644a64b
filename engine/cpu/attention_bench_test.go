package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
	"github.com/lathe-ml/lathe/internal/cputime"
)

// BenchmarkAttentionPaths: Llama-3.2-1B's attention (32 query heads, 8 KV heads × 64), decode (one
// query over 512 and 4096 keys), a 512-token causal prefill and its backward pass, and Qwen2-0.5B's
// decode over 512 keys and prefill (14 query heads, 2 KV heads: a GQA group of 7), each path beside the others in the same run: the plain
// float64 kernel, the previous GEMM path (scores materialised, attention_gemm_test.go) and flash
// attention on each instruction set, its backward pass also as each of its two splits (pairs,
// split; bwd-flash picks one). cpu-ms/op is the CPU time a call used (all threads, the pool's
// spinning workers included), steadier than the wall time on a shared host.
//
//	go test -run '^$' -bench AttentionPaths -count 3 ./engine/cpu/
func BenchmarkAttentionPaths(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, a := range []engine.Attention{
		{Batch: 1, QLen: 1, KVLen: 512, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 1, KVLen: 4096, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 512, KVLen: 512, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 1, KVLen: 512, Heads: 14, KVHeads: 2, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 512, KVLen: 512, Heads: 14, KVHeads: 2, HeadDim: 64, Scale: 0.125},
	} {
		nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
		q, k, v := randn(r, nq, 1), randn(r, nkv, 1), randn(r, nkv, 1)
		out, lse := make([]float32, nq), make([]float32, a.Batch*a.Heads*a.QLen)
		name := fmt.Sprintf("q=%d/kv=%d/heads=%d:%d", a.QLen, a.KVLen, a.Heads, a.KVHeads)
		b.Run(name+"/plain", func(b *testing.B) {
			for b.Loop() {
				kernels.Attention(out, lse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, nil)
			}
		})
		for _, isa := range []gemm.ISA{gemm.ISAAVX512, gemm.ISAAVX2} {
			run := func(path string, f func()) {
				b.Run(name+"/"+path+"/isa="+string(isa), func(b *testing.B) {
					prev, err := gemm.SetISA(isa)
					if err != nil {
						b.Skip(err)
					}
					defer gemm.SetISA(prev)
					c0 := cputime.Seconds()
					for b.Loop() {
						f()
					}
					b.ReportMetric((cputime.Seconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
				})
			}
			run("gemm", func() { gemmAttentionForward(a, out, lse, q, k, v, nil) })
			run("flash", func() { flashForward(a, out, lse, q, k, v, nil) })
			if a.QLen > 1 {
				dout := randn(r, nq, 1)
				dq, dk, dv := make([]float32, nq), make([]float32, nkv), make([]float32, nkv)
				flashForward(a, out, lse, q, k, v, nil)
				run("bwd-gemm", func() { gemmAttentionBackward(a, dq, dk, dv, dout, q, k, v, out, lse, nil) })
				run("bwd-flash", func() { flashBackward(a, dq, dk, dv, dout, q, k, v, out, lse, nil) })
				run("bwd-pairs", func() { flashBackwardPairs(a, dq, dk, dv, dout, q, k, v, out, lse, nil) })
				run("bwd-split", func() { flashBackwardSplit(a, dq, dk, dv, dout, q, k, v, out, lse, nil) })
			}
		}
	}
}

// BenchmarkDecodeAttention: one decoding step's attention from memory, as in a real step (where
// the other layers' weights have since passed through the caches): the KV cache's copies cycle
// through 256 MiB, one a call. Qwen2-0.5B's heads (a GQA group of 7) and Llama-3.2-1B's (4), over
// 512 and 4096 keys; from-cache runs beside them (the same copy every call). Compare variants in
// separate processes, rounds interleaved: within one process, a benchmark's position in the run
// biases it.
//
//	go test -run '^$' -bench 'DecodeAttention/.*/.*/from=memory' -cpu 2 ./engine/cpu/
func BenchmarkDecodeAttention(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, a := range []engine.Attention{
		{Batch: 1, QLen: 1, KVLen: 512, Heads: 14, KVHeads: 2, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 1, KVLen: 4096, Heads: 14, KVHeads: 2, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 1, KVLen: 512, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
		{Batch: 1, QLen: 1, KVLen: 4096, Heads: 32, KVHeads: 8, HeadDim: 64, Scale: 0.125},
	} {
		nq, nkv := a.Heads*a.HeadDim, a.KVLen*a.KVHeads*a.HeadDim
		q, k0, v0 := randn(r, nq, 1), randn(r, nkv, 1), randn(r, nkv, 1)
		out, lse := make([]float32, nq), make([]float32, a.Heads)
		copies := max(2, (256<<20)/(8*nkv))
		var ks, vs [][]float32 // the copies, made by the first sub-benchmark the filter runs
		for _, from := range []string{"memory", "cache"} {
			b.Run(fmt.Sprintf("heads=%d:%d/kv=%d/from=%s", a.Heads, a.KVHeads, a.KVLen, from), func(b *testing.B) {
				for len(ks) < copies {
					ks, vs = append(ks, append([]float32(nil), k0...)), append(vs, append([]float32(nil), v0...))
				}
				i := 0
				for b.Loop() {
					flashForward(a, out, lse, q, ks[i], vs[i], nil)
					if from == "memory" {
						i = (i + 1) % copies
					}
				}
				b.ReportMetric(float64(8*nkv)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
