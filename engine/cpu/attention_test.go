package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// Flash attention against the plain kernels (float64 sums, themselves checked against a float64
// formula and finite differences), forward and backward, on every instruction set, on shapes that
// are not multiples of any tile: GQA groups of 1, 3 and 4 (query tiles of 64, 21 and 16
// positions), several query tiles and key blocks with partial last ones, qLen < kvLen, several
// sequences, packed documents.
func TestFastAttentionMatchesPlainKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, isa := range []gemm.ISA{gemm.ISAAVX512, gemm.ISAAVX2, gemm.ISAGo} {
		prev, err := gemm.SetISA(isa)
		if err != nil {
			continue // this CPU lacks it: the gemm tests fail or skip as LATHE_REQUIRE_* say
		}
		t.Run(string(isa), func(t *testing.T) { fastAgainstPlain(t, r) })
		_, _ = gemm.SetISA(prev)
	}
}

func fastAgainstPlain(t *testing.T, r *rand.Rand) {
	for _, a := range []engine.Attention{
		{Batch: 1, QLen: 150, KVLen: 300, Heads: 6, KVHeads: 2, HeadDim: 20},
		{Batch: 2, QLen: 131, KVLen: 131, Heads: 4, KVHeads: 1, HeadDim: 33, Docs: true},
		{Batch: 1, QLen: 70, KVLen: 260, Heads: 3, KVHeads: 3, HeadDim: 17, Docs: true},
		{Batch: 2, QLen: 8, KVLen: 8, Heads: 6, KVHeads: 2, HeadDim: 10},
		{Batch: 1, QLen: 37, KVLen: 53, Heads: 4, KVHeads: 4, HeadDim: 16},
		{Batch: 3, QLen: 65, KVLen: 65, Heads: 8, KVHeads: 2, HeadDim: 12},
		{Batch: 2, QLen: 8, KVLen: 8, Heads: 6, KVHeads: 2, HeadDim: 10, Docs: true},
		{Batch: 3, QLen: 65, KVLen: 65, Heads: 8, KVHeads: 2, HeadDim: 12, Docs: true},
		{Batch: 1, QLen: 37, KVLen: 53, Heads: 4, KVHeads: 4, HeadDim: 16, Docs: true},
	} {
		t.Run(fmt.Sprintf("%+v", a), func(t *testing.T) {
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

			wdq, wdk, wdv := make([]float32, nq), make([]float32, nkv), make([]float32, nkv)
			kernels.AttentionBackward(wdq, wdk, wdv, dout, q, k, v, wout, wlse, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
			checkBackwards(t, a, wdq, wdk, wdv, dout, q, k, v, out, lse, starts)
		})
	}
}

// Decoding shapes (a few queries against a long cache: its keys split into a chunk a thread, with
// 1, 2 and 7 threads) against the plain kernels, forward and backward, on every instruction set:
// GQA groups of 1, 3 and 8, one key, contexts that are not multiples of 16 (the vector
// exponential's width) or of the key block, packed documents (chunks that some rows see none of),
// groups whose value products run on padded rows.
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
			{Batch: 1, QLen: 1, KVLen: 1100, Heads: 8, KVHeads: 2, HeadDim: 24},
			{Batch: 2, QLen: 2, KVLen: 1030, Heads: 6, KVHeads: 2, HeadDim: 20, Docs: true},
			// Groups of 7 and 3 at a head size the AVX-512 kernels take: the value products run
			// on rows padded to 8 and 4, over blocks of different lengths.
			{Batch: 1, QLen: 1, KVLen: 700, Heads: 14, KVHeads: 2, HeadDim: 64},
			{Batch: 2, QLen: 1, KVLen: 300, Heads: 6, KVHeads: 2, HeadDim: 32, Docs: true},
		} {
			t.Run(fmt.Sprintf("%s/%+v", isa, a), func(t *testing.T) {
				a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
				nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
				q, k, v := randn(r, nq, 2), randn(r, nkv, 1), randn(r, nkv, 1)
				nl := a.Batch * a.Heads * a.QLen
				out, lse := nan(nq), nan(nl)
				wout, wlse := make([]float32, nq), make([]float32, nl)
				starts := docStarts(a, r)
				kernels.Attention(wout, wlse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
				for _, threads := range []int{1, 2, 7} {
					prev := runtime.GOMAXPROCS(threads)
					out, lse = nan(nq), nan(nl)
					attentionForward(a, out, lse, q, k, v, starts)
					runtime.GOMAXPROCS(prev)
					closeTo(t, wout, out, 1e-5, fmt.Sprintf("out, %d threads", threads))
					closeTo(t, wlse, lse, 1e-5, fmt.Sprintf("lse, %d threads", threads))
				}

				dout := randn(r, nq, 1)
				wdq, wdk, wdv := make([]float32, nq), make([]float32, nkv), make([]float32, nkv)
				kernels.AttentionBackward(wdq, wdk, wdv, dout, q, k, v, wout, wlse, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
				checkBackwards(t, a, wdq, wdk, wdv, dout, q, k, v, out, lse, starts)
			})
		}
		_, _ = gemm.SetISA(prev)
	}
}

