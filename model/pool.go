package model

import (
	"fmt"
	"sort"

	"github.com/lathe-ml/lathe/engine"
)

// AdapterLayer is an adapter's change to one linear layer, as a pool of adapters copies it.
type AdapterLayer struct {
	// Module is the layer's path, e.g. "model.layers.0.self_attn.q_proj".
	Module string
	// A ([R, in]) and B ([out, R]) are LoRA's factors, the delta Scale·B·A; nil for IA3.
	A, B  *engine.Tensor
	R     int
	Scale float32
	// Vec is IA3's vector: it scales the layer's output ([out]) or, with Feedforward, its input
	// ([in]); nil for LoRA.
	Vec         *engine.Tensor
	Feedforward bool
}

// pool holds copies of the adapters a cache's steps mix, stacked per layer (the layout GatherLoRA
// and GatherScaleCols read): slot s of a layer holds adapter s's change, or none (LoRA zeros, IA3
// ones). One program then serves any mix of pooled adapters. The layout (which layers, the rank)
// grows to cover every adapter placed; gen counts its changes, and programs of an older layout
// are dropped.
type pool struct {
	m      *Model
	slots  int
	rank   int
	gen    int
	layers map[string]*poolLayer
	held   []Adapter // by slot; nil: free
	used   []uint64  // by slot: the step that last used it
	clock  uint64
}

type poolLayer struct {
	in, out   int
	lora      bool           // a and b are allocated
	a, b      *engine.Tensor // LoRA: [slots·rank, in], [slots·out, rank]
	vIn, vOut *engine.Tensor // IA3: [slots, in], [slots, out]
	// What the adapters seen so far need of the layer.
	wantLoRA, wantIn, wantOut bool
	allocated                 bool
}

func newPool(m *Model, slots int) *pool {
	return &pool{m: m, slots: slots, layers: map[string]*poolLayer{}, held: make([]Adapter, slots), used: make([]uint64, slots)}
}

// release frees the pool's tensors.
func (p *pool) release() {
	for _, l := range p.layers {
		l.free()
	}
}

func (l *poolLayer) free() {
	for _, t := range []*engine.Tensor{l.a, l.b, l.vIn, l.vOut} {
		if t != nil {
			t.Release()
		}
	}
	l.a, l.b, l.vIn, l.vOut, l.allocated = nil, nil, nil, nil, false
}

// linears maps module names to their shapes.
func (p *pool) linears() map[string]*Linear {
	mg := NewGraph(p.m.Cfg, engine.NewGraph(), nil)
	ls := map[string]*Linear{}
	for _, l := range mg.Linears() {
		ls[l.Name] = l
	}
	if mg.LMHead != nil {
		ls[mg.LMHead.Name] = mg.LMHead
	}
	return ls
}

// place makes every adapter of a step resident and returns their slots, in order. Adapters
// already pooled keep their slot; others take a free slot or the one least recently used by
// earlier steps.
func (p *pool) place(adapters []Adapter) ([]int32, error) {
	if len(adapters) > p.slots {
		return nil, fmt.Errorf("adapter pool: %d adapters in a step, %d slots", len(adapters), p.slots)
	}
	p.clock++
	if err := p.cover(adapters); err != nil {
		return nil, err
	}
	out := make([]int32, len(adapters))
	for i, a := range adapters {
		out[i] = -1
		for s, h := range p.held {
			if h == a {
				out[i] = int32(s)
				p.used[s] = p.clock
			}
		}
	}
	for i, a := range adapters {
		if out[i] >= 0 {
			continue
		}
		victim := p.victim()
		if err := p.load(victim, a); err != nil {
			p.held[victim] = nil
			return nil, err
		}
		p.held[victim], p.used[victim], out[i] = a, p.clock, int32(victim)
	}
	return out, nil
}

// evict frees adapter a's slot, if it holds one.
func (p *pool) evict(a Adapter) {
	for s, h := range p.held {
		if h == a {
			p.held[s], p.used[s] = nil, 0
		}
	}
}

// victim is the slot a new adapter takes: a free one, else the least recently used one that the
// current step does not use (there is one: a step has at most as many adapters as slots).
func (p *pool) victim() int {
	best := -1
	for s, h := range p.held {
		switch {
		case p.used[s] == p.clock && h != nil:
		case h == nil:
			return s
		case best < 0 || p.used[s] < p.used[best]:
			best = s
		}
	}
	return best
}

