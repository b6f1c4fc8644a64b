package engine

import "fmt"

// Backward records the backward pass of loss (a [1] value) and returns the gradient node of every
// trainable parameter that loss depends on. Frozen parameters and inputs get no gradient and no
// backward op is recorded for a value that does not lead to a trainable parameter.
func (g *Graph) Backward(loss *Node) (map[*Node]*Node, error) {
	if g.err != nil {
		return nil, g.err
	}
	if loss.g != g || loss.meta.Shape.Numel() != 1 {
		return nil, fmt.Errorf("backward: loss must be a one-element node of this graph, got %s", loss)
	}
	if !loss.needsGrad {
		return nil, fmt.Errorf("backward: loss depends on no trainable parameter")
	}
	g.backward = true
	defer func() { g.backward = false }()
	last := loss.id
	grads := map[*Node]*Node{loss: g.Apply1(Fill{Shape: loss.meta.Shape, Value: 1})}
	accumulate := func(n, d *Node) {
		if prev, ok := grads[n]; ok {
			grads[n] = g.Add(prev, d)
		} else {
			grads[n] = d
		}
	}
	for i := last; i >= 0; i-- {
		n := g.nodes[i]
		if n.backward || !n.needsGrad || n.kind != kindOp {
			continue
		}
		var dout []*Node
		any := false
		if n.outs == nil {
			dout = []*Node{grads[n]}
			any = dout[0] != nil
		} else {
			dout = make([]*Node, len(n.outs))
			for j, o := range n.outs {
				dout[j] = grads[o]
				any = any || dout[j] != nil
			}
		}
		if !any {
			continue
		}
		gop, ok := n.op.(gradOp)
		if !ok {
			return nil, fmt.Errorf("backward through %s: %w", n, errNoGrad)
		}
		need := make([]bool, len(n.src))
		dop, _ := n.op.(detachOp)
		for j, s := range n.src {
			need[j] = s.needsGrad && (dop == nil || !dop.detached(j))
		}
		dins := gop.grad(g, n, dout, need)
		if g.err != nil {
			return nil, fmt.Errorf("backward through %s: %w", n, g.err)
		}
		for j, d := range dins {
			if need[j] && d == nil {
				return nil, fmt.Errorf("backward through %s: no gradient for operand %d", n, j)
			}
			if need[j] {
				accumulate(n.src[j], d)
			}
		}
	}
	res := map[*Node]*Node{}
	for _, n := range g.nodes[:last+1] {
		if n.kind == kindParam && n.trainable {
			if d, ok := grads[n]; ok {
				res[n] = d
			}
		}
	}
	return res, g.err
}

// outsOf returns the op node's outputs as a slice (the node itself for single-output ops).
func outsOf(n *Node) []*Node {
	if n.outs != nil {
		return n.outs
	}
	return []*Node{n}
}

// split assigns the outputs of a backward op that computes only the needed gradients.
func split(outs []*Node, need ...bool) []*Node {
	res := make([]*Node, len(need))
	k := 0
	for i, nd := range need {
		if nd {
			res[i] = outs[k]
			k++
		}
	}
	return res
}

func (o MatMul) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	a, b, dc := n.src[0], n.src[1], dout[0]
	res := make([]*Node, 2)
	if need[0] {
		if o.TransA {
			res[0] = g.MatMul(b, g.Reshape(dc, dc.meta.Shape.Rows(), dc.meta.Shape.Last()), o.TransB, true)
		} else {
			res[0] = g.MatMul(dc, b, false, !o.TransB)
		}
	}
	if need[1] {
		a2 := a
		if !o.TransA {
			a2 = g.Reshape(a, a.meta.Shape.Rows(), a.meta.Shape.Last())
		}
		dc2 := g.Reshape(dc, dc.meta.Shape.Rows(), dc.meta.Shape.Last())
		if o.TransB {
			res[1] = g.MatMul(dc2, a2, true, o.TransA)
		} else {
			res[1] = g.MatMul(a2, dc2, !o.TransA, false)
		}
	}
	return res
}

