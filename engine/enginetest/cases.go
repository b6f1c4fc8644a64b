package enginetest

import (
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/engine"
)

// builder collects the leaves of a case.
type builder struct {
	g      *engine.Graph
	r      *rand.Rand
	leaves []Leaf
}

func (b *builder) f32(shape engine.Shape, scale float64) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.F32, shape)
	v := make([]float32, shape.Numel())
	for i := range v {
		v[i] = float32(b.r.NormFloat64() * scale)
	}
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

// pos returns values in (lo, hi): gains and IA3 vectors that keep signs.
func (b *builder) pos(shape engine.Shape, lo, hi float64) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.F32, shape)
	v := make([]float32, shape.Numel())
	for i := range v {
		v[i] = float32(lo + (hi-lo)*b.r.Float64())
	}
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

func (b *builder) i32(v []int32) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.I32, engine.Shape{len(v)})
	b.leaves = append(b.leaves, Leaf{Node: n, I32: v})
	return n
}

func (b *builder) ints(n, lo, hi int) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(lo + b.r.IntN(hi-lo))
	}
	return v
}

// quant4 adds a random 4-bit weight [n, k] (packed bytes and positive absmax).
func (b *builder) quant4(n, k, blocksize int, code [16]float32) (packed, absmax *engine.Node, q engine.QuantSpec) {
	numel := n * k
	raw := make([]byte, (numel+1)/2)
	for i := range raw {
		raw[i] = byte(b.r.IntN(256))
	}
	packed = b.g.Input(leafName(len(b.leaves)), engine.U8, engine.Shape{len(raw)})
	b.leaves = append(b.leaves, Leaf{Node: packed, U8: raw})
	absmax = b.pos(engine.Shape{(numel + blocksize - 1) / blocksize}, 0.05, 1)
	return packed, absmax, engine.QuantSpec{Type: "nf4", Code: code, Blocksize: blocksize, N: n, K: k}
}

func leafName(i int) string { return "in" + string(rune('a'+i%26)) + string(rune('0'+i/26)) }

// nf4 is bitsandbytes' NF4 code (a copy, so that this package needs only engine).
var nf4 = [16]float32{-1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0, 0.07958029955625534,
	0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434,
	0.5626170039176941, 0.7229568362236023, 1}

func c(name string, tol float64, f func(b *builder) []*engine.Node) Case {
	return Case{Name: name, Tol: tol, Build: func(g *engine.Graph, r *rand.Rand) ([]Leaf, []*engine.Node) {
		b := &builder{g: g, r: r}
		outs := f(b)
		return b.leaves, outs
	}}
}

func invFreq(headDim int) []float32 {
	f := make([]float32, headDim/2)
	for i := range f {
		f[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(headDim)))
	}
	return f
}