// cover grows the layout to hold every adapter given (and those held), reallocating and
// reloading when it changes.
func (p *pool) cover(adapters []Adapter) error {
	rank := p.rank
	grow := false
	want := func(name string) *poolLayer {
		l := p.layers[name]
		if l == nil {
			l = &poolLayer{}
			p.layers[name] = l
		}
		return l
	}
	for _, a := range adapters {
		for _, al := range a.Layers() {
			l := want(al.Module)
			switch {
			case al.A != nil:
				if !l.wantLoRA || al.R > rank {
					grow = true
				}
				l.wantLoRA = true
				rank = max(rank, al.R)
			case al.Feedforward:
				grow = grow || !l.wantIn
				l.wantIn = true
			default:
				grow = grow || !l.wantOut
				l.wantOut = true
			}
		}
	}
	if !grow {
		return nil
	}
	shapes := p.linears()
	p.rank = rank
	p.gen++
	for name, l := range p.layers {
		ln := shapes[name]
		if ln == nil {
			return fmt.Errorf("adapter pool: the model has no layer %s", name)
		}
		l.free()
		l.in, l.out = ln.In, ln.Out
		alloc := func(rows, cols int) (*engine.Tensor, error) {
			return engine.NewTensor(p.m.Backend, engine.F32, engine.Shape{rows, cols})
		}
		var err error
		if l.wantLoRA {
			if l.a, err = alloc(p.slots*rank, l.in); err == nil {
				l.b, err = alloc(p.slots*l.out, rank)
			}
		}
		if err == nil && l.wantIn {
			l.vIn, err = alloc(p.slots, l.in)
		}
		if err == nil && l.wantOut {
			l.vOut, err = alloc(p.slots, l.out)
		}
		if err != nil {
			p.release()
			return fmt.Errorf("adapter pool: %w", err)
		}
		l.lora, l.allocated = l.wantLoRA, true
	}
	for s := range p.held {
		if err := p.load(s, p.held[s]); err != nil {
			// An adapter freed without Evict can no longer be copied: its slot is emptied.
			p.held[s] = nil
			if err := p.load(s, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// load copies adapter a (nil: none) into slot s of every layer.
func (p *pool) load(s int, a Adapter) error {
	mine := map[string][]AdapterLayer{}
	if a != nil {
		for _, al := range a.Layers() {
			mine[al.Module] = append(mine[al.Module], al)
		}
	}
	names := make([]string, 0, len(p.layers))
	for name := range p.layers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := p.layers[name]
		if err := l.load(s, p.rank, mine[name]); err != nil {
			return fmt.Errorf("adapter pool: %s: %w", name, err)
		}
	}
	return nil
}

func (l *poolLayer) load(s, rank int, als []AdapterLayer) error {
	var lora, in, out *AdapterLayer
	for i := range als {
		switch al := &als[i]; {
		case al.A != nil:
			lora = al
		case al.Feedforward:
			in = al
		default:
			out = al
		}
	}
	if l.lora {
		a := make([]float32, rank*l.in)
		b := make([]float32, l.out*rank)
		if lora != nil {
			av, err := lora.A.Float32()
			if err != nil {
				return err
			}
			bv, err := lora.B.Float32()
			if err != nil {
				return err
			}
			if len(av) != lora.R*l.in || len(bv) != l.out*lora.R {
				return fmt.Errorf("LoRA factors %s and %s do not fit [%d %d]", lora.A.Shape(), lora.B.Shape(), l.out, l.in)
			}
			copy(a, av) // rows past R stay zero
			for o := 0; o < l.out; o++ {
				for j := 0; j < lora.R; j++ {
					b[o*rank+j] = lora.Scale * bv[o*lora.R+j]
				}
			}
		}
		if err := l.a.SetFloat32At(s*rank*l.in, a); err != nil {
			return err
		}
		if err := l.b.SetFloat32At(s*l.out*rank, b); err != nil {
			return err
		}
	}
	for _, v := range []struct {
		t   *engine.Tensor
		al  *AdapterLayer
		dim int
	}{{l.vIn, in, l.in}, {l.vOut, out, l.out}} {
		if v.t == nil {
			continue
		}
		vec := make([]float32, v.dim)
		if v.al != nil {
			x, err := v.al.Vec.Float32()
			if err != nil {
				return err
			}
			if len(x) != v.dim {
				return fmt.Errorf("IA3 vector %s does not fit %d", v.al.Vec.Shape(), v.dim)
			}
			copy(vec, x)
		} else {
			for i := range vec {
				vec[i] = 1
			}
		}
		if err := v.t.SetFloat32At(s*v.dim, vec); err != nil {
			return err
		}
	}
	return nil
}

// linear records linear layer l with each row's pooled adapter (sel: the row's slot, -1 none):
// IA3's input scaling, the base projection, IA3's output scaling, LoRA's delta. Parameters are
// declared once per graph, named pool.<module>.*.
func (p *pool) linear(sel *engine.Node) LinearFunc {
	return func(g *engine.Graph, l *Linear, x *engine.Node) *engine.Node {
		pl := p.layers[l.Name]
		if pl == nil || !pl.allocated {
			return l.Forward(g, x)
		}
		param := func(what string, t *engine.Tensor) *engine.Node {
			name := "pool." + l.Name + "." + what
			if n := g.Lookup(name); n != nil {
				return n
			}
			return g.Param(name, engine.F32, t.Shape(), false)
		}
		xin := x
		if pl.vIn != nil {
			xin = g.GatherScaleCols(x, sel, param("ia3_in", pl.vIn))
		}
		y := l.Forward(g, xin)
		if pl.vOut != nil {
			y = g.GatherScaleCols(y, sel, param("ia3_out", pl.vOut))
		}
		if pl.lora {
			y = g.GatherLoRA(y, x, sel, param("lora_a", pl.a), param("lora_b", pl.b), p.rank)
		}
		return y
	}
}

// bind binds the pool's tensors to the leaves linear declared.
func (p *pool) bind(prog *engine.Program) error {
	byName := map[string]*engine.Tensor{}
	for name, l := range p.layers {
		for what, t := range map[string]*engine.Tensor{"ia3_in": l.vIn, "ia3_out": l.vOut, "lora_a": l.a, "lora_b": l.b} {
			if t != nil {
				byName["pool."+name+"."+what] = t
			}
		}
	}
	for _, n := range prog.Leaves() {
		if t, ok := byName[n.Name()]; ok {
			if err := prog.Bind(n, t); err != nil {
				return err
			}
		}
	}
	return nil
}
