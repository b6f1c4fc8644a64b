package engine

import "fmt"

// Frozen weights may stay in the 16-bit type a checkpoint stores them in (f16 or bf16): the ops
// below read them and compute in f32. They are fast paths: a backend whose kernels do not read
// 16-bit weights (Caps.Weights16 false, or Supports refusing the op) gets them decomposed into a
// Cast of the weight to f32 (one transient f32 weight at a time) and the f32 op.

// IsHalf reports whether d is one of the 16-bit float storage types.
func IsHalf(d DType) bool { return d == F16 || d == BF16 }

// readsHalf reports whether an op other than Cast has a 16-bit float operand: only backends whose
// Caps say Weights16 run such ops; Compile decomposes them for the others.
func readsHalf(op Op, in []Meta) bool {
	if _, ok := op.(Cast); ok {
		return false
	}
	for _, m := range in {
		if IsHalf(m.DType) {
			return true
		}
	}
	return false
}

// MatMul16: y = x·Wᵀ for a frozen W: f16 or bf16 [N, K], x: f32 [..., K], y: f32 [..., N],
// accumulated in f32. With TransW, y = x·W: x: [..., N], y: [..., K] (the backward pass). W takes
// no gradient. Graph.MatMul records it when its second operand is 16-bit.
//
// Compute, for a bf16 W, is the precision its product may take (the backward pass's too): F32 (the
// zero value) exact on the widened W, BF16 with x rounded to bfloat16 (products summed in
// float32), as QuantSpec.Compute allows for a 4-bit W; a backend may compute in float32 anyway.
type MatMul16 struct {
	TransW  bool
	Compute DType
}

func (MatMul16) Name() string { return "matmul16" }

func (o MatMul16) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	x, w := in[0], in[1]
	if !IsHalf(w.DType) || len(w.Shape) != 2 {
		return nil, fmt.Errorf("W must be an f16 or bf16 matrix, got %s", w)
	}
	if err := want(x, F32, "x"); err != nil {
		return nil, err
	}
	if o.Compute != F32 && o.Compute != BF16 {
		return nil, fmt.Errorf("compute precision %s: want f32 or bf16", o.Compute)
	}
	kin, nout := w.Shape[1], w.Shape[0]
	if o.TransW {
		kin, nout = nout, kin
	}
	if len(x.Shape) < 1 || x.Shape.Last() != kin {
		return nil, fmt.Errorf("x must end in %d, got %s", kin, x.Shape)
	}
	return []Meta{{x.Shape.With(nout), F32}}, nil
}

// Decompose: W cast to f32, then a MatMul.
func (o MatMul16) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	return []*Node{g.MatMul(in[0], g.Cast(in[1], F32), false, !o.TransW)}, g.err
}

func (o MatMul16) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	if need[1] {
		g.fail(fmt.Errorf("16-bit weights are frozen and take no gradient"))
		return nil
	}
	return []*Node{g.Apply1(MatMul16{TransW: !o.TransW, Compute: o.Compute}, dout[0], n.src[1]), nil}
}

// Embedding16 gathers rows of a frozen 16-bit table: table f16 or bf16 [vocab, dim], ids i32
// [...], output f32 [..., dim]. An id outside [0, vocab) is an error when the launch runs. The
// table takes no gradient. Graph.Embedding records it for a 16-bit table.
type Embedding16 struct{}

func (Embedding16) Name() string { return "embedding16" }

func (Embedding16) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if !IsHalf(in[0].DType) || len(in[0].Shape) != 2 {
		return nil, fmt.Errorf("table must be an f16 or bf16 matrix, got %s", in[0])
	}
	if in[1].DType != I32 {
		return nil, fmt.Errorf("ids must be i32, got %s", in[1])
	}
	return []Meta{{append(in[1].Shape.Clone(), in[0].Shape[1]), F32}}, nil
}

// Decompose: the table cast to f32, then an Embedding.
func (Embedding16) Decompose(g *Graph, in []*Node) ([]*Node, error) {
	return []*Node{g.Apply1(Embedding{}, g.Cast(in[0], F32), in[1])}, g.err
}

func (Embedding16) grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node {
	if need[0] {
		g.fail(fmt.Errorf("16-bit tables are frozen and take no gradient"))
		return nil
	}
	return []*Node{nil, nil}
}
