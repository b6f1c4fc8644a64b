package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
)

func i32Tensor(t *testing.T, v []int32) *engine.Tensor {
	x, err := engine.FromInt32(cpuBackend, engine.Shape{len(v)}, v)
	require.NoError(t, err)
	return x
}

// attentionRef64 is causal attention of one query over keys 0..n-1 (rows of k, v with stride kd,
// starting at kv head offset), in float64.
func attentionRef64(q []float32, k, v []float32, n, kd, off, hd int, scale float64) []float64 {
	s := make([]float64, n)
	mx := math.Inf(-1)
	for j := range s {
		for d := 0; d < hd; d++ {
			s[j] += float64(q[d]) * float64(k[j*kd+off+d])
		}
		s[j] *= scale
		mx = math.Max(mx, s[j])
	}
	sum := 0.0
	for j := range s {
		s[j] = math.Exp(s[j] - mx)
		sum += s[j]
	}
	out := make([]float64, hd)
	for j := range s {
		for d := 0; d < hd; d++ {
			out[d] += s[j] / sum * float64(v[j*kd+off+d])
		}
	}
	return out
}

// Attention over a cache of slots: every query of every sequence against a float64 reference over
// its slot's rows up to its own, for decode-sized and prefill-sized (GEMM path) runs, sequences
// in any slot, ending on a slot's last row.
func TestAttentionOverCacheSlotsAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const slots, stride, H, KVH, D = 4, 40, 6, 2, 12
	kd := KVH * D
	k, v := randn(r, slots*stride*kd, 1), randn(r, slots*stride*kd, 1)
	for _, tc := range []struct {
		qlen int
		rows []int32
	}{
		{1, []int32{40 + 7, 0, 120 + 39, 80 + 20}},                        // decode: four sequences
		{3, []int32{45, 46, 47, 0, 1, 2, 117, 118, 119}},                  // three tokens each
		{13, []int32{83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95}}, // prefill, GEMM path
	} {
		n := len(tc.rows)
		a := engine.Attention{Batch: n / tc.qlen, QLen: tc.qlen, KVLen: stride, Heads: H, KVHeads: KVH, HeadDim: D, Scale: 0.29, KVStride: stride}
		q := randn(r, n*H*D, 1)
		outs := runOp(t, a, []*engine.Tensor{
			tensor(t, engine.Shape{n, H * D}, q), tensor(t, engine.Shape{slots * stride, kd}, k),
			tensor(t, engine.Shape{slots * stride, kd}, v), i32Tensor(t, tc.rows)})
		want := make([]float64, n*H*D)
		for i, row := range tc.rows {
			start := int(row) - int(row)%stride
			for h := 0; h < H; h++ {
				o := attentionRef64(q[(i*H+h)*D:], k[start*kd:], v[start*kd:], int(row)-start+1, kd, h/(H/KVH)*D, D, 0.29)
				copy(want[(i*H+h)*D:], o)
			}
		}
		requireClose(t, want, outs[0], 1e-5, "out")
	}
	// A row outside the cache is an error, not a crash.
	g := engine.NewGraph()
	a := engine.Attention{Batch: 1, QLen: 1, KVLen: stride, Heads: H, KVHeads: KVH, HeadDim: D, Scale: 1, KVStride: stride}
	qn, kn, vn := g.Input("q", engine.F32, engine.Shape{1, H * D}), g.Input("k", engine.F32, engine.Shape{slots * stride, kd}), g.Input("v", engine.F32, engine.Shape{slots * stride, kd})
	rn := g.Input("r", engine.I32, engine.Shape{1})
	out := g.CachedAttention(qn, kn, vn, rn, a)
	p, err := engine.Compile(g, cpuBackend, []*engine.Node{out}, engine.CompileOptions{})
	require.NoError(t, err)
	for n, x := range map[*engine.Node]*engine.Tensor{qn: tensor(t, engine.Shape{1, H * D}, randn(r, H*D, 1)),
		kn: tensor(t, engine.Shape{slots * stride, kd}, k), vn: tensor(t, engine.Shape{slots * stride, kd}, v), rn: i32Tensor(t, []int32{slots * stride})} {
		require.NoError(t, p.Bind(n, x))
	}
	require.ErrorContains(t, p.Run(), "outside the cache")
}

func TestCacheWriteRows(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cache, src := randn(r, 9*5, 1), randn(r, 3*5, 1)
	rows := []int32{8, 0, 4}
	outs := runOp(t, engine.CacheWrite{}, []*engine.Tensor{tensor(t, engine.Shape{9, 5}, cache), tensor(t, engine.Shape{3, 5}, src), i32Tensor(t, rows)})
	want := append([]float32(nil), cache...)
	for i, row := range rows {
		copy(want[int(row)*5:], src[i*5:(i+1)*5])
	}
	require.Equal(t, want, outs[0])
}

// GatherLoRA and GatherScaleCols: each row with its pool slot's adapter, against float64; a slot
// outside the pool is an error.
func TestGatherAdapterOpsAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const n, din, dout, rank, slots = 9, 37, 29, 6, 3
	x, y := randn(r, n*din, 1), randn(r, n*dout, 1)
	a, b := randn(r, slots*rank*din, 0.3), randn(r, slots*dout*rank, 0.3)
	sel := []int32{2, -1, 0, 1, 2, 1, 1, 0, -1}
	args := []*engine.Tensor{tensor(t, engine.Shape{n, dout}, y), tensor(t, engine.Shape{n, din}, x), i32Tensor(t, sel),
		tensor(t, engine.Shape{slots * rank, din}, a), tensor(t, engine.Shape{slots * dout, rank}, b)}
	outs := runOp(t, engine.GatherLoRA{R: rank}, args)
	want := to64(y)
	for i, s := range sel {
		if s < 0 {
			continue
		}
		xa := make([]float64, rank)
		for j := range xa {
			for c := 0; c < din; c++ {
				xa[j] += float64(x[i*din+c]) * float64(a[(int(s)*rank+j)*din+c])
			}
		}
		for o := 0; o < dout; o++ {
			for j := range xa {
				want[i*dout+o] += xa[j] * float64(b[(int(s)*dout+o)*rank+j])
			}
		}
	}
	requireClose(t, want, outs[0], 1e-5, "gather_lora")

	l := randn(r, slots*din, 1)
	outs = runOp(t, engine.GatherScaleCols{}, []*engine.Tensor{tensor(t, engine.Shape{n, din}, x), i32Tensor(t, sel), tensor(t, engine.Shape{slots, din}, l)})
	want = to64(x)
	for i, s := range sel {
		if s >= 0 {
			for c := 0; c < din; c++ {
				want[i*din+c] *= float64(l[int(s)*din+c])
			}
		}
	}
	requireClose(t, want, outs[0], 1e-6, "gather_scale_cols")

	bad := append([]int32(nil), sel...)
	bad[4] = slots
	args[2] = i32Tensor(t, bad)
	g := engine.NewGraph()
	var nodes []*engine.Node
	for i, x := range args {
		nodes = append(nodes, g.Input(string(rune('a'+i)), x.DType(), x.Shape()))
	}
	out := g.Apply1(engine.GatherLoRA{R: rank}, nodes...)
	p, err := engine.Compile(g, cpuBackend, []*engine.Node{out}, engine.CompileOptions{})
	require.NoError(t, err)
	for i, x := range args {
		require.NoError(t, p.Bind(nodes[i], x))
	}
	require.ErrorContains(t, p.Run(), "picks slot 3 of 3")
}
