package engine

import "fmt"

// The core op set: what every backend must implement. Everything else is a fast path: a fused or
// adapter op that a backend may refuse in Supports, and that Compile then rewrites into core ops
// (see Decomposable). A new backend implements these 28 kernels (Reshape is a view and needs
// none) and passes engine/enginetest.
//
//	MatMul, Dequantize4                              matrix products, 4-bit weights decoded
//	RMSNorm, RMSNormBackward, RoPE                   normalisation and positions
//	Attention, AttentionBackward, CacheWrite         attention and the KV cache
//	Unary, UnaryBackward, Softmax                    activations
//	Embedding, EmbeddingBackward                     token embeddings, gathers
//	CrossEntropy, CrossEntropyBackward               the loss
//	Binary, Scale, DivSqrt                           elementwise (DivSqrt: DoRA's detached norm)
//	SumRows, Fill                                    reductions, constants
//	Cast, Dropout                                    conversion, dropout
//	SumSquaresN, ClipStatus, AdamWStep, Accumulate   the optimizer inside the step program (Accumulate
//	                                                 on spans also packs data parallelism's gradients)
//	AdamW8bitStep                                    its 8-bit moments (bitsandbytes' blockwise)
//	TopK                                             sampling candidates on the device
//	Reshape                                          a view (no kernel)
//
// The fast paths: QMatMul (the 4-bit product that never writes the decoded weight), MatMul16 and
// Embedding16 (frozen f16/bf16 weights read as stored; see half.go), LoRA and
// LoRABackward (fused LoRA, dense or 4-bit, with dropout), SwiGLU and
// SwiGLUBackward, the adapter pool's GatherLoRA and GatherScaleCols, and the broadcasts and
// reductions with a plain formulation: ScaleCols, ScaleColsBackward, AddBias, Sum, Expand and
// SoftmaxBackward.
var coreOps = []string{"matmul", "dequantize4", "rmsnorm", "rmsnorm_backward", "rope", "attention",
	"attention_backward", "cache_write", "silu", "silu_backward", "softmax",
	"embedding", "embedding_backward", "cross_entropy", "cross_entropy_backward", "add", "mul",
	"scale", "div_sqrt", "sum_rows", "fill", "cast_f32", "cast_f16", "cast_bf16", "dropout",
	"reshape", "sum_squares_n", "clip_status", "adamw_step", "adamw8bit_step", "accumulate", "top_k"}

// IsCore reports whether op belongs to the core op set every backend implements.
func IsCore(op Op) bool {
	if _, ok := op.(Decomposable); ok {
		return false
	}
	name := op.Name()
	for _, c := range coreOps {
		if c == name {
			return true
		}
	}
	return false
}

// Decomposable is implemented by the fast-path ops: Decompose records, in g, core ops (or other
// decomposable ops) that compute the same outputs from the same operands, and returns one node
// per output. Compile calls it when a backend's Supports refuses the op.
type Decomposable interface {
	Op
	Decompose(g *Graph, in []*Node) ([]*Node, error)
}

// Decompose: the weight decoded (Dequantize4), then a MatMul.
func (o QMatMul) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	w := g.Dequantize4(in[1], in[2], o.Quant)
	return []*Node{g.MatMul(in[0], w, false, !o.TransW)}, g.err
}

// Decompose: y = x·Wᵀ + s·(d(x)·Aᵀ)·Bᵀ and xa from MatMul or QMatMul, Dropout, Scale and Add.
func (o LoRA) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	nw, ns := o.Operands()
	x, a, b := in[0], in[1+nw], in[2+nw]
	var y *Node
	if o.Quant != nil {
		y = g.Apply1(QMatMul{Quant: *o.Quant}, x, in[1], in[2])
	} else {
		y = g.MatMul(x, in[1], false, true)
	}
	xd := x
	if ns > 0 {
		xd = g.Dropout(x, in[3+nw], o.Dropout, o.Salt)
	}
	xa := g.MatMul(xd, a, false, true)
	y = g.Add(y, g.Scale(g.MatMul(xa, b, false, true), o.Scale))
	return []*Node{y, xa}, g.err
}

