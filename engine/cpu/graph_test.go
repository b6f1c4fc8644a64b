package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/quant"
)

// tinyNet is a two-layer Llama-style network exercising every differentiable op: a frozen
// embedding, RMSNorm with a trainable weight, LoRA on a dense q_proj, QLoRA on an NF4 k_proj, IA3 on
// v and on the feed-forward activations, RoPE, grouped-query attention, SwiGLU, a trainable bias, a
// frozen lm_head and a cross-entropy with ignored targets.
type tinyNet struct {
	g          *engine.Graph
	loss       *engine.Node
	grads      map[*engine.Node]*engine.Node
	tensors    map[*engine.Node]*engine.Tensor
	trainables []*engine.Node
}

const (
	tnVocab, tnDim, tnHeads, tnKV, tnHD, tnFF, tnBatch, tnSeq, tnRank = 29, 24, 4, 2, 6, 20, 2, 7, 3
)

func buildTinyNet(t *testing.T, seed uint64, layers int) *tinyNet {
	r := rand.New(rand.NewPCG(seed, 99))
	g := engine.NewGraph()
	n := &tinyNet{g: g, tensors: map[*engine.Node]*engine.Tensor{}}
	param := func(name string, shape engine.Shape, scale float64, trainable bool) *engine.Node {
		p := g.Param(name, engine.F32, shape, trainable)
		n.tensors[p] = tensor(t, shape, randn(r, shape.Numel(), scale))
		if trainable {
			n.trainables = append(n.trainables, p)
		}
		return p
	}
	rows := tnBatch * tnSeq
	ids := g.Input("ids", engine.I32, engine.Shape{rows})
	targets := g.Input("targets", engine.I32, engine.Shape{rows})
	pos := g.Input("pos", engine.I32, engine.Shape{rows})
	idv, tv, pv := make([]int32, rows), make([]int32, rows), make([]int32, rows)
	for i := range idv {
		idv[i] = int32(r.IntN(tnVocab))
		tv[i] = int32(r.IntN(tnVocab))
		pv[i] = int32(i % tnSeq)
	}
	tv[0], tv[5] = -100, -100
	for node, v := range map[*engine.Node][]int32{ids: idv, targets: tv, pos: pv} {
		x, err := engine.FromInt32(cpuBackend, node.Shape(), v)
		require.NoError(t, err)
		n.tensors[node] = x
	}
	invFreq := make([]float32, tnHD/2)
	for i := range invFreq {
		invFreq[i] = float32(1 / math.Pow(10000, float64(2*i)/tnHD))
	}
	h := g.Embedding(param("embed", engine.Shape{tnVocab, tnDim}, 1, false), ids)
	for l := 0; l < layers; l++ {
		g.BeginBlock()
		p := func(s string) string { return fmt.Sprintf("l%d.%s", l, s) }
		x := g.RMSNorm(h, param(p("attn_norm"), engine.Shape{tnDim}, 1, true), 1e-5)
		q := g.LoRA(x, param(p("q"), engine.Shape{tnHeads * tnHD, tnDim}, 0.3, false),
			param(p("q.A"), engine.Shape{tnRank, tnDim}, 0.3, true), param(p("q.B"), engine.Shape{tnHeads * tnHD, tnRank}, 0.3, true), 2)
		qk := randQuant4(r, tnKV*tnHD, tnDim, 64, quant.NF4)
		for i := range qk.absmax {
			qk.absmax[i] *= 0.3
		}
		packed := g.Input(p("k.packed"), engine.U8, engine.Shape{len(qk.packed)})
		absmax := g.Input(p("k.absmax"), engine.F32, engine.Shape{len(qk.absmax)})
		pt, err := engine.FromBytes(cpuBackend, engine.U8, packed.Shape(), qk.packed)
		require.NoError(t, err)
		n.tensors[packed], n.tensors[absmax] = pt, tensor(t, absmax.Shape(), qk.absmax)
		k := g.QLoRA(x, packed, absmax, param(p("k.A"), engine.Shape{tnRank, tnDim}, 0.3, true),
			param(p("k.B"), engine.Shape{tnKV * tnHD, tnRank}, 0.3, true), qk.spec, 0.5)
		v := g.MatMul(x, param(p("v"), engine.Shape{tnKV * tnHD, tnDim}, 0.3, false), false, true)
		v = g.ScaleCols(v, param(p("ia3_v"), engine.Shape{tnKV * tnHD}, 1, true))
		q = g.RoPE(q, pos, tnHeads, tnHD, invFreq, 1)
		k = g.RoPE(k, pos, tnKV, tnHD, invFreq, 1)
		att := g.Attention(q, k, v, engine.Attention{Batch: tnBatch, QLen: tnSeq, KVLen: tnSeq, Heads: tnHeads, KVHeads: tnKV, HeadDim: tnHD, Scale: float32(1 / math.Sqrt(tnHD))})
		o := g.MatMul(att, param(p("o"), engine.Shape{tnDim, tnHeads * tnHD}, 0.3, false), false, true)
		h = g.Add(h, o)
		x = g.RMSNorm(h, param(p("ffn_norm"), engine.Shape{tnDim}, 1, false), 1e-5)
		gate := g.MatMul(x, param(p("gate"), engine.Shape{tnFF, tnDim}, 0.3, false), false, true)
		up := g.MatMul(x, param(p("up"), engine.Shape{tnFF, tnDim}, 0.3, false), false, true)
		ff := g.ScaleCols(g.SwiGLU(gate, up), param(p("ia3_ff"), engine.Shape{tnFF}, 1, true))
		h = g.Add(h, g.MatMul(ff, param(p("down"), engine.Shape{tnDim, tnFF}, 0.3, false), false, true))
		g.EndBlock()
	}
	h = g.RMSNorm(h, param("norm", engine.Shape{tnDim}, 1, false), 1e-5)
	logits := g.AddBias(g.MatMul(h, param("lm_head", engine.Shape{tnVocab, tnDim}, 0.3, false), false, true),
		param("bias", engine.Shape{tnVocab}, 0.1, true))
	n.loss = g.CrossEntropy(logits, targets, -100)
	var err error
	n.grads, err = g.Backward(n.loss)
	require.NoError(t, err)
	return n
}

