package model

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
)

// Linear is one frozen projection of the base model, y = x·Wᵀ (+ bias): W dense [Out, In] (f32, or
// f16/bf16 as the checkpoint stores it), or
// 4-bit (Packed and Absmax with Quant), as graph parameters named after the checkpoint's tensors.
type Linear struct {
	// Name is the module path, e.g. "model.layers.0.self_attn.q_proj".
	Name    string
	In, Out int
	W       *engine.Node
	Packed  *engine.Node
	Absmax  *engine.Node
	Quant   *engine.QuantSpec
	Bias    *engine.Node
	// Compute is the precision a 16-bit W's product may take (engine.MatMul16.Compute,
	// LoadOptions.Compute); a 4-bit W's is in its Quant.
	Compute engine.DType
}

// Forward records the plain projection.
func (l *Linear) Forward(g *engine.Graph, x *engine.Node) *engine.Node {
	var y *engine.Node
	switch {
	case l.Quant != nil:
		y = g.QMatMul(x, l.Packed, l.Absmax, *l.Quant)
	case l.Compute != engine.F32 && engine.IsHalf(l.W.DType()):
		y = g.Apply1(engine.MatMul16{Compute: l.Compute}, x, l.W)
	default:
		y = g.MatMul(x, l.W, false, true)
	}
	return l.AddBias(g, y)
}

// AddBias adds the layer's bias, if it has one.
func (l *Linear) AddBias(g *engine.Graph, y *engine.Node) *engine.Node {
	if l.Bias == nil {
		return y
	}
	return g.AddBias(y, l.Bias)
}

// LinearFunc records a linear layer: adapters (LoRA, IA3) wrap the base projection here.
type LinearFunc func(g *engine.Graph, l *Linear, x *engine.Node) *engine.Node

// PlainLinear records the base projection with no adapter.
func PlainLinear(g *engine.Graph, l *Linear, x *engine.Node) *engine.Node { return l.Forward(g, x) }

// Layer holds the parameters of one decoder layer.
type Layer struct {
	AttnNorm, MLPNorm *engine.Node
	Q, K, V, O        *Linear
	Gate, Up, Down    *Linear
}

// Graph is a Llama-family decoder recorded in an engine graph: the parameters as named nodes (to be
// bound to the checkpoint's tensors) and the layers that use them.
type Graph struct {
	Cfg    *Config
	G      *engine.Graph
	Embed  *engine.Node
	Layers []Layer
	Norm   *engine.Node
	// LMHead is nil when the output projection is tied to the embedding.
	LMHead *Linear
	// Out, when not nil, is the output projection of generation steps (ForwardCached): the
	// 16- or 4-bit copy LoadOptions.Head made of lm_head or of the tied embedding, named
	// "lm_head" for adapters. Forward and the other graphs use LMHead or the embedding.
	Out *Linear
}

// QuantFunc says whether (and how) the linear layer with the given module name is stored in 4 bits;
// nil means dense.
type QuantFunc func(name string, out, in int) *engine.QuantSpec

// NewGraph declares the model's parameters in g with their checkpoint names, every dense weight f32.
func NewGraph(cfg *Config, g *engine.Graph, quant QuantFunc) *Graph {
	return newGraph(cfg, g, quant, nil)
}

