package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/engine"
)

// GradCase is a finite-difference check of the gradients of a graph's trainable parameters (its
// params) through a backend: the autodiff's gradients of L = Σ out⊙R (R random) against central
// differences of L, both computed by the backend under test.
type GradCase struct {
	Name string
	// Tol bounds |fd − grad| relative to the largest gradient of the parameter.
	Tol   float64
	Build func(b *builder) []*engine.Node
}

func gc(name string, f func(b *builder) []*engine.Node) GradCase {
	return GradCase{Name: name, Tol: 1e-2, Build: f}
}

// GradCases cover every differentiable op, each with every operand that takes a gradient as a
// trainable parameter.
func GradCases() []GradCase {
	var cs []GradCase
	for _, tr := range transposes {
		cs = append(cs, gc("matmul/"+trName(tr), func(b *builder) []*engine.Node {
			m, n, k := 7, 5, 9
			sa, sb := engine.Shape{m, k}, engine.Shape{k, n}
			if tr[0] {
				sa = engine.Shape{k, m}
			}
			if tr[1] {
				sb = engine.Shape{n, k}
			}
			return []*engine.Node{b.g.MatMul(b.param(sa, 1), b.param(sb, 1), tr[0], tr[1])}
		}))
	}
	cs = append(cs,
		gc("qmatmul", func(b *builder) []*engine.Node {
			p, a, q := b.quant4(7, 33, 32, nf4)
			return []*engine.Node{b.g.QMatMul(b.param(engine.Shape{5, 33}, 1), p, a, q)}
		}),
		gc("lora/dense", func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5}, b.param(engine.Shape{5, 11}, 1), b.f32(engine.Shape{7, 11}, 0.5),
				b.param(engine.Shape{3, 11}, 0.5), b.param(engine.Shape{7, 3}, 0.5))[:1]
		}),
		gc("lora/nf4", func(b *builder) []*engine.Node {
			x := b.param(engine.Shape{5, 33}, 1)
			p, a, q := b.quant4(7, 33, 32, nf4)
			return b.g.Apply(engine.LoRA{Scale: 0.7, Quant: &q}, x, p, a, b.param(engine.Shape{3, 33}, 0.5), b.param(engine.Shape{7, 3}, 0.5))[:1]
		}),
		gc("lora/dropout", func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5, Dropout: 0.3, Salt: 2}, b.param(engine.Shape{5, 11}, 1), b.f32(engine.Shape{7, 11}, 0.5),
				b.param(engine.Shape{3, 11}, 0.5), b.param(engine.Shape{7, 3}, 0.5), b.i32([]int32{12}))[:1]
		}),
		gc("lora/nf4_dropout", func(b *builder) []*engine.Node {
			x := b.param(engine.Shape{5, 33}, 1)
			p, a, q := b.quant4(7, 33, 32, nf4)
			return b.g.Apply(engine.LoRA{Scale: 0.7, Quant: &q, Dropout: 0.2, Salt: 5}, x, p, a, b.param(engine.Shape{3, 33}, 0.5), b.param(engine.Shape{7, 3}, 0.5), b.i32([]int32{3}))[:1]
		}),
		gc("matmul16/f16", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.MatMul(b.param(engine.Shape{5, 33}, 1), b.half(engine.F16, engine.Shape{7, 33}, 1), false, true)}
		}),
		gc("matmul16/bf16_transposed", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.MatMul(b.param(engine.Shape{5, 7}, 1), b.half(engine.BF16, engine.Shape{7, 33}, 1), false, false)}
		}),
		gc("lora/bf16", func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5}, b.param(engine.Shape{5, 11}, 1), b.half(engine.BF16, engine.Shape{7, 11}, 0.5),
				b.param(engine.Shape{3, 11}, 0.5), b.param(engine.Shape{7, 3}, 0.5))[:1]
		}),
		gc("scale_cols", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.ScaleCols(b.param(engine.Shape{5, 9}, 1), b.param(engine.Shape{9}, 1))}
		}),
		gc("div_sqrt", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.DivSqrt(b.param(engine.Shape{5, 9}, 1), b.pos(engine.Shape{9}, 0.5, 2))}
		}),
		gc("rmsnorm", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.RMSNorm(b.param(engine.Shape{5, 9}, 1), b.param(engine.Shape{9}, 1), 1e-5)}
		}),
		gc("rope", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.RoPE(b.param(engine.Shape{5, 2 * 6}, 1), b.i32(b.ints(5, 0, 50)), 2, 6, invFreq(6), 1.1)}
		}),
		gc("attention", func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 4, KVLen: 5, Heads: 4, KVHeads: 2, HeadDim: 6, Scale: 0.4}
			return b.g.Apply(a, b.param(engine.Shape{8, 24}, 1), b.param(engine.Shape{10, 12}, 1), b.param(engine.Shape{10, 12}, 1))[:1]
		}),
		gc("silu", func(b *builder) []*engine.Node { return []*engine.Node{b.g.SiLU(b.param(engine.Shape{5, 9}, 2))} }),
		gc("swiglu", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.SwiGLU(b.param(engine.Shape{5, 9}, 2), b.param(engine.Shape{5, 9}, 1))}
		}),
		gc("softmax", func(b *builder) []*engine.Node { return []*engine.Node{b.g.Softmax(b.param(engine.Shape{5, 9}, 2))} }),
		gc("embedding", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Embedding(b.param(engine.Shape{6, 5}, 1), b.i32(b.ints(9, 0, 6)))}
		}),
		gc("cross_entropy", func(b *builder) []*engine.Node {
			t := b.ints(6, 0, 9)
			t[4] = -100
			return []*engine.Node{b.g.CrossEntropy(b.param(engine.Shape{6, 9}, 2), b.i32(t), -100)}
		}),
		gc("elementwise", func(b *builder) []*engine.Node {
			x, y := b.param(engine.Shape{5, 9}, 1), b.param(engine.Shape{5, 9}, 1)
			g := b.g
			return []*engine.Node{g.Add(x, y), g.Mul(x, y), g.Scale(x, -0.7), g.AddBias(x, b.param(engine.Shape{9}, 1)),
				g.Sum(y), g.Reshape(g.Mul(x, x), 9, 5)}
		}),
		gc("dropout", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Dropout(b.param(engine.Shape{5, 9}, 1), b.i32([]int32{99}), 0.3, 7)}
		}),
	)
	return cs
}