// Decompose: t = dy·B, dx = dy·W + d(s·t·A), dA = s·tᵀ·d(x), dB = s·dyᵀ·xa.
func (o LoRABackward) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	fop := o.Forward()
	nw, ns := fop.Operands()
	fwd := in[1 : len(in)-1]
	dy, x, xa := in[0], fwd[0], in[len(in)-1]
	a, b := fwd[1+nw], fwd[2+nw]
	rows := x.meta.Shape.Rows()
	drop := func(v *Node) *Node {
		if ns == 0 {
			return v
		}
		return g.Dropout(v, fwd[3+nw], o.Dropout, o.Salt)
	}
	var res []*Node
	var t *Node
	if o.NeedX || o.NeedA {
		t = g.MatMul(dy, b, false, false)
	}
	if o.NeedX {
		var base *Node
		if o.Quant != nil {
			base = g.Apply1(QMatMul{Quant: *o.Quant, TransW: true}, dy, fwd[1], fwd[2])
		} else {
			base = g.MatMul(dy, fwd[1], false, false)
		}
		res = append(res, g.Add(base, drop(g.Scale(g.MatMul(t, a, false, false), o.Scale))))
	}
	if o.NeedA {
		t2 := g.Reshape(t, rows, t.meta.Shape.Last())
		xd := g.Reshape(drop(x), rows, x.meta.Shape.Last())
		res = append(res, g.Scale(g.MatMul(t2, xd, true, false), o.Scale))
	}
	if o.NeedB {
		dy2 := g.Reshape(dy, rows, dy.meta.Shape.Last())
		xa2 := g.Reshape(xa, rows, xa.meta.Shape.Last())
		res = append(res, g.Scale(g.MatMul(dy2, xa2, true, false), o.Scale))
	}
	return res, g.err
}

// Decompose: dx = dy ⊙ l, dl = Σ_rows dy ⊙ x.
func (o ScaleColsBackward) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	var res []*Node
	if o.NeedX {
		res = append(res, g.ScaleCols(in[0], in[2]))
	}
	if o.NeedL {
		res = append(res, g.Apply1(SumRows{}, g.Mul(in[0], in[1])))
	}
	return res, g.err
}

// Decompose: silu(gate) ⊙ up.
func (SwiGLU) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	return []*Node{g.Mul(g.SiLU(in[0]), in[1])}, g.err
}

// Decompose: dgate = silu'(gate)·(dy ⊙ up), dup = dy ⊙ silu(gate).
func (o SwiGLUBackward) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	var res []*Node
	if o.NeedGate {
		res = append(res, g.Apply1(UnaryBackward{Fn: SiLU}, g.Mul(in[0], in[2]), in[1]))
	}
	if o.NeedUp {
		res = append(res, g.Mul(in[0], g.SiLU(in[1])))
	}
	return res, g.err
}

// Decompose: the vectors the rows pick, ones where a row picks none (a padded gather), times x.
func (GatherScaleCols) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	return []*Node{g.Mul(in[0], g.Gather(in[2], in[1], 1))}, g.err
}

// Decompose: for each slot s of the pool, the rows that pick it (a 0/1 mask gathered by sel from
// the one-hot column e_s), their x·A_sᵀ·B_sᵀ (A_s and B_s selected from the pool by e_s·A, e_s·B),
// summed over the slots and added to y. Rows of other slots see exact zeros, so each row gets
// y + its adapter's delta.
func (o GatherLoRA) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	y, x, sel, a, b := in[0], in[1], in[2], in[3], in[4]
	_, din, dout, slots := o.Dims(metas(in))
	r := o.R
	ap := g.Reshape(a, slots, r*din)
	bp := g.Reshape(b, slots, dout*r)
	ones := g.Apply1(Fill{Shape: Shape{1, din}, Value: 1})
	out := y
	for s := range slots {
		e := make([]float32, slots)
		e[s] = 1
		es := g.constant(Shape{1, slots}, e)
		mask := g.Gather(g.Reshape(es, slots, 1), sel, 0)  // [n, 1]: row picks s
		xs := g.Mul(x, g.MatMul(mask, ones, false, false)) // the rows of slot s, zeros elsewhere
		as := g.Reshape(g.MatMul(es, ap, false, false), r, din)
		bs := g.Reshape(g.MatMul(es, bp, false, false), dout, r)
		out = g.Add(out, g.MatMul(g.MatMul(xs, as, false, true), bs, false, true))
	}
	return []*Node{out}, g.err
}

// broadcastRows returns v: [dim] repeated over rows rows, [rows, dim] (a product with a column
// of ones: exact).
func broadcastRows(g *Graph, v *Node, rows int) *Node {
	dim := v.meta.Shape.Numel()
	return g.MatMul(g.Apply1(Fill{Shape: Shape{rows, 1}, Value: 1}), g.Reshape(v, 1, dim), false, false)
}

// rowSums returns Σ_j x[i, j] of x: [rows, dim] as [rows, 1] (a product with ones).
func rowSums(g *Graph, x *Node) *Node {
	return g.MatMul(x, g.Apply1(Fill{Shape: Shape{x.meta.Shape.Last(), 1}, Value: 1}), false, false)
}

// Decompose: x ⊙ l with l broadcast over the rows.
func (ScaleCols) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	x := in[0]
	l := g.Reshape(broadcastRows(g, in[1], x.meta.Shape.Rows()), x.meta.Shape...)
	return []*Node{g.Mul(x, l)}, g.err
}

