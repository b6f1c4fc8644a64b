package peft

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
)

// DoRA (Liu et al., 2024; PEFT's use_dora) splits each wrapped weight into a magnitude m, one
// value a row, and a direction W + s·B·A that LoRA adapts:
//
//	y = m ⊘ ‖W + s·B·A‖_row ⊙ (W·x + s·B·A·x) + bias
//
// The row norm is detached, as PEFT (and section 4.3 of the paper) detaches it: it follows A and B
// in the forward pass but takes no gradient. The magnitude is PEFT's lora_magnitude_vector, one
// [out] vector a module, saved without a ".weight" suffix.

// magnitudeSuffix ends a DoRA magnitude's key.
const magnitudeSuffix = ".lora_magnitude_vector"

// NewFor creates an adapter for a loaded model, as New does. For PiSSA (init_lora_weights
// "pissa") it sets A and B from each weight's SVD and leaves the residual in m's weights (m is
// changed). For DoRA (use_dora) it sets each
// magnitude to the row norms of W + s·B·A, as PEFT initialises it (with B zero, the base weight's
// row norms, so the adapter starts as the identity). DoRA needs the base weights; other methods
// are New's.
func NewFor(cfg Config, m *model.Model, seed uint64) (*Adapter, error) {
	if m == nil {
		return nil, fmt.Errorf("adapter: no model")
	}
	dora, pissa := cfg.UseDoRA, cfg.pissa()
	cfg.UseDoRA = false
	if pissa {
		cfg.InitLoraWeights = true
	}
	a, err := New(cfg, m.Cfg, m.Backend, seed)
	if err != nil {
		return nil, err
	}
	if pissa {
		a.Config.InitLoraWeights = InitPiSSA
		if dora {
			a.Release()
			return nil, fmt.Errorf("adapter: PiSSA with DoRA is not supported")
		}
		if err := a.initPiSSA(m); err != nil {
			a.Release()
			return nil, err
		}
	}
	if !dora {
		return a, nil
	}
	// Re-lay out with the magnitude keys, keeping A and B.
	cfg.UseDoRA = true
	d, err := newAdapter(cfg, m.Cfg, m.Backend)
	if err != nil {
		a.Release()
		return nil, err
	}
	d.tensors = a.tensors
	norms, err := d.weightNorms(m)
	if err != nil {
		d.Release()
		return nil, err
	}
	for _, md := range d.modules {
		if err := d.upload(md.magnitudeKey(), engine.Shape{md.Out}, norms[md.Name]); err != nil {
			d.Release()
			return nil, err
		}
	}
	return d, nil
}

// eyePrefix names the identity constants a DoRA adapter binds.
const eyePrefix = "lathe.eye."

func (m *Module) magnitudeKey() string { return keyPrefix + m.Name + magnitudeSuffix }

// weightNorms computes ‖W + s·B·A‖ of each row of every module on the adapter's backend, with
// the graph the forward pass records (so a 4-bit base is dequantized as the forward reads it).
func (a *Adapter) weightNorms(m *model.Model) (map[string][]float32, error) {
	if m.Backend != a.backend {
		return nil, fmt.Errorf("adapter: the model lives on another backend")
	}
	g := engine.NewGraph()
	mg := m.Declare(g)
	ls := mg.Linears()
	if mg.LMHead != nil {
		ls = append(ls, mg.LMHead)
	}
	var outs []*engine.Node
	var mods []*Module
	for _, l := range ls {
		md := a.byName[l.Name]
		if md == nil {
			continue
		}
		keys := md.keys(TypeLoRA)
		n2 := a.norm2(g, l, md, a.param(g, md, keys[0]), a.param(g, md, keys[1]))
		outs, mods = append(outs, n2), append(mods, md)
	}
	p, err := engine.Compile(g, a.backend, outs, engine.CompileOptions{})
	if err != nil {
		return nil, fmt.Errorf("adapter: DoRA weight norms: %w", err)
	}
	defer p.Release()
	if err := m.Bind(p); err != nil {
		return nil, fmt.Errorf("adapter: DoRA weight norms: %w", err)
	}
	if err := a.Bind(p); err != nil {
		return nil, fmt.Errorf("adapter: DoRA weight norms: %w", err)
	}
	if err := p.Run(); err != nil {
		return nil, fmt.Errorf("adapter: DoRA weight norms: %w", err)
	}
	res := map[string][]float32{}
	for i, md := range mods {
		v, err := p.Float32(outs[i])
		if err != nil {
			return nil, fmt.Errorf("adapter: DoRA weight norms: %w", err)
		}
		for j, x := range v {
			v[j] = float32(math.Sqrt(float64(x)))
		}
		res[md.Name] = v
	}
	return res, nil
}

