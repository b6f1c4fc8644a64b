package model

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
)

// Linear is one frozen projection of the base model, y = x·Wᵀ (+ bias): W dense f32 [Out, In], or
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
}

// Forward records the plain projection.
func (l *Linear) Forward(g *engine.Graph, x *engine.Node) *engine.Node {
	var y *engine.Node
	if l.Quant != nil {
		y = g.QMatMul(x, l.Packed, l.Absmax, *l.Quant)
	} else {
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
}

// QuantFunc says whether (and how) the linear layer with the given module name is stored in 4 bits;
// nil means dense.
type QuantFunc func(name string, out, in int) *engine.QuantSpec

// NewGraph declares the model's parameters in g with their checkpoint names.
func NewGraph(cfg *Config, g *engine.Graph, quant QuantFunc) *Graph {
	m := &Graph{Cfg: cfg, G: g}
	h, kv := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	param := func(name string, shape ...int) *engine.Node {
		return g.Param(name, engine.F32, engine.Shape(shape), false)
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
	return m.forward(ids, pos, batch, seq, lin, nil)
}

// KVCache names the per-layer key and value cache inputs of a generation step: K[l] and V[l] are
// [batch·maxLen, kvHeads·headDim], maxLen rows a sequence; the step's tokens are written at rows
// Offset.. of their sequence and attend to its rows 0..Offset+seq.
type KVCache struct {
	K, V   []*engine.Node
	Offset int
}

// ForwardCached records one generation step of batch sequences in lockstep: seq new tokens each
// (ids and pos: [batch·seq]) at positions Offset.., whose keys and values are written into the
// cache, attending to everything cached before them. It returns the logits [batch·seq, vocab].
func (m *Graph) ForwardCached(ids, pos *engine.Node, batch, seq int, lin LinearFunc, c *KVCache) *engine.Node {
	return m.forward(ids, pos, batch, seq, lin, c)
}

func (m *Graph) forward(ids, pos *engine.Node, batch, seq int, lin LinearFunc, cache *KVCache) *engine.Node {
	g, c := m.G, m.Cfg
	if lin == nil {
		lin = PlainLinear
	}
	kvLen := seq
	if cache != nil {
		kvLen = cache.Offset + seq
	}
	invFreq, attnScale := c.Rope(kvLen)
	eps := float32(c.RMSNormEps)
	h := g.Embedding(m.Embed, ids)
	att := engine.Attention{Batch: batch, QLen: seq, KVLen: kvLen, Heads: c.NumHeads, KVHeads: c.NumKVHeads,
		HeadDim: c.HeadDim, Scale: float32(1 / math.Sqrt(float64(c.HeadDim)))}
	if cache != nil {
		att.KVStride = cache.K[0].Shape()[0] / batch
	}
	for i, l := range m.Layers {
		g.BeginBlock()
		x := g.RMSNorm(h, l.AttnNorm, eps)
		q := g.RoPE(lin(g, l.Q, x), pos, c.NumHeads, c.HeadDim, invFreq, attnScale)
		k := g.RoPE(lin(g, l.K, x), pos, c.NumKVHeads, c.HeadDim, invFreq, attnScale)
		v := lin(g, l.V, x)
		if cache != nil {
			k = g.Apply1(engine.CacheWrite{Offset: cache.Offset, Batch: batch}, cache.K[i], k)
			v = g.Apply1(engine.CacheWrite{Offset: cache.Offset, Batch: batch}, cache.V[i], v)
		}
		h = g.Add(h, lin(g, l.O, g.Attention(q, k, v, att)))
		x = g.RMSNorm(h, l.MLPNorm, eps)
		ff := g.SwiGLU(lin(g, l.Gate, x), lin(g, l.Up, x))
		h = g.Add(h, lin(g, l.Down, ff))
		g.EndBlock()
	}
	h = g.RMSNorm(h, m.Norm, eps)
	if m.LMHead == nil {
		return g.MatMul(h, m.Embed, false, true)
	}
	return lin(g, m.LMHead, h)
}