// newGraph is NewGraph with the element type of each dense matrix (the linear layers' weights,
// the embedding, lm_head) given by dtype (nil: f32); vectors (norms, biases) are always f32.
func newGraph(cfg *Config, g *engine.Graph, quant QuantFunc, dtype func(name string) engine.DType) *Graph {
	m := &Graph{Cfg: cfg, G: g}
	h, kv := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	param := func(name string, shape ...int) *engine.Node {
		dt := engine.F32
		if dtype != nil && len(shape) == 2 {
			dt = dtype(name)
		}
		return g.Param(name, dt, engine.Shape(shape), false)
	}
	linear := func(name string, out, in int, bias bool) *Linear {
		l := &Linear{Name: name, In: in, Out: out}
		if q := quantOf(quant, name, out, in); q != nil {
			numel := out * in
			l.Quant = q
			l.Packed = g.Param(name+".weight", engine.U8, engine.Shape{(numel + 1) / 2}, false)
			l.Absmax = param(name+".weight.absmax", (numel+q.Blocksize-1)/q.Blocksize)
		} else {
			l.W = param(name+".weight", out, in)
		}
		if bias {
			l.Bias = param(name+".bias", out)
		}
		return l
	}
	m.Embed = param("model.embed_tokens.weight", cfg.VocabSize, cfg.HiddenSize)
	qkvBias := cfg.AttentionBias
	oBias := cfg.AttentionBias && !cfg.IsQwen2()
	for i := 0; i < cfg.NumLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		m.Layers = append(m.Layers, Layer{
			AttnNorm: param(p+"input_layernorm.weight", cfg.HiddenSize),
			MLPNorm:  param(p+"post_attention_layernorm.weight", cfg.HiddenSize),
			Q:        linear(p+"self_attn.q_proj", h, cfg.HiddenSize, qkvBias),
			K:        linear(p+"self_attn.k_proj", kv, cfg.HiddenSize, qkvBias),
			V:        linear(p+"self_attn.v_proj", kv, cfg.HiddenSize, qkvBias),
			O:        linear(p+"self_attn.o_proj", cfg.HiddenSize, h, oBias),
			Gate:     linear(p+"mlp.gate_proj", cfg.IntermediateSize, cfg.HiddenSize, cfg.MLPBias),
			Up:       linear(p+"mlp.up_proj", cfg.IntermediateSize, cfg.HiddenSize, cfg.MLPBias),
			Down:     linear(p+"mlp.down_proj", cfg.HiddenSize, cfg.IntermediateSize, cfg.MLPBias),
		})
	}
	m.Norm = param("model.norm.weight", cfg.HiddenSize)
	if !cfg.TieWordEmbeddings {
		// transformers never quantizes lm_head.
		m.LMHead = &Linear{Name: "lm_head", In: cfg.HiddenSize, Out: cfg.VocabSize, W: param("lm_head.weight", cfg.VocabSize, cfg.HiddenSize)}
	}
	return m
}

// linears lists every projection of the graph: the layers', lm_head and the generation head.
func (m *Graph) linears() []*Linear {
	var ls []*Linear
	for _, l := range m.Layers {
		ls = append(ls, l.Q, l.K, l.V, l.O, l.Gate, l.Up, l.Down)
	}
	for _, l := range []*Linear{m.LMHead, m.Out} {
		if l != nil {
			ls = append(ls, l)
		}
	}
	return ls
}

func quantOf(f QuantFunc, name string, out, in int) *engine.QuantSpec {
	if f == nil {
		return nil
	}
	return f(name, out, in)
}

// Linears lists every linear layer of the decoder layers (not lm_head), in checkpoint order.
func (m *Graph) Linears() []*Linear {
	var ls []*Linear
	for _, l := range m.Layers {
		ls = append(ls, l.Q, l.K, l.V, l.O, l.Gate, l.Up, l.Down)
	}
	return ls
}

// Forward records the decoder on ids and pos (i32 [batch·seq], positions of each token) and returns
// the logits [batch·seq, vocab]. Each layer is a gradient-checkpointing block. lin records the
// linear layers (PlainLinear, or an adapter's).
func (m *Graph) Forward(ids, pos *engine.Node, batch, seq int, lin LinearFunc) *engine.Node {
	return m.forward(ids, pos, nil, batch, seq, lin, nil, nil)
}

// ForwardPacked is Forward over rows of packed documents: starts (i32 [batch·seq]) is each
// token's index, in its row, of its document's first token, and attention stays inside each
// document (pos should restart at each document for RoPE). A row holding one document is
// Forward's.
func (m *Graph) ForwardPacked(ids, pos, starts *engine.Node, batch, seq int, lin LinearFunc) *engine.Node {
	return m.forward(ids, pos, starts, batch, seq, lin, nil, nil)
}

// KVCache names the inputs of a generation step that reach its KV cache: K[l] and V[l] are layer
// l's keys and values, [slots·Stride, kvHeads·headDim], Stride rows a slot; Rows (i32 [tokens]) is
// the row of each fed token, slot·Stride + position. Each token's key and value are written at its
// row, and it attends to its slot's rows up to its own.
type KVCache struct {
	K, V   []*engine.Node
	Rows   *engine.Node
	Stride int
	// KVLen is the most positions any sequence holds after the step (it sets dynamic RoPE
	// scaling).
	KVLen int
}

