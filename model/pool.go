package model

import (
	"fmt"
	"slices"
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
	// Magnitude is DoRA's [out] vector: such a layer computes through its adapter's own
	// LinearFunc and has no place in the pool.
	Magnitude *engine.Tensor
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
	// loaders are the load programs by adapter signature.
	loaders map[string]*loadProgram
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

// release frees the pool's tensors and load programs.
func (p *pool) release() {
	for _, l := range p.layers {
		l.free()
	}
	for k, lp := range p.loaders {
		lp.release()
		delete(p.loaders, k)
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
	// Held adapters are covered already: only newcomers can grow the layout (and listing an
	// adapter's layers allocates, which a decode step need not do).
	var newcomers []Adapter
	for _, a := range adapters {
		if !slices.Contains(p.held, a) {
			newcomers = append(newcomers, a)
		}
	}
	if err := p.cover(newcomers); err != nil {
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
			if al.Magnitude != nil {
				return fmt.Errorf("adapter layer %s is DoRA: requests with different adapters cannot share a step with it (serve it alone, or merged)", al.Module)
			}
		}
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

// load copies adapter a (nil: none) into slot s of every layer. An adapter is copied on the
// device, by a program compiled once per adapter signature and layout: nothing is read back.
func (p *pool) load(s int, a Adapter) error {
	if a == nil {
		return p.clear(s)
	}
	lp, err := p.loader(a)
	if err != nil {
		return fmt.Errorf("adapter pool: %w", err)
	}
	return lp.run(p, s, a)
}

// clear writes "no adapter" into slot s (LoRA zeros, IA3 ones) from the host.
func (p *pool) clear(s int) error {
	for name, l := range p.layers {
		fill := func(t *engine.Tensor, n int, v float32) error {
			if t == nil {
				return nil
			}
			buf := make([]float32, n)
			for i := range buf {
				buf[i] = v
			}
			return t.SetFloat32At(s*n, buf)
		}
		for _, err := range []error{
			fill(l.a, p.rank*l.in, 0), fill(l.b, l.out*p.rank, 0), fill(l.vIn, l.in, 1), fill(l.vOut, l.out, 1),
		} {
			if err != nil {
				return fmt.Errorf("adapter pool: %s: %w", name, err)
			}
		}
	}
	return nil
}

// loadProgram copies adapters of one signature into a slot: for every layer of the layout,
// CacheWrite puts the adapter's rows (or zeros, or ones) at the slot's rows of the pool tensors.
// LoRA's A is padded to the pool's rank by E·A (E: the identity on top of zero rows), B by B·Eᵀ
// and scaled.
type loadProgram struct {
	p            *engine.Program
	gen          int
	rowsA, rowsV *engine.Node
	rowsB        map[int]*engine.Node // by out dimension
	adapterIn    map[*engine.Node]func(AdapterLayer) *engine.Tensor
	layerOf      map[*engine.Node]string
	inputs       map[*engine.Node]*engine.Tensor // pads and rows, owned
	poolIn       map[*engine.Node]*engine.Tensor
	release      func()
}

// loader returns the load program for a's signature in the current layout.
func (p *pool) loader(a Adapter) (*loadProgram, error) {
	key := a.Signature()
	if lp := p.loaders[key]; lp != nil && lp.gen == p.gen {
		return lp, nil
	} else if lp != nil {
		lp.release()
		delete(p.loaders, key)
	}
	mine := map[string][]AdapterLayer{}
	for _, al := range a.Layers() {
		mine[al.Module] = append(mine[al.Module], al)
	}
	g := engine.NewGraph()
	lp := &loadProgram{gen: p.gen, rowsB: map[int]*engine.Node{}, adapterIn: map[*engine.Node]func(AdapterLayer) *engine.Tensor{},
		layerOf: map[*engine.Node]string{}, inputs: map[*engine.Node]*engine.Tensor{}, poolIn: map[*engine.Node]*engine.Tensor{}}
	if p.rank > 0 {
		lp.rowsA = g.Input("rows.a", engine.I32, engine.Shape{p.rank})
	}
	lp.rowsV = g.Input("rows.v", engine.I32, engine.Shape{1})
	pads := map[string]*engine.Node{}
	// pad returns the [rows, cols] matrix with ones on its diagonal (an input, uploaded once).
	pad := func(rows, cols int) *engine.Node {
		name := fmt.Sprintf("pad.%dx%d", rows, cols)
		if n := pads[name]; n != nil {
			return n
		}
		n := g.Input(name, engine.F32, engine.Shape{rows, cols})
		pads[name] = n
		return n
	}
	var outs []*engine.Node
	names := make([]string, 0, len(p.layers))
	for name := range p.layers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := p.layers[name]
		var lora, in, out *AdapterLayer
		for i := range mine[name] {
			switch al := &mine[name][i]; {
			case al.A != nil:
				lora = al
			case al.Feedforward:
				in = al
			default:
				out = al
			}
		}
		poolInput := func(what string, t *engine.Tensor) *engine.Node {
			n := g.Input("pool."+name+"."+what, engine.F32, t.Shape())
			lp.poolIn[n] = t
			return n
		}
		adapterInput := func(what string, shape engine.Shape, get func(AdapterLayer) *engine.Tensor) *engine.Node {
			n := g.Input("adapter."+name+"."+what, engine.F32, shape)
			lp.adapterIn[n], lp.layerOf[n] = get, name
			return n
		}
		if l.lora {
			rowsB := lp.rowsB[l.out]
			if rowsB == nil {
				rowsB = g.Input(fmt.Sprintf("rows.b.%d", l.out), engine.I32, engine.Shape{l.out})
				lp.rowsB[l.out] = rowsB
			}
			var srcA, srcB *engine.Node
			if lora != nil {
				r := lora.R
				A := adapterInput("A", engine.Shape{r, l.in}, func(al AdapterLayer) *engine.Tensor { return al.A })
				B := adapterInput("B", engine.Shape{l.out, r}, func(al AdapterLayer) *engine.Tensor { return al.B })
				srcA = g.MatMul(pad(p.rank, r), A, false, false)
				srcB = g.Scale(g.MatMul(B, pad(p.rank, r), false, true), lora.Scale)
			} else {
				srcA = g.Apply1(engine.Fill{Shape: engine.Shape{p.rank, l.in}})
				srcB = g.Apply1(engine.Fill{Shape: engine.Shape{l.out, p.rank}})
			}
			outs = append(outs, g.CacheWrite(poolInput("lora_a", l.a), srcA, lp.rowsA), g.CacheWrite(poolInput("lora_b", l.b), srcB, rowsB))
		}
		for _, v := range []struct {
			t    *engine.Tensor
			al   *AdapterLayer
			dim  int
			what string
		}{{l.vIn, in, l.in, "ia3_in"}, {l.vOut, out, l.out, "ia3_out"}} {
			if v.t == nil {
				continue
			}
			var src *engine.Node
			if v.al != nil {
				src = g.Reshape(adapterInput(v.what, engine.Shape{v.dim}, func(al AdapterLayer) *engine.Tensor { return al.Vec }), 1, v.dim)
			} else {
				src = g.Apply1(engine.Fill{Shape: engine.Shape{1, v.dim}, Value: 1})
			}
			outs = append(outs, g.CacheWrite(poolInput(v.what, v.t), src, lp.rowsV))
		}
	}
	prog, err := engine.Compile(g, p.m.Backend, outs, engine.CompileOptions{})
	if err != nil {
		return nil, err
	}
	lp.p = prog
	lp.release = func() {
		prog.Release()
		for _, t := range lp.inputs {
			t.Release()
		}
	}
	for name, n := range pads {
		shape := n.Shape()
		v := make([]float32, shape.Numel())
		for i := 0; i < min(shape[0], shape[1]); i++ {
			v[i*shape[1]+i] = 1
		}
		t, err := engine.FromFloat32(p.m.Backend, shape, v)
		if err != nil {
			lp.release()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		lp.inputs[n] = t
	}
	for _, n := range append([]*engine.Node{lp.rowsA, lp.rowsV}, values(lp.rowsB)...) {
		if n == nil {
			continue
		}
		t, err := engine.NewTensor(p.m.Backend, engine.I32, n.Shape())
		if err != nil {
			lp.release()
			return nil, err
		}
		lp.inputs[n] = t
	}
	for n, t := range lp.inputs {
		if err := prog.Bind(n, t); err != nil {
			lp.release()
			return nil, err
		}
	}
	for n, t := range lp.poolIn {
		if err := prog.Bind(n, t); err != nil {
			lp.release()
			return nil, err
		}
	}
	if p.loaders == nil {
		p.loaders = map[string]*loadProgram{}
	}
	p.loaders[key] = lp
	return lp, nil
}

func values(m map[int]*engine.Node) []*engine.Node {
	out := make([]*engine.Node, 0, len(m))
	for _, n := range m {
		out = append(out, n)
	}
	return out
}

// run copies a into slot s.
func (lp *loadProgram) run(p *pool, s int, a Adapter) error {
	byModule := map[string][]AdapterLayer{}
	for _, al := range a.Layers() {
		byModule[al.Module] = append(byModule[al.Module], al)
	}
	for n, get := range lp.adapterIn {
		var t *engine.Tensor
		for _, al := range byModule[lp.layerOf[n]] {
			if x := get(al); x != nil {
				t = x
			}
		}
		if t == nil {
			return fmt.Errorf("adapter pool: the adapter has no %s", n.Name())
		}
		if err := lp.p.Bind(n, t); err != nil {
			return fmt.Errorf("adapter pool: %w", err)
		}
	}
	seq := func(n, from int) []int32 {
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(from + i)
		}
		return v
	}
	if lp.rowsA != nil {
		if err := lp.inputs[lp.rowsA].SetInt32(seq(p.rank, s*p.rank)); err != nil {
			return err
		}
	}
	if err := lp.inputs[lp.rowsV].SetInt32([]int32{int32(s)}); err != nil {
		return err
	}
	for out, n := range lp.rowsB {
		if err := lp.inputs[n].SetInt32(seq(out, s*out)); err != nil {
			return err
		}
	}
	if err := lp.p.Run(); err != nil {
		return fmt.Errorf("adapter pool: load: %w", err)
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