func (o QMatMul) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	if need[1] || need[2] {
		g.fail(fmt.Errorf("quantized weights are frozen and take no gradient"))
		return nil
	}
	return []*Node{g.Apply1(QMatMul{Quant: o.Quant, TransW: !o.TransW}, dout[0], n.src[1], n.src[2]), nil, nil}
}

func (o LoRA) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	nw, _ := o.Operands()
	for j := 1; j <= nw; j++ {
		if need[j] {
			g.fail(fmt.Errorf("the base weight of a LoRA layer is frozen and takes no gradient"))
			return nil
		}
	}
	dy := dout[0]
	if dy == nil {
		return make([]*Node, len(n.src))
	}
	needX, needA, needB := need[0], need[1+nw], need[2+nw]
	bop := LoRABackward{Scale: o.Scale, Quant: o.Quant, Dropout: o.Dropout, Salt: o.Salt, NeedX: needX, NeedA: needA, NeedB: needB, Compute: o.Compute}
	in := append(append([]*Node{dy}, n.src...), n.outs[1])
	got := split(g.Apply(bop, in...), needX, needA, needB)
	res := make([]*Node, len(n.src))
	res[0], res[1+nw], res[2+nw] = got[0], got[1], got[2]
	return res
}

func (ScaleCols) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return split(g.Apply(ScaleColsBackward{NeedX: need[0], NeedL: need[1]}, dout[0], n.src[0], n.src[1]), need...)
}

func (DivSqrt) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.DivSqrt(dout[0], n.src[1]), nil}
}

func (o RMSNorm) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return split(g.Apply(RMSNormBackward{Eps: o.Eps, NeedX: need[0], NeedW: need[1]}, dout[0], n.src[0], n.src[1]), need...)
}

func (o RoPE) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	inv := o
	inv.Inverse = !o.Inverse
	return []*Node{g.Apply1(inv, dout[0], n.src[1]), nil}
}

func (o Attention) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	dy := dout[0]
	if dy == nil { // only lse was used: it carries no gradient here
		g.fail(fmt.Errorf("attention: gradient through lse is not supported"))
		return nil
	}
	bop := AttentionBackward{Attention: o, NeedQ: need[0], NeedK: need[1], NeedV: need[2]}
	in := []*Node{dy, n.src[0], n.src[1], n.src[2], n.outs[0], n.outs[1]}
	if o.Docs {
		in = append(in, n.src[3]) // starts: no gradient
	}
	return split(g.Apply(bop, in...), need...)
}

func (o Unary) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Apply1(UnaryBackward(o), dout[0], n.src[0])}
}

func (SwiGLU) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return split(g.Apply(SwiGLUBackward{NeedGate: need[0], NeedUp: need[1]}, dout[0], n.src[0], n.src[1]), need...)
}

func (Softmax) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Apply1(SoftmaxBackward{}, dout[0], n)}
}

func (o Embedding) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	if o.Pad {
		g.fail(fmt.Errorf("a padded embedding has no backward pass"))
		return nil
	}
	return []*Node{g.Apply1(EmbeddingBackward{Vocab: n.src[0].meta.Shape[0]}, dout[0], n.src[1]), nil}
}

func (o CrossEntropy) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Apply1(CrossEntropyBackward(o), dout[0], n.src[0], n.src[1]), nil}
}

func (o Binary) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	dy := dout[0]
	switch o.Fn {
	case Add:
		return []*Node{dy, dy}
	default: // Mul
		res := make([]*Node, 2)
		if need[0] {
			res[0] = g.Mul(dy, n.src[1])
		}
		if need[1] {
			res[1] = g.Mul(dy, n.src[0])
		}
		return res
	}
}

func (o Scale) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Scale(dout[0], o.S)}
}

func (AddBias) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	res := []*Node{dout[0], nil}
	if need[1] {
		res[1] = g.Apply1(SumRows{}, dout[0])
	}
	return res
}

func (Sum) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Apply1(Expand{Shape: n.src[0].meta.Shape}, dout[0])}
}

func (o Reshape) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Reshape(dout[0], n.src[0].meta.Shape...)}
}

func (o Dropout) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	return []*Node{g.Apply1(o, dout[0], n.src[1]), nil}
}