// Cases returns every conformance case. Shapes are odd on purpose: tiles of 8, 16, 32 or 64 never
// divide them.
func Cases() []Case {
	const tol = 1e-4
	var cs []Case
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		tr := tr
		name := map[[2]bool]string{{false, false}: "nn", {false, true}: "nt", {true, false}: "tn", {true, true}: "tt"}[tr]
		cs = append(cs, c("matmul/"+name, tol, func(b *builder) []*engine.Node {
			m, n, k := 37, 29, 53
			sa, sb := engine.Shape{m, k}, engine.Shape{k, n}
			if tr[0] {
				sa = engine.Shape{k, m}
			}
			if tr[1] {
				sb = engine.Shape{n, k}
			}
			return []*engine.Node{b.g.MatMul(b.f32(sa, 1), b.f32(sb, 1), tr[0], tr[1])}
		}))
	}
	cs = append(cs,
		c("matmul/gemv", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{1, 131}, 1), b.f32(engine.Shape{77, 131}, 1), false, true)}
		}),
		c("qmatmul/gemv", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, nf4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{1, 67}, 1), p, a, q)}
		}),
		c("qmatmul/gemm", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 32, nf4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{9, 67}, 1), p, a, q)}
		}),
		c("qmatmul/transposed", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, nf4)
			return []*engine.Node{b.g.Apply1(engine.QMatMul{Quant: q, TransW: true}, b.f32(engine.Shape{9, 45}, 1), p, a)}
		}),
		c("lora/dense", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5}, b.f32(engine.Shape{11, 41}, 1), b.f32(engine.Shape{23, 41}, 0.5),
				b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5))[:2]
		}),
		c("lora/nf4", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{11, 41}, 1)
			p, a, q := b.quant4(23, 41, 64, nf4)
			return b.g.Apply(engine.LoRA{Scale: 0.7, Quant: &q}, x, p, a, b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5))[:2]
		}),
		c("lora_backward/dense", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			w, a, bb, xa := b.f32(engine.Shape{23, 41}, 0.5), b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.f32(engine.Shape{11, 5}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 1.5, NeedX: true, NeedA: true, NeedB: true}, dy, x, w, a, bb, xa)[:3]
		}),
		c("lora_backward/nf4", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			p, am, q := b.quant4(23, 41, 64, nf4)
			a, bb, xa := b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5), b.f32(engine.Shape{11, 3}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 0.7, Quant: &q, NeedX: true, NeedA: true, NeedB: true}, dy, x, p, am, a, bb, xa)[:3]
		}),
		c("scale_cols", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.ScaleCols(b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.5, 1.5))}
		}),
		c("scale_cols_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.ScaleColsBackward{NeedX: true, NeedL: true}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.5, 1.5))[:2]
		}),
		c("rmsnorm", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.RMSNorm(b.f32(engine.Shape{7, 93}, 1), b.pos(engine.Shape{93}, 0.5, 1.5), 1e-5)}
		}),
		c("rmsnorm_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.RMSNormBackward{Eps: 1e-5, NeedX: true, NeedW: true}, b.f32(engine.Shape{7, 93}, 1), b.f32(engine.Shape{7, 93}, 1), b.pos(engine.Shape{93}, 0.5, 1.5))[:2]
		}),
		c("rope", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{9, 3 * 10}, 1)
			return []*engine.Node{b.g.RoPE(x, b.i32(b.ints(9, 0, 500)), 3, 10, invFreq(10), 1)}
		}),
		c("rope/inverse", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{9, 3 * 10}, 1)
			return []*engine.Node{b.g.Apply1(engine.RoPE{Heads: 3, HeadDim: 10, InvFreq: invFreq(10), AttnScale: 1.1, Inverse: true}, x, b.i32(b.ints(9, 0, 500)))}
		}),
		c("attention/prefill", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 9, KVLen: 9, Heads: 6, KVHeads: 2, HeadDim: 10, Scale: float32(1 / math.Sqrt(10))}
			return b.g.Apply(a, b.f32(engine.Shape{18, 60}, 1), b.f32(engine.Shape{18, 20}, 1), b.f32(engine.Shape{18, 20}, 1))[:2]
		}),
		c("attention/decode", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 1, QLen: 1, KVLen: 13, Heads: 6, KVHeads: 3, HeadDim: 10, Scale: 0.3}
			return b.g.Apply(a, b.f32(engine.Shape{1, 60}, 1), b.f32(engine.Shape{13, 30}, 1), b.f32(engine.Shape{13, 30}, 1))[:2]
		}),
		c("attention_backward", 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 5, KVLen: 7, Heads: 6, KVHeads: 2, HeadDim: 10, Scale: float32(1 / math.Sqrt(10))}
			q, k, v := b.f32(engine.Shape{10, 60}, 1), b.f32(engine.Shape{14, 20}, 1), b.f32(engine.Shape{14, 20}, 1)
			fwd := b.g.Apply(a, q, k, v)
			dout := b.f32(engine.Shape{10, 60}, 1)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, dout, q, k, v, fwd[0], fwd[1])[:3]
		}),
		// Packed documents: each query sees its own document only (Docs, per-query starts).
		// Two sequences of 150 (three query blocks and key tiles on a GPU, the last block's
		// documents starting past the first tile), documents crossing block edges; then few
		// queries (the per-query kernels); then the backward.
		c("attention/docs", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 150, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(1, 30, 9, 3, 107), docStarts(131, 19)...))
			return b.g.Apply(a, b.f32(engine.Shape{300, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1), starts)[:2]
		}),
		c("attention/docs_short", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 6, KVLen: 6, Heads: 6, KVHeads: 3, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(2, 3, 1), docStarts(6)...))
			return b.g.Apply(a, b.f32(engine.Shape{12, 60}, 1), b.f32(engine.Shape{12, 30}, 1), b.f32(engine.Shape{12, 30}, 1), starts)[:2]
		}),
		c("attention_backward/docs", 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 150, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(5, 60, 5, 80), docStarts(1, 1, 130, 18)...))
			q, k, v := b.f32(engine.Shape{300, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1)
			fwd := b.g.Apply(a, q, k, v, starts)
			dout := b.f32(engine.Shape{300, 40}, 1)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, dout, q, k, v, fwd[0], fwd[1], starts)[:3]
		}),
		c("silu", tol, func(b *builder) []*engine.Node { return []*engine.Node{b.g.SiLU(b.f32(engine.Shape{13, 37}, 2))} }),
		c("silu_backward", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Apply1(engine.UnaryBackward{Fn: engine.SiLU}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 2))}
		}),
		c("swiglu", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.SwiGLU(b.f32(engine.Shape{13, 37}, 2), b.f32(engine.Shape{13, 37}, 1))}
		}),
		c("swiglu_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.SwiGLUBackward{NeedGate: true, NeedUp: true}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 2), b.f32(engine.Shape{13, 37}, 1))[:2]
		}),
		c("softmax", tol, func(b *builder) []*engine.Node { return []*engine.Node{b.g.Softmax(b.f32(engine.Shape{7, 301}, 3))} }),
		c("softmax_backward", tol, func(b *builder) []*engine.Node {
			y := b.g.Softmax(b.f32(engine.Shape{7, 301}, 3))
			return []*engine.Node{b.g.Apply1(engine.SoftmaxBackward{}, b.f32(engine.Shape{7, 301}, 1), y)}
		}),
		c("embedding", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Embedding(b.f32(engine.Shape{53, 19}, 1), b.i32(b.ints(23, 0, 53)))}
		}),
		c("embedding_backward", tol, func(b *builder) []*engine.Node {
			ids := b.ints(23, 0, 7) // repeated ids accumulate
			return []*engine.Node{b.g.Apply1(engine.EmbeddingBackward{Vocab: 11}, b.f32(engine.Shape{23, 19}, 1), b.i32(ids))}
		}),
		c("cross_entropy", tol, func(b *builder) []*engine.Node {
			t := b.ints(17, 0, 301)
			t[3], t[8] = -100, -100
			return []*engine.Node{b.g.CrossEntropy(b.f32(engine.Shape{17, 301}, 3), b.i32(t), -100)}
		}),
		c("cross_entropy_backward", tol, func(b *builder) []*engine.Node {
			t := b.ints(17, 0, 301)
			t[3] = -100
			return []*engine.Node{b.g.Apply1(engine.CrossEntropyBackward{Ignore: -100}, b.pos(engine.Shape{1}, 0.5, 2), b.f32(engine.Shape{17, 301}, 3), b.i32(t))}
		}),
		c("elementwise", tol, func(b *builder) []*engine.Node {
			x, y := b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 1)
			g := b.g
			return []*engine.Node{g.Add(x, y), g.Mul(x, y), g.Scale(x, -0.7), g.AddBias(x, b.f32(engine.Shape{37}, 1)),
				g.Apply1(engine.SumRows{}, x), g.Sum(y), g.Apply1(engine.SumSquares{}, x),
				g.Apply1(engine.Expand{Shape: engine.Shape{3, 5}}, b.f32(engine.Shape{1}, 1)),
				g.Apply1(engine.Fill{Shape: engine.Shape{7}, Value: 2.5})}
		}),
		c("dropout", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Dropout(b.f32(engine.Shape{13, 37}, 1), b.i32([]int32{12345}), 0.3, 77)}
		}),
		c("cast", 0, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{13, 37}, 10)
			g := b.g
			return []*engine.Node{g.Cast(x, engine.F16), g.Cast(x, engine.BF16), g.Cast(g.Cast(x, engine.BF16), engine.F32)}
		}),
		c("adamw", 1e-5, func(b *builder) []*engine.Node {
			s := engine.Shape{13, 37}
			op := engine.AdamW{Step: 3, LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
			return b.g.Apply(op, b.f32(s, 1), b.f32(s, 1), b.f32(s, 0.1), b.pos(s, 0.001, 0.01))[:3]
		}),
	)
	return cs
}