// param adds a trainable f32 parameter with random values.
func (b *builder) param(shape engine.Shape, scale float64) *engine.Node {
	n := b.g.Param(leafName(len(b.leaves)), engine.F32, shape, true)
	v := make([]float32, shape.Numel())
	for i := range v {
		v[i] = float32(b.r.NormFloat64() * scale)
	}
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

// VerifyGrad checks a GradCase on b: for every parameter, the gradient at its largest element and
// at three random ones against central differences (ε = 1e-2) of L = Σ out⊙R, which the host sums
// in float64 from the forward outputs the backend computed.
func VerifyGrad(c GradCase, be engine.Backend) error { return verifyGrad(c, be, 1e-2) }

// verifyGrad is VerifyGrad with central differences of step eps.
func verifyGrad(c GradCase, be engine.Backend, eps float32) error {
	g := engine.NewGraph()
	b := &builder{g: g, r: rand.New(rand.NewPCG(Seed(c.Name), 0x9ad))}
	outs := c.Build(b)
	var params []Leaf
	for _, l := range b.leaves {
		if l.Node.Trainable() {
			params = append(params, l)
		}
	}
	var loss *engine.Node
	rs := make([][]float32, len(outs))
	for i, o := range outs {
		rn := b.f32(o.Shape(), 1)
		rs[i] = b.leaves[len(b.leaves)-1].F32
		term := g.Sum(g.Reshape(g.Mul(o, rn), o.Shape().Numel()))
		if loss == nil {
			loss = term
		} else {
			loss = g.Add(loss, term)
		}
	}
	grads, err := g.Backward(loss)
	if err != nil {
		return fmt.Errorf("%s: backward: %w", c.Name, err)
	}
	var gnodes []*engine.Node
	for _, p := range params {
		d := grads[p.Node]
		if d == nil {
			return fmt.Errorf("%s: no gradient for %s", c.Name, p.Node)
		}
		gnodes = append(gnodes, d)
	}
	bwd, free, err := prepare(be, g, b.leaves, gnodes)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	defer free()
	if err := bwd.Poison(); err != nil {
		return err
	}
	if err := bwd.Run(); err != nil {
		return fmt.Errorf("%s: backward run: %w", c.Name, err)
	}
	got, err := readAll(be, bwd, gnodes)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	fwd, tensors, free2, err := prepareBound(be, g, b.leaves, outs)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	defer free2()
	// The forward program's tensors are its own; perturb them in place.
	lossAt := func() (float64, error) {
		if err := fwd.Run(); err != nil {
			return 0, err
		}
		vals, err := readAll(be, fwd, outs)
		if err != nil {
			return 0, err
		}
		var l float64
		for i, v := range vals {
			for j, x := range v {
				l += float64(x) * float64(rs[i][j])
			}
		}
		return l, nil
	}
	for pi, p := range params {
		gv := got[pi]
		scale, top := 0.0, 0
		for j, v := range gv {
			if a := math.Abs(float64(v)); a > scale {
				scale, top = a, j
			}
		}
		if scale == 0 {
			return fmt.Errorf("%s: the gradient of %s is all zeros: the case tests nothing", c.Name, p.Node)
		}
		idx := []int{top}
		for range 3 {
			idx = append(idx, b.r.IntN(len(gv)))
		}
		t := tensors[p.Node]
		for _, j := range idx {
			v := p.F32[j]
			var l [2]float64
			for k, d := range []float32{eps, -eps} {
				if err := t.SetFloat32At(j, []float32{v + d}); err != nil {
					return err
				}
				if l[k], err = lossAt(); err != nil {
					return fmt.Errorf("%s: forward run: %w", c.Name, err)
				}
			}
			if err := t.SetFloat32At(j, []float32{v}); err != nil {
				return err
			}
			fd := (l[0] - l[1]) / (2 * float64(eps))
			if d := math.Abs(fd - float64(gv[j])); d > c.Tol*scale {
				return fmt.Errorf("%s: d/d%s[%d]: backend gradient %v, finite difference %v (|diff| %.3g > %.3g)", c.Name, p.Node.Name(), j, gv[j], fd, d, c.Tol*scale)
			}
		}
	}
	return nil
}
