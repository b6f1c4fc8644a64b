package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// The GEMM attention path against the plain kernels (themselves checked against float64 and
// finite differences), forward and backward, on shapes around the switch and not multiples of
// any tile: GQA, qLen < kvLen, several sequences.
func TestFastAttentionMatchesPlainKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, a := range []engine.Attention{
		{Batch: 2, QLen: 8, KVLen: 8, Heads: 6, KVHeads: 2, HeadDim: 10},
		{Batch: 1, QLen: 37, KVLen: 53, Heads: 4, KVHeads: 4, HeadDim: 16},
		{Batch: 3, QLen: 65, KVLen: 65, Heads: 8, KVHeads: 2, HeadDim: 12},
		{Batch: 2, QLen: 8, KVLen: 8, Heads: 6, KVHeads: 2, HeadDim: 10, Docs: true},
		{Batch: 3, QLen: 65, KVLen: 65, Heads: 8, KVHeads: 2, HeadDim: 12, Docs: true},
		{Batch: 1, QLen: 37, KVLen: 53, Heads: 4, KVHeads: 4, HeadDim: 16, Docs: true},
	} {
		t.Run(fmt.Sprintf("%+v", a), func(t *testing.T) {
			require.True(t, useFastAttention(a))
			a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
			nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
			q, k, v, dout := randn(r, nq, 1), randn(r, nkv, 1), randn(r, nkv, 1), randn(r, nq, 1)
			nl := a.Batch * a.Heads * a.QLen
			out, lse := make([]float32, nq), make([]float32, nl)
			wout, wlse := make([]float32, nq), make([]float32, nl)
			starts := docStarts(a, r)
			attentionForward(a, out, lse, q, k, v, starts)
			kernels.Attention(wout, wlse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
			closeTo(t, wout, out, 1e-5, "out")
			closeTo(t, wlse, lse, 1e-5, "lse")

			dq, dk, dv := nan(nq), nan(nkv), nan(nkv)
			wdq, wdk, wdv := make([]float32, nq), make([]float32, nkv), make([]float32, nkv)
			attentionBackward(a, dq, dk, dv, dout, q, k, v, out, lse, starts)
			kernels.AttentionBackward(wdq, wdk, wdv, dout, q, k, v, wout, wlse, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
			closeTo(t, wdq, dq, 1e-4, "dq")
			closeTo(t, wdk, dk, 1e-4, "dk")
			closeTo(t, wdv, dv, 1e-4, "dv")
		})
	}
}

// The decode path (fewer than fastAttentionQueries queries: the query heads of a KV head as one
// GEMM) against the plain kernels, on every instruction set: GQA groups of 1, 3 and 8, one key,
// contexts that are not multiples of 16 (the vector exponential's width), packed documents.
func TestDecodeAttentionMatchesPlainKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	for _, isa := range []gemm.ISA{gemm.ISAAVX512, gemm.ISAAVX2, gemm.ISAGo} {
		prev, err := gemm.SetISA(isa)
		if err != nil {
			continue // this CPU lacks it: the gemm tests fail or skip as LATHE_REQUIRE_* say
		}
		for _, a := range []engine.Attention{
			{Batch: 2, QLen: 1, KVLen: 53, Heads: 6, KVHeads: 2, HeadDim: 10},
			{Batch: 1, QLen: 1, KVLen: 1, Heads: 4, KVHeads: 4, HeadDim: 16},
			{Batch: 1, QLen: 3, KVLen: 300, Heads: 16, KVHeads: 2, HeadDim: 64},
			{Batch: 3, QLen: 7, KVLen: 33, Heads: 8, KVHeads: 8, HeadDim: 12},
			{Batch: 2, QLen: 5, KVLen: 40, Heads: 6, KVHeads: 2, HeadDim: 10, Docs: true},
		} {
			t.Run(fmt.Sprintf("%s/%+v", isa, a), func(t *testing.T) {
				a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
				nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
				q, k, v := randn(r, nq, 2), randn(r, nkv, 1), randn(r, nkv, 1)
				nl := a.Batch * a.Heads * a.QLen
				out, lse := nan(nq), nan(nl)
				wout, wlse := make([]float32, nq), make([]float32, nl)
				starts := docStarts(a, r)
				attentionForward(a, out, lse, q, k, v, starts)
				kernels.Attention(wout, wlse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
				closeTo(t, wout, out, 1e-5, "out")
				closeTo(t, wlse, lse, 1e-5, "lse")
			})
		}
		_, _ = gemm.SetISA(prev)
	}
}

// docStarts packs documents of random lengths (1 to 20 keys) into each sequence of a when
// a.Docs and returns each query's document start; nil otherwise.
func docStarts(a engine.Attention, r *rand.Rand) []int32 {
	if !a.Docs {
		return nil
	}
	st := make([]int32, a.Batch*a.QLen)
	for b := 0; b < a.Batch; b++ {
		cur, left := 0, 0
		for j := 0; j < a.KVLen; j++ {
			if left == 0 {
				cur, left = j, 1+r.IntN(20)
			}
			left--
			if i := j - (a.KVLen - a.QLen); i >= 0 {
				st[b*a.QLen+i] = int32(cur)
			}
		}
	}
	return st
}

// The GEMM path's softmax on scores of several hundred, where exp overflows unless each row's
// maximum is subtracted first, against the plain kernel (checked on such scores against float64).
func TestFastAttentionLargeScores(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	a := engine.Attention{Batch: 1, QLen: 9, KVLen: 12, Heads: 4, KVHeads: 2, HeadDim: 8}
	require.True(t, useFastAttention(a))
	a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
	nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
	q, k, v := randn(r, nq, 300), randn(r, nkv, 1), randn(r, nkv, 1)
	nl := a.Batch * a.Heads * a.QLen
	out, lse := nan(nq), nan(nl)
	wout, wlse := make([]float32, nq), make([]float32, nl)
	attentionForward(a, out, lse, q, k, v, nil)
	kernels.Attention(wout, wlse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, nil)
	big := float32(0)
	for _, l := range wlse {
		big = max(big, l)
	}
	require.Greater(t, big, float32(750), "scores large enough to overflow exp")
	closeTo(t, wout, out, 1e-5, "out")
	closeTo(t, wlse, lse, 1e-5, "lse")
}

func nan(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

func closeTo(t *testing.T, want, got []float32, rel float64, what string) {
	t.Helper()
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	for i := range want {
		require.False(t, math.IsNaN(float64(got[i])), "%s[%d] unwritten", what, i)
		require.InDelta(t, want[i], got[i], rel*scale, "%s[%d]", what, i)
	}
}