// norm2 records ‖W + s·B·A‖² of each row of W, [out]. A dense W is read as it is; a 4-bit one is
// dequantized by a product with the identity (its transpose, [in, out]): in²·out multiply-adds
// a step, against the 6·tokens·in·out of the layer's own forward and backward.
func (a *Adapter) norm2(g *engine.Graph, l *model.Linear, md *Module, A, B *engine.Node) *engine.Node {
	ones := g.Apply1(engine.Fill{Shape: engine.Shape{1, md.In}, Value: 1})
	var v *engine.Node
	if l.Quant == nil {
		// V = W + s·B·A, [out, in]; Σ_i V² by a product with ones: [1, out].
		v = g.Add(g.Cast(l.W, engine.F32), g.Scale(g.MatMul(B, A, false, false), md.Scale))
	} else {
		// Vᵀ = I·Wᵀ + s·Aᵀ·Bᵀ, [in, out].
		wt := g.QMatMul(a.eye(g, md.In), l.Packed, l.Absmax, *l.Quant)
		v = g.Add(wt, g.Scale(g.MatMul(A, B, true, true), md.Scale))
	}
	sq := g.Mul(v, v)
	var n2 *engine.Node
	if l.Quant == nil {
		n2 = g.MatMul(ones, sq, false, true)
	} else {
		n2 = g.MatMul(ones, sq, false, false)
	}
	return g.Reshape(n2, md.Out)
}

// eye declares the [n, n] identity, a constant the adapter binds.
func (a *Adapter) eye(g *engine.Graph, n int) *engine.Node {
	name := fmt.Sprintf("%s%d", eyePrefix, n)
	if p := g.Lookup(name); p != nil {
		return p
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.consts[name]; !ok {
		v := make([]float32, n*n)
		for i := 0; i < n; i++ {
			v[i*n+i] = 1
		}
		// An upload that fails leaves the constant unbound: Bind reports it.
		if t, err := engine.FromFloat32(a.backend, engine.Shape{n, n}, v); err == nil {
			a.consts[name] = t
		}
	}
	return g.Param(name, engine.F32, engine.Shape{n, n}, false)
}

// doraLinear records a DoRA layer, PEFT's forward: without dropout
//
//	y = m ⊘ ‖V‖ ⊙ (W·x + s·B·A·x) + bias, V = W + s·B·A,
//
// and with dropout d (training), PEFT's W·x + bias + (m/‖V‖ − 1)⊙W·d(x) + m/‖V‖ ⊙ s·B·A·d(x),
// recorded as W·(x − d(x)) + m ⊘ ‖V‖ ⊙ (W·d(x) + s·B·A·d(x)) + bias.
func (a *Adapter) doraLinear(g *engine.Graph, l *model.Linear, md *Module, x, seed *engine.Node) *engine.Node {
	keys := md.keys(TypeLoRA)
	A, B := a.param(g, md, keys[0]), a.param(g, md, keys[1])
	mag := a.param(g, md, md.magnitudeKey())
	n2 := a.norm2(g, l, md, A, B)
	p := float32(a.Config.LoraDropout)
	xin := x
	var rest *engine.Node
	if p > 0 && seed != nil {
		xin = g.Dropout(x, seed, p, salt(l.Name))
		diff := g.Add(x, g.Scale(xin, -1))
		if l.Quant != nil {
			rest = g.QMatMul(diff, l.Packed, l.Absmax, *l.Quant)
		} else {
			rest = g.MatMul(diff, l.W, false, true)
		}
	}
	op := engine.LoRA{Scale: md.Scale}
	in := []*engine.Node{xin, l.W}
	if l.Quant != nil {
		q := *l.Quant
		op.Quant = &q
		in = []*engine.Node{xin, l.Packed, l.Absmax}
	}
	z := g.Apply(op, append(in, A, B)...)[0]
	// m ⊘ ‖V‖ on the [out] vectors, then one pass over the activations.
	y := g.ScaleCols(z, g.DivSqrt(mag, n2))
	if rest != nil {
		y = g.Add(rest, y)
	}
	return l.AddBias(g, y)
}

// mergeDoRA turns row o of V = W + s·B·A (already in w) into m_o/‖V_o‖ · V_o, as PEFT's merge.
func (a *Adapter) mergeDoRA(md *Module, w []float32) error {
	mag, err := a.tensors[md.magnitudeKey()].Float32()
	if err != nil {
		return fmt.Errorf("merge %s: %w", md.Name, err)
	}
	for o := 0; o < md.Out; o++ {
		row := w[o*md.In : (o+1)*md.In]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		f := float64(mag[o]) / math.Sqrt(ss)
		for i, v := range row {
			row[i] = float32(float64(v) * f)
		}
	}
	return nil
}