// checkBackwards checks both forms of flash attention's backward pass (a task per (sequence, KV
// head) pair, and the split into query tiles and key blocks) against the plain kernel's gradients.
func checkBackwards(t *testing.T, a engine.Attention, wdq, wdk, wdv, dout, q, k, v, out, lse []float32, starts []int32) {
	t.Helper()
	for name, f := range map[string]func(engine.Attention, []float32, []float32, []float32, []float32, []float32, []float32, []float32, []float32, []float32, []int32){
		"pairs": flashBackwardPairs, "split": flashBackwardSplit,
	} {
		dq, dk, dv := nan(len(q)), nan(len(k)), nan(len(v))
		f(a, dq, dk, dv, dout, q, k, v, out, lse, starts)
		closeTo(t, wdq, dq, 1e-4, name+" dq")
		closeTo(t, wdk, dk, 1e-4, name+" dk")
		closeTo(t, wdv, dv, 1e-4, name+" dv")
	}
}

// The backward pass runs one task a (sequence, KV head) pair where those keep the cores at least
// three quarters busy over their rounds, and splits finer otherwise.
func TestBackwardByPairs(t *testing.T) {
	for _, c := range []struct {
		pairs, threads int
		want           bool
	}{
		{1, 1, true}, {1, 2, false}, {2, 2, true}, {3, 2, true}, {4, 2, true}, {5, 2, true},
		{2, 4, false}, {3, 4, true}, {5, 4, false}, {6, 4, true}, {8, 8, true}, {9, 8, false},
		{16, 8, true}, {17, 8, false}, {18, 8, true},
	} {
		if got := backwardByPairs(c.pairs, c.threads); got != c.want {
			t.Errorf("backwardByPairs(%d pairs, %d threads) = %v, want %v", c.pairs, c.threads, got, c.want)
		}
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
	if scale == 0 {
		scale = 1 // an exact zero (dq over one key), against the inputs' unit scale
	}
	for i := range want {
		require.False(t, math.IsNaN(float64(got[i])), "%s[%d] unwritten", what, i)
		require.InDelta(t, want[i], got[i], rel*scale, "%s[%d]", what, i)
	}
}

// Flash attention's gradients against central finite differences of its own forward pass, on a
// shape of two query tiles and two key blocks (GQA group 2, packed documents): loss = Σ w ⊙ out.
func TestFlashAttentionFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	a := engine.Attention{Batch: 1, QLen: 40, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 6, Docs: true}
	a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
	nq, nkv := a.Batch*a.QLen*a.Heads*a.HeadDim, a.Batch*a.KVLen*a.KVHeads*a.HeadDim
	q, k, v, w := randn(r, nq, 1), randn(r, nkv, 1), randn(r, nkv, 1), randn(r, nq, 1)
	starts := docStarts(a, r)
	out, lse := make([]float32, nq), make([]float32, a.Heads*a.QLen)
	loss := func() float64 {
		flashForward(a, out, lse, q, k, v, starts)
		s := 0.0
		for i, o := range out {
			s += float64(o) * float64(w[i])
		}
		return s
	}
	loss()
	dq, dk, dv := nan(nq), nan(nkv), nan(nkv)
	flashBackward(a, dq, dk, dv, w, q, k, v, out, lse, starts)
	const eps = 1e-2
	// Keys before the first query's position are seen by no query (documents of at most 20
	// keys): coordinates are drawn from the rest.
	seen := (a.KVLen - a.QLen) * a.KVHeads * a.HeadDim
	for _, c := range []struct {
		name string
		x, g []float32
		lo   int
	}{{"q", q, dq, 0}, {"k", k, dk, seen}, {"v", v, dv, seen}} {
		checked := 0
		for n := 0; n < 40; n++ {
			i := c.lo + r.IntN(len(c.x)-c.lo)
			x0 := c.x[i]
			c.x[i] = x0 + eps
			up := loss()
			c.x[i] = x0 - eps
			down := loss()
			c.x[i] = x0
			fd := (up - down) / (2 * eps)
			require.InDelta(t, fd, float64(c.g[i]), 2e-3+2e-2*math.Abs(fd), "d%s[%d]", c.name, i)
			if fd != 0 {
				checked++
			}
		}
		require.Greater(t, checked, 20, "d%s: most coordinates have a gradient", c.name)
	}
}