func (n *tinyNet) compile(t *testing.T, opts engine.CompileOptions) *engine.Program {
	outs := []*engine.Node{n.loss}
	for _, p := range n.trainables {
		outs = append(outs, n.grads[p])
	}
	p, err := engine.Compile(n.g, cpuBackend, outs, opts)
	require.NoError(t, err)
	for _, leaf := range p.Leaves() {
		require.NoError(t, p.Bind(leaf, n.tensors[leaf]), leaf.Name())
	}
	return p
}

func lossOf(t *testing.T, p *engine.Program, n *tinyNet) float64 {
	require.NoError(t, p.Run())
	l, err := p.Float32(n.loss)
	require.NoError(t, err)
	return float64(l[0])
}

func TestAutodiffMatchesFiniteDifferences(t *testing.T) {
	n := buildTinyNet(t, 7, 2)
	require.Len(t, n.grads, len(n.trainables), "every trainable parameter gets a gradient")
	for node := range n.grads {
		require.True(t, node.Trainable(), "frozen %s got a gradient", node.Name())
	}
	p := n.compile(t, engine.CompileOptions{})
	base := lossOf(t, p, n)
	require.Greater(t, base, 1.0)
	grads := map[*engine.Node][]float32{}
	for _, tr := range n.trainables {
		g, err := p.Float32(n.grads[tr])
		require.NoError(t, err)
		grads[tr] = g
	}
	r := rand.New(rand.NewPCG(11, 12))
	for _, tr := range n.trainables {
		orig, err := n.tensors[tr].Float32()
		require.NoError(t, err)
		u := randn(r, len(orig), 1)
		analytic := 0.0
		for i := range u {
			analytic += float64(grads[tr][i]) * float64(u[i])
		}
		eps := 1e-3
		shifted := func(sign float64) float64 {
			v := make([]float32, len(orig))
			for i := range v {
				v[i] = orig[i] + float32(sign*eps)*u[i]
			}
			require.NoError(t, n.tensors[tr].SetFloat32(v))
			return lossOf(t, p, n)
		}
		fd := (shifted(1) - shifted(-1)) / (2 * eps)
		require.NoError(t, n.tensors[tr].SetFloat32(orig))
		// eps 1e-3 keeps the curvature error of the attention layers small; the float32 loss
		// rounds to ~2e-7, so the difference quotient carries ~2.5e-4 of noise.
		require.InDelta(t, fd, analytic, 2e-2*math.Abs(fd)+5e-4, "directional derivative of %s", tr.Name())
		require.Greater(t, math.Abs(analytic), 1e-4, "%s: gradient should not vanish", tr.Name())
	}
}

