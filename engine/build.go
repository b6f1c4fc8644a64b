package engine

import "fmt"

// Convenience builders: one method per op, each a thin wrapper over Apply.

// MatMul records op(a)·op(b); with a 16-bit (frozen) b and no TransA, the MatMul16 fast path.
func (g *Graph) MatMul(a, b *Node, transA, transB bool) *Node {
	if b != nil && IsHalf(b.meta.DType) && !transA {
		return g.Apply1(MatMul16{TransW: !transB}, a, b)
	}
	return g.Apply1(MatMul{TransA: transA, TransB: transB}, a, b)
}

// QMatMul records x·Wᵀ for a frozen 4-bit W given as packed and absmax.
func (g *Graph) QMatMul(x, packed, absmax *Node, q QuantSpec) *Node {
	return g.Apply1(QMatMul{Quant: q}, x, packed, absmax)
}

// Dequantize4 records the decoding of a 4-bit weight into f32 [N, K].
func (g *Graph) Dequantize4(packed, absmax *Node, q QuantSpec) *Node {
	return g.Apply1(Dequantize4{Quant: q}, packed, absmax)
}

// LoRA records the fused y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ with a dense W.
func (g *Graph) LoRA(x, w, a, b *Node, scale float32) *Node {
	return g.Apply(LoRA{Scale: scale}, x, w, a, b)[0]
}

// QLoRA records the fused y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ with a 4-bit W.
func (g *Graph) QLoRA(x, packed, absmax, a, b *Node, q QuantSpec, scale float32) *Node {
	return g.Apply(LoRA{Scale: scale, Quant: &q}, x, packed, absmax, a, b)[0]
}

// ScaleCols records IA3's x ⊙ l.
func (g *Graph) ScaleCols(x, l *Node) *Node { return g.Apply1(ScaleCols{}, x, l) }

// DivSqrt records x ⊘ sqrt(n) with n: [dim] broadcast over x's rows and detached (no gradient
// flows into n).
func (g *Graph) DivSqrt(x, n *Node) *Node { return g.Apply1(DivSqrt{}, x, n) }

// RMSNorm records x / rms(x) ⊙ w.
func (g *Graph) RMSNorm(x, w *Node, eps float32) *Node { return g.Apply1(RMSNorm{Eps: eps}, x, w) }

// RoPE records the rotary embedding of x at positions pos.
func (g *Graph) RoPE(x, pos *Node, heads, headDim int, invFreq []float32, attnScale float32) *Node {
	return g.Apply1(RoPE{Heads: heads, HeadDim: headDim, InvFreq: invFreq, AttnScale: attnScale}, x, pos)
}

// Attention records causal grouped-query attention and returns its output.
func (g *Graph) Attention(q, k, v *Node, a Attention) *Node { return g.Apply(a, q, k, v)[0] }

// CachedAttention records attention over a KV cache of a.KVStride-row slots, each query at its
// cache row (rows: i32 [a.Batch·a.QLen]); see Attention.
func (g *Graph) CachedAttention(q, k, v, rows *Node, a Attention) *Node {
	if a.KVStride <= 0 {
		return g.fail(fmt.Errorf("cached attention needs a KV stride"))
	}
	return g.Apply(a, q, k, v, rows)[0]
}

// DocAttention records attention over packed documents: each query sees the keys of its own
// document only, from starts (i32 [a.Batch·a.QLen], the first key's index in the sequence) to
// itself; see Attention's Docs.
func (g *Graph) DocAttention(q, k, v, starts *Node, a Attention) *Node {
	a.Docs = true
	return g.Apply(a, q, k, v, starts)[0]
}

// CacheWrite records the in-place write of src's rows into cache at rows (i32 [rows of src]).
func (g *Graph) CacheWrite(cache, src, rows *Node) *Node {
	return g.Apply1(CacheWrite{}, cache, src, rows)
}

// SiLU records x·sigmoid(x).
func (g *Graph) SiLU(x *Node) *Node { return g.Apply1(Unary{Fn: SiLU}, x) }

// SwiGLU records silu(gate) ⊙ up.
func (g *Graph) SwiGLU(gate, up *Node) *Node { return g.Apply1(SwiGLU{}, gate, up) }

// Softmax records a softmax over the last dimension.
func (g *Graph) Softmax(x *Node) *Node { return g.Apply1(Softmax{}, x) }

// Embedding records the gather of table rows by ids; a 16-bit (frozen) table gives Embedding16.
func (g *Graph) Embedding(table, ids *Node) *Node {
	if table != nil && IsHalf(table.meta.DType) {
		return g.Apply1(Embedding16{}, table, ids)
	}
	return g.Apply1(Embedding{}, table, ids)
}

// Gather records the rows of table that ids pick, rows of pad where an id is negative.
func (g *Graph) Gather(table, ids *Node, pad float32) *Node {
	return g.Apply1(Embedding{Pad: true, PadValue: pad}, table, ids)
}

// CrossEntropy records the mean cross-entropy of logits against targets, ignoring target ignore.
func (g *Graph) CrossEntropy(logits, targets *Node, ignore int32) *Node {
	return g.Apply1(CrossEntropy{Ignore: ignore}, logits, targets)
}

// Add records a + b.
func (g *Graph) Add(a, b *Node) *Node { return g.Apply1(Binary{Fn: Add}, a, b) }

// Mul records a ⊙ b.
func (g *Graph) Mul(a, b *Node) *Node { return g.Apply1(Binary{Fn: Mul}, a, b) }

// Scale records s·x.
func (g *Graph) Scale(x *Node, s float32) *Node { return g.Apply1(Scale{S: s}, x) }

// AddBias records x + b with b broadcast over rows.
func (g *Graph) AddBias(x, b *Node) *Node { return g.Apply1(AddBias{}, x, b) }

// Sum records the sum of all elements.
func (g *Graph) Sum(x *Node) *Node { return g.Apply1(Sum{}, x) }

// Cast records a conversion between float types.
func (g *Graph) Cast(x *Node, to DType) *Node {
	if x.meta.DType == to {
		return x
	}
	return g.Apply1(Cast{To: to}, x)
}

// Reshape records a view of x with another shape.
func (g *Graph) Reshape(x *Node, shape ...int) *Node {
	if x.meta.Shape.Equal(shape) {
		return x
	}
	return g.Apply1(Reshape{Shape: Shape(shape).Clone()}, x)
}

// Dropout records dropout of x with probability p, the step's seed (i32 [1]) and a salt that
// tells this op's mask from other ops'; p == 0 records nothing.
func (g *Graph) Dropout(x, seed *Node, p float32, salt uint32) *Node {
	if p == 0 {
		return x
	}
	return g.Apply1(Dropout{P: p, Salt: salt}, x, seed)
}

// GatherLoRA records y plus, on each row, the LoRA delta of the pool slot sel picks (see the op).
func (g *Graph) GatherLoRA(y, x, sel, a, b *Node, rank int) *Node {
	return g.Apply1(GatherLoRA{R: rank}, y, x, sel, a, b)
}

// GatherScaleCols records IA3's scaling of each row of x by the pool vector sel picks.
func (g *Graph) GatherScaleCols(x, sel, l *Node) *Node {
	return g.Apply1(GatherScaleCols{}, x, sel, l)
}