// ForwardCached records one generation step: batch sequences of seq new tokens each (ids, pos and
// c.Rows: [batch·seq]), each sequence in its own slot of the cache at its own positions. It
// returns the logits of every token, [batch·seq, vocab], or with last (i32 [k], indices of fed
// tokens) only those of the tokens it names, [k, vocab].
func (m *Graph) ForwardCached(ids, pos *engine.Node, batch, seq int, lin LinearFunc, c *KVCache, last *engine.Node) *engine.Node {
	return m.forward(ids, pos, nil, batch, seq, lin, c, last)
}

// ForwardHidden records the decoder on ids and pos as Forward does and returns its last hidden
// states after the final norm, [batch·seq, hidden] (transformers' last_hidden_state), without the
// output layer: a sentence embedding is their mean.
func (m *Graph) ForwardHidden(ids, pos *engine.Node, batch, seq int, lin LinearFunc) *engine.Node {
	return m.hidden(ids, pos, nil, batch, seq, lin, nil, nil)
}

func (m *Graph) forward(ids, pos, starts *engine.Node, batch, seq int, lin LinearFunc, cache *KVCache, last *engine.Node) *engine.Node {
	if lin == nil {
		lin = PlainLinear
	}
	h := m.hidden(ids, pos, starts, batch, seq, lin, cache, last)
	if cache != nil && m.Out != nil {
		if m.LMHead == nil {
			return m.Out.Forward(m.G, h) // a tied embedding is no adapter's target
		}
		return lin(m.G, m.Out, h)
	}
	if m.LMHead == nil {
		return m.G.MatMul(h, m.Embed, false, true)
	}
	return lin(m.G, m.LMHead, h)
}

// hidden records the decoder layers and the final norm (see forward).
func (m *Graph) hidden(ids, pos, starts *engine.Node, batch, seq int, lin LinearFunc, cache *KVCache, last *engine.Node) *engine.Node {
	g, c := m.G, m.Cfg
	if lin == nil {
		lin = PlainLinear
	}
	kvLen := seq
	if cache != nil {
		kvLen = cache.Stride
	}
	invFreq, attnScale := c.Rope(kvLen)
	eps := float32(c.RMSNormEps)
	h := g.Embedding(m.Embed, ids)
	att := engine.Attention{Batch: batch, QLen: seq, KVLen: kvLen, Heads: c.NumHeads, KVHeads: c.NumKVHeads,
		HeadDim: c.HeadDim, Scale: float32(1 / math.Sqrt(float64(c.HeadDim)))}
	if cache != nil {
		att.KVStride = cache.Stride
		invFreq, attnScale = c.Rope(max(cache.KVLen, seq))
	}
	for i, l := range m.Layers {
		g.BeginBlock()
		x := g.RMSNorm(h, l.AttnNorm, eps)
		q := g.RoPE(lin(g, l.Q, x), pos, c.NumHeads, c.HeadDim, invFreq, attnScale)
		k := g.RoPE(lin(g, l.K, x), pos, c.NumKVHeads, c.HeadDim, invFreq, attnScale)
		v := lin(g, l.V, x)
		var a *engine.Node
		if cache != nil {
			k = g.CacheWrite(cache.K[i], k, cache.Rows)
			v = g.CacheWrite(cache.V[i], v, cache.Rows)
			a = g.CachedAttention(q, k, v, cache.Rows, att)
		} else if starts != nil {
			a = g.DocAttention(q, k, v, starts, att)
		} else {
			a = g.Attention(q, k, v, att)
		}
		h = g.Add(h, lin(g, l.O, a))
		x = g.RMSNorm(h, l.MLPNorm, eps)
		ff := g.SwiGLU(lin(g, l.Gate, x), lin(g, l.Up, x))
		h = g.Add(h, lin(g, l.Down, ff))
		g.EndBlock()
	}
	if last != nil {
		// Only these tokens' logits are wanted: the final norm and the output layer (the
		// largest matrix of a small model) skip the others. Embedding gathers rows.
		h = g.Embedding(h, last)
	}
	return g.RMSNorm(h, m.Norm, eps)
}