func TestRecomputeGivesSameGradientsWithLessMemory(t *testing.T) {
	n := buildTinyNet(t, 8, 4)
	plain := n.compile(t, engine.CompileOptions{})
	re := n.compile(t, engine.CompileOptions{Recompute: true})
	require.Equal(t, lossOf(t, plain, n), lossOf(t, re, n))
	for _, tr := range n.trainables {
		a, err := plain.Float32(n.grads[tr])
		require.NoError(t, err)
		b, err := re.Float32(n.grads[tr])
		require.NoError(t, err)
		require.Equal(t, a, b, "gradient of %s", tr.Name())
	}
	// Four blocks: without recomputation every block's activations are alive when the backward pass
	// starts; with it, only the block inputs and one block's activations.
	require.Less(t, float64(re.PeakBytes()), 0.8*float64(plain.PeakBytes()), "recomputation must lower peak memory")
	require.Greater(t, re.Launches(), plain.Launches(), "recomputation runs the blocks' forward again")
	t.Logf("peak bytes: %d plain, %d with recomputation; launches %d vs %d", plain.PeakBytes(), re.PeakBytes(), plain.Launches(), re.Launches())
}

// Mixed precision (CompileOptions.Save): the activations the backward pass reads are kept in 16
// bits between the passes, so the peak is lower, and the gradients are the f32 program's within
// the 16-bit rounding of those activations (relative to each gradient's scale: f16 2⁻¹¹, bf16 2⁻⁸
// per value, stated bounds 5e-3 and 3e-2), the loss exactly (the forward is untouched).
func TestSaveHalfActivations(t *testing.T) {
	n := buildTinyNet(t, 8, 4)
	plain := n.compile(t, engine.CompileOptions{})
	want := lossOf(t, plain, n)
	for _, c := range []struct {
		dt  engine.DType
		tol float64
	}{{engine.F16, 5e-3}, {engine.BF16, 3e-2}} {
		p := n.compile(t, engine.CompileOptions{Save: c.dt})
		require.Equal(t, want, lossOf(t, p, n), "%s: the forward pass is unchanged", c.dt)
		for _, tr := range n.trainables {
			a, err := plain.Float32(n.grads[tr])
			require.NoError(t, err)
			b, err := p.Float32(n.grads[tr])
			require.NoError(t, err)
			var scale, worst, sd, sw float64
			for i := range a {
				scale = math.Max(scale, math.Abs(float64(a[i])))
				d := math.Abs(float64(a[i] - b[i]))
				worst = math.Max(worst, d)
				sd += d * d
				sw += float64(a[i]) * float64(a[i])
			}
			require.Positive(t, scale)
			require.LessOrEqual(t, worst, c.tol*scale, "%s: gradient of %s", c.dt, tr.Name())
			require.LessOrEqual(t, sd/sw, c.tol*c.tol, "%s: NMSE of the gradient of %s", c.dt, tr.Name())
			require.Positive(t, worst, "%s: gradient of %s is bit-identical: nothing was kept in 16 bits", c.dt, tr.Name())
		}
		require.Less(t, float64(p.PeakBytes()), 0.8*float64(plain.PeakBytes()), "%s activations must lower peak memory", c.dt)
		t.Logf("%s: peak bytes %d (f32 %d)", c.dt, p.PeakBytes(), plain.PeakBytes())
	}
	if _, err := engine.Compile(n.g, cpuBackend, []*engine.Node{n.loss}, engine.CompileOptions{Save: engine.I32}); err == nil {
		t.Error("activations saved as i32 were accepted")
	}
}

func TestBufferReuseByLiveness(t *testing.T) {
	n := buildTinyNet(t, 9, 3)
	p := n.compile(t, engine.CompileOptions{})
	var total int64
	for _, node := range n.g.Nodes() {
		if node.Op() != nil {
			total += node.Meta().Bytes()
		}
	}
	require.Less(t, p.PlannedBytes(), total/2, "buffers must be shared between values whose lifetimes do not overlap")
	require.LessOrEqual(t, p.PeakBytes(), p.PlannedBytes())
	// A program runs many times with the same result.
	a := lossOf(t, p, n)
	require.Equal(t, a, lossOf(t, p, n))
}