// CacheCases check the in-place KV-cache write and attention over a cache of slots: sequences of
// different lengths in any slots, decoding (one query each) and prefilling (many).
func CacheCases() []Case {
	const kvDim, heads, headDim = 20, 4, 10
	// ragged writes each sequence's new rows (slot·stride + position) into a cache of slots, then
	// attends from them.
	seq := func(first, n int) []int32 {
		rows := make([]int32, n)
		for i := range rows {
			rows[i] = int32(first + i)
		}
		return rows
	}
	ragged := func(slots, stride, qlen int, rows []int32) func(b *builder) []*engine.Node {
		return func(b *builder) []*engine.Node {
			n := len(rows)
			kc, vc := b.f32(engine.Shape{slots * stride, kvDim}, 1), b.f32(engine.Shape{slots * stride, kvDim}, 1)
			r := b.i32(rows)
			k := b.g.Apply1(engine.CacheWrite{}, kc, b.f32(engine.Shape{n, kvDim}, 1), r)
			v := b.g.Apply1(engine.CacheWrite{}, vc, b.f32(engine.Shape{n, kvDim}, 1), r)
			a := engine.Attention{Batch: n / qlen, QLen: qlen, KVLen: stride, Heads: heads, KVHeads: 2, HeadDim: headDim, Scale: 0.3, KVStride: stride}
			outs := b.g.Apply(a, b.f32(engine.Shape{n, heads * headDim}, 1), k, v, r)
			return []*engine.Node{outs[0], outs[1], k, v}
		}
	}
	return []Case{
		// Three sequences, two new tokens each: slot 2 at positions 5-6, slot 0 at 0-1 (its
		// first tokens), slot 3 at 14-15 (the slot's last rows).
		c("cache_attention/ragged", 1e-4, ragged(4, 16, 2, []int32{37, 38, 0, 1, 62, 63})),
		// Decoding: one token for each of five sequences of different lengths.
		c("cache_attention/decode", 1e-4, ragged(6, 16, 1, []int32{16 + 9, 0, 80 + 15, 48 + 3, 32 + 12})),
		// Prefill of one sequence in slot 1 of 3 after three cached tokens: 12 queries.
		c("cache_attention/prefill", 1e-4, ragged(3, 20, 12, []int32{23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34})),
		// A long prefill: 70 queries at positions 17-86 of slot 1 of 3 (two query blocks on a GPU).
		c("cache_attention/prefill_long", 1e-4, ragged(3, 100, 70, seq(117, 70))),
		// Two prefills of 20 queries in one step: slot 2 at positions 30-49, slot 0 at 0-19.
		c("cache_attention/prefill_batch", 1e-4, ragged(3, 100, 20, append(seq(230, 20), seq(0, 20)...))),
	}
}