// Decompose: x + b with b broadcast over the rows.
func (AddBias) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	x := in[0]
	b := g.Reshape(broadcastRows(g, in[1], x.meta.Shape.Rows()), x.meta.Shape...)
	return []*Node{g.Add(x, b)}, g.err
}

// Decompose: the column sum of x viewed as one column.
func (Sum) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	return []*Node{g.Apply1(SumRows{}, g.Reshape(in[0], in[0].meta.Shape.Numel(), 1))}, g.err
}

// Decompose: the value times a column of ones.
func (o Expand) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	n := o.Shape.Numel()
	col := g.MatMul(g.Apply1(Fill{Shape: Shape{n, 1}, Value: 1}), g.Reshape(in[0], 1, 1), false, false)
	return []*Node{g.Reshape(col, o.Shape...)}, g.err
}

// Decompose: dx = y ⊙ (dy − Σ_row dy ⊙ y).
func (SoftmaxBackward) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	dy, y := in[0], in[1]
	rows, dim := y.meta.Shape.Rows(), y.meta.Shape.Last()
	dot := rowSums(g, g.Reshape(g.Mul(dy, y), rows, dim))
	back := g.MatMul(dot, g.Apply1(Fill{Shape: Shape{1, dim}, Value: 1}), false, false)
	dx := g.Mul(y, g.Add(dy, g.Scale(g.Reshape(back, y.meta.Shape...), -1)))
	return []*Node{dx}, g.err
}

func metas(in []*Node) []Meta {
	m := make([]Meta, len(in))
	for i, x := range in {
		m[i] = x.meta
	}
	return m
}

// lower returns the nodes of the graph that outputs need, in recording order, with every op that b
// refuses replaced by its decomposition (recursively), and the replacement of every node that
// changed. Nodes downstream of a replacement are cloned with their operands remapped; the graph
// itself is left as it was.
func lower(g *Graph, b Backend, outputs []*Node) ([]*Node, map[*Node]*Node, error) {
	needed := neededBy(outputs)
	sub := map[*Node]*Node{}
	var order []*Node
	remap := func(n *Node) *Node {
		if r, ok := sub[n]; ok {
			return r
		}
		return n
	}
	var visit func(n *Node, depth int) error
	visit = func(n *Node, depth int) error {
		if n.kind != kindOp {
			if n.kind != kindOutput { // outputs come with their op
				order = append(order, n)
			}
			return nil
		}
		src := make([]*Node, len(n.src))
		changed := false
		metas := make([]Meta, len(n.src))
		for i, s := range n.src {
			src[i] = remap(s)
			changed = changed || src[i] != s
			metas[i] = src[i].meta
		}
		err := b.Supports(n.op, metas)
		if err == nil && readsHalf(n.op, metas) && !b.Caps().Weights16 {
			err = fmt.Errorf("%s reads a 16-bit weight and the backend's kernels do not (Caps.Weights16)", n.op.Name())
		}
		if err == nil {
			if !changed {
				order = append(order, n)
				order = append(order, n.outs...)
				return nil
			}
			c := *n
			c.src = src
			c.outs = nil
			for _, o := range n.outs {
				oc := *o
				oc.src = []*Node{&c}
				c.outs = append(c.outs, &oc)
				sub[o] = &oc
			}
			sub[n] = &c
			order = append(order, &c)
			order = append(order, c.outs...)
			return nil
		}
		d, ok := n.op.(Decomposable)
		if !ok || depth > 8 {
			return fmt.Errorf("%s on %s: %w", n, b.Device().Backend, err)
		}
		// Record the decomposition at the end of the graph, in the node's block, then take the new
		// nodes out again: the graph stays as the caller built it.
		before, block, backward, gerr := len(g.nodes), g.block, g.backward, g.err
		g.block, g.backward = n.block, n.backward
		outs, derr := d.Decompose(g, src)
		added := append([]*Node(nil), g.nodes[before:]...)
		g.nodes = g.nodes[:before]
		g.block, g.backward, g.err = block, backward, gerr
		if derr == nil && len(outs) != len(outsOf(n)) {
			derr = fmt.Errorf("decomposition gives %d outputs for %d", len(outs), len(outsOf(n)))
		}
		if derr != nil {
			return fmt.Errorf("%s: decompose for %s: %w", n, b.Device().Backend, derr)
		}
		for _, a := range added {
			a.block, a.backward = n.block, n.backward
			if err := visit(a, depth+1); err != nil {
				return err
			}
		}
		for i, o := range outsOf(n) {
			sub[o] = remap(outs[i])
		}
		return nil
	}
	nodes := append([]*Node(nil), g.nodes...)
	for _, n := range nodes {
		if !needed[n] {
			continue
		}
		if err := visit(n, 0); err != nil {
			return nil, nil, err
		}
	}
	return order, sub, nil
}