// RowCases check the ops that give each row of a batch its own adapter from a pool.
func RowCases() []Case {
	return []Case{
		c("gather_lora", 1e-4, func(b *builder) []*engine.Node {
			// A pool of three adapters of rank 5 (padded), rows picking any or none.
			const n, din, dout, r, slots = 11, 37, 29, 5, 3
			x := b.f32(engine.Shape{n, din}, 1)
			sel := b.i32([]int32{1, -1, 2, 1, 0, 2, 1, -1, 0, 0, 2})
			y := b.f32(engine.Shape{n, dout}, 1)
			return []*engine.Node{b.g.GatherLoRA(y, x, sel, b.f32(engine.Shape{slots * r, din}, 0.3), b.f32(engine.Shape{slots * dout, r}, 0.3), r)}
		}),
		c("gather_scale_cols", 1e-5, func(b *builder) []*engine.Node {
			const n, d, slots = 7, 37, 4
			sel := b.i32([]int32{0, 3, 3, -1, 2, 0, 1})
			return []*engine.Node{b.g.GatherScaleCols(b.f32(engine.Shape{n, d}, 1), sel, b.pos(engine.Shape{slots, d}, 0.5, 1.5))}
		}),
	}
}

// docStarts is the per-query document starts of one sequence packed from documents of the given
// lengths: each token's index of its document's first token.
func docStarts(lens ...int) []int32 {
	var st []int32
	for _, n := range lens {
		first := int32(len(st))
		for range n {
			st = append(st, first)
		}
	}
	return st
}
