package engine

import (
	"fmt"
	"slices"
	"sort"
)

// CompileOptions tune how a graph is compiled.
type CompileOptions struct {
	// Recompute drops the activations recorded inside BeginBlock/EndBlock blocks after the forward
	// pass and recomputes each block just before its backward pass (gradient checkpointing): less
	// memory for one more forward pass of the blocks.
	Recompute bool
	// Save, F16 or BF16, keeps the forward activations that the backward pass reads in that type
	// between the two passes (mixed precision): each is cast right after it is computed, its f32
	// buffer freed after its last forward use, and widened to f32 before its first backward use,
	// so arithmetic stays f32. Values of one row (vectors, scalars), program outputs and
	// attention's log-sum-exp (its backward needs it exactly) stay f32. Zero (F32): off.
	Save DType
}

// Program is a graph compiled for one backend: a schedule of launches over a static buffer plan in
// which values whose lifetimes do not overlap share buffers. Compile once, Run many times.
type Program struct {
	backend Backend
	steps   []step
	slots   []*slot
	// slotOf maps every scheduled value (including views) to its storage.
	slotOf  map[*Node]*slot
	leaves  []*Node // inputs and params the schedule reads
	bound   map[*Node]*Tensor
	bufs    []Buffer // planned buffers, allocated on the first Run
	bufSize []int64
	outputs []*Node
	peak    int64
	// floor is the peak of live values' own bytes: the planned memory with ideal buffer reuse.
	floor int64
	// sub maps the graph's nodes to the nodes that replaced them where an op was decomposed.
	sub map[*Node]*Node
	// exec is the launch list prepared on the backend (nil until the first Run, or after a bind
	// that changed a leaf's buffer); execLeaf holds the leaves' buffers it was prepared over.
	exec     Executable
	execLeaf []Buffer
	runs     int
	// consts are the tensors of constant inputs, which the program uploads and binds itself.
	consts []*Tensor
}

type step struct {
	node *Node // the op node (a clone when recomputed)
	in   []*Node
	outs []*Node
}

// slot is the storage of one value: a planned buffer, or a bound leaf.
type slot struct {
	leaf    *Node // set for inputs and params
	buf     int   // index into Program.bufs for planned values
	bytes   int64
	first   int // the step that writes it
	lastUse int
	output  bool
}

// Compile schedules the nodes needed to compute outputs on backend b and plans their buffers. An op
// b's Supports refuses is replaced by its decomposition into core ops (see Decomposable); Compile
// fails if the graph had a build error or b lacks a kernel for a core op. Decomposing records
// nodes on the graph and takes them off again, so compiles of one graph for a backend that
// refuses ops must not run concurrently.
func Compile(g *Graph, b Backend, outputs []*Node, opts CompileOptions) (*Program, error) {
	if g.err != nil {
		return nil, fmt.Errorf("compile: %w", g.err)
	}
	for _, o := range outputs {
		if o == nil || o.g != g || o.id < 0 {
			return nil, fmt.Errorf("compile: output %v is not a node of this graph", o)
		}
	}
	nodes, sub, err := lower(g, b, outputs)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	outs := make([]*Node, len(outputs))
	for i, o := range outputs {
		outs[i] = o
		if r, ok := sub[o]; ok {
			outs[i] = r
		}
	}
	p := &Program{backend: b, slotOf: map[*Node]*slot{}, bound: map[*Node]*Tensor{}, outputs: outs, sub: sub}
	seen := map[*Node]bool{}
	if opts.Save != F32 && !IsHalf(opts.Save) {
		return nil, fmt.Errorf("compile: saved activations must be f16 or bf16, not %s", opts.Save)
	}
	for _, st := range saveHalf(schedule(nodes, g, outs, opts.Recompute), outs, opts.Save, opts.Recompute) {
		n, in := st.node, st.in
		for _, s := range in {
			if (s.kind == kindInput || s.kind == kindParam) && !seen[s] {
				seen[s] = true
				p.leaves = append(p.leaves, s)
			}
		}
		metas := make([]Meta, len(in))
		for i, s := range in {
			metas[i] = s.meta
		}
		if err := b.Supports(n.op, metas); err != nil {
			return nil, fmt.Errorf("compile: %s on %s: %w", n, b.Device().Backend, err)
		}
		p.steps = append(p.steps, st)
	}
	p.plan()
	return p, nil
}

// neededBy returns the nodes that outputs depend on, outputs included.
func neededBy(outputs []*Node) map[*Node]bool {
	needed := map[*Node]bool{}
	var mark func(n *Node)
	mark = func(n *Node) {
		if needed[n] {
			return
		}
		needed[n] = true
		for _, s := range n.src {
			mark(s)
		}
	}
	for _, o := range outputs {
		mark(o)
	}
	return needed
}

// schedule lists the steps needed to compute outputs in execution order (nodes are the graph's,
// lowered for the backend). With recompute, backward steps read clones of the checkpointed
// activations, scheduled just before their first use.
func schedule(nodes []*Node, g *Graph, outputs []*Node, recompute bool) []step {
	needed := neededBy(outputs)
	var order []step
	clones := map[*Node]*Node{}
	var clone func(x *Node) *Node
	// remap returns the recomputed clone of s when s is a checkpointed forward activation, else s.
	remap := func(s *Node) *Node {
		if s.backward || s.block < 0 || (s.kind != kindOp && s.kind != kindOutput) {
			return s
		}
		return clone(s)
	}
	clone = func(x *Node) *Node {
		if x.kind == kindOutput {
			return clone(x.src[0]).outs[x.index]
		}
		if c, ok := clones[x]; ok {
			return c
		}
		c := &Node{g: g, id: x.id, kind: kindOp, op: x.op, meta: x.meta, block: x.block}
		for _, s := range x.src {
			// Values from outside the block (its input: the previous block's output) are kept.
			if s.block == x.block {
				s = remap(s)
			}
			c.src = append(c.src, s)
		}
		for _, o := range x.outs {
			oc := *o
			oc.src = []*Node{c}
			c.outs = append(c.outs, &oc)
		}
		clones[x] = c
		order = append(order, step{node: c, in: c.src, outs: outsOf(c)})
		return c
	}
	for _, n := range nodes {
		if !needed[n] || n.kind != kindOp {
			continue
		}
		in := n.src
		if recompute && n.backward {
			in = make([]*Node, len(n.src))
			for i, s := range n.src {
				in[i] = remap(s)
			}
		}
		order = append(order, step{node: n, in: in, outs: outsOf(n)})
	}
	return order
}

// saveHalf rewrites a schedule so that the f32 forward activations backward steps read are kept in
// dt between the passes (CompileOptions.Save): a Cast to dt after the step that makes one, a Cast
// back to f32 before the first backward step that reads it, which the later ones share. With
// recompute, checkpointed activations are recomputed rather than kept, and stay f32.
func saveHalf(order []step, outputs []*Node, dt DType, recompute bool) []step {
	if !IsHalf(dt) {
		return order
	}
	keep := map[*Node]bool{}
	for _, o := range outputs {
		keep[o] = true
	}
	forward := map[*Node]bool{} // values made by forward steps (recomputed clones included)
	for _, st := range order {
		if !st.node.backward {
			for _, o := range st.outs {
				forward[o] = true
			}
		}
	}
	saved := map[*Node]bool{}
	for _, st := range order {
		if !st.node.backward {
			continue
		}
		for _, x := range st.in {
			lse := x.kind == kindOutput && x.index == 1 && isAttention(x.src[0].op)
			recomputed := recompute && x.block >= 0
			if forward[x] && !keep[x] && !lse && !recomputed && x.meta.DType == F32 && x.meta.Shape.Rows() > 1 {
				saved[x] = true
			}
		}
	}
	if len(saved) == 0 {
		return order
	}
	half, wide := map[*Node]*Node{}, map[*Node]*Node{}
	res := make([]step, 0, len(order)+2*len(saved))
	for _, st := range order {
		if st.node.backward {
			var in []*Node
			for i, x := range st.in {
				h, ok := half[x]
				if !ok {
					continue
				}
				w := wide[x]
				if w == nil {
					w = &Node{g: x.g, id: -1, kind: kindOp, op: Cast{To: F32}, meta: x.meta, src: []*Node{h}, block: -1, backward: true}
					wide[x] = w
					res = append(res, step{node: w, in: w.src, outs: outsOf(w)})
				}
				if in == nil {
					in = append([]*Node(nil), st.in...)
				}
				in[i] = w
			}
			if in != nil {
				st.in = in
			}
		}
		res = append(res, st)
		if st.node.backward {
			continue
		}
		for _, o := range st.outs {
			if saved[o] && half[o] == nil {
				h := &Node{g: o.g, id: -1, kind: kindOp, op: Cast{To: dt}, meta: Meta{o.meta.Shape, dt}, src: []*Node{o}, block: -1}
				half[o] = h
				res = append(res, step{node: h, in: h.src, outs: outsOf(h)})
			}
		}
	}
	return res
}

func isAttention(op Op) bool {
	_, ok := op.(Attention)
	return ok
}

// plan assigns every value a buffer, sharing buffers between values whose lifetimes do not
// overlap: largest values first, each into the smallest buffer free over its whole lifetime, else
// a new one (the offline greedy-by-size assignment; the schedule is known in full). A value
// produced by a step never shares with that step's operands.
func (p *Program) plan() {
	// Storage for leaves and produced values; views share their root's.
	for _, n := range p.leaves {
		p.slotOf[n] = &slot{leaf: n, buf: -1, lastUse: -1}
	}
	for i, st := range p.steps {
		if _, ok := st.node.op.(viewOp); ok {
			p.slotOf[st.node] = p.slotOf[st.in[0]]
			continue
		}
		for _, x := range st.in {
			if s := p.slotOf[x]; s != nil && s.lastUse < i {
				s.lastUse = i
			}
		}
		if _, ok := st.node.op.(inPlaceOp); ok {
			p.slotOf[st.node] = p.slotOf[st.in[0]]
			continue
		}
		if a, ok := st.node.op.(aliasOp); ok {
			for k, o := range st.outs {
				p.slotOf[o] = p.slotOf[st.in[a.aliases()[k]]]
			}
			continue
		}
		for _, o := range st.outs {
			s := &slot{buf: -1, bytes: o.meta.Bytes(), first: i, lastUse: i}
			p.slotOf[o] = s
			p.slots = append(p.slots, s)
		}
	}
	for _, o := range p.outputs {
		if s := p.slotOf[o]; s != nil {
			s.output = true
		}
	}
	// Outputs live to the end of the run (the caller reads them).
	for _, s := range p.slots {
		if s.output {
			s.lastUse = len(p.steps)
		}
	}
	order := append([]*slot(nil), p.slots...)
	sort.SliceStable(order, func(a, b int) bool { return order[a].bytes > order[b].bytes })
	// users[j] are the values assigned to buffer j, by first step; their lifetimes are disjoint,
	// so a lifetime fits when it overlaps neither neighbour of its place in that order.
	users := [][]*slot{}
	fits := func(us []*slot, s *slot) (int, bool) {
		k, _ := slices.BinarySearchFunc(us, s.first, func(u *slot, first int) int { return u.first - first })
		if k > 0 && us[k-1].lastUse >= s.first {
			return k, false
		}
		return k, k == len(us) || us[k].first > s.lastUse
	}
	for _, s := range order {
		best, at := -1, 0
		for j, us := range users {
			if best >= 0 && p.bufSize[j] >= p.bufSize[best] {
				continue
			}
			if k, ok := fits(us, s); ok {
				best, at = j, k
			}
		}
		if best < 0 {
			best = len(p.bufSize)
			p.bufSize = append(p.bufSize, s.bytes)
			users = append(users, nil)
		}
		s.buf = best
		users[best] = slices.Insert(users[best], at, s)
	}
	// The peak of live values' own bytes (the floor) and of the buffers they occupy.
	exact := make([]int64, len(p.steps)+2)
	for _, s := range p.slots {
		exact[s.first] += s.bytes
		exact[s.lastUse+1] -= s.bytes
	}
	var live, floor int64
	for _, d := range exact {
		live += d
		floor = max(floor, live)
	}
	// A buffer counts at step i when one of its values is live then.
	occupied := make([]int64, len(p.steps)+1)
	busy := make([]bool, len(p.steps)+1)
	for j, us := range users {
		clear(busy)
		for _, u := range us {
			for k := u.first; k <= u.lastUse; k++ {
				busy[k] = true
			}
		}
		for k, b := range busy {
			if b {
				occupied[k] += p.bufSize[j]
			}
		}
	}
	p.floor, p.peak = floor, slices.Max(append(occupied, 0))
}

// FloorBytes is the least memory the planned values need: the largest sum of the sizes of the
// values live at once during a run (bound inputs and parameters not included). PlannedBytes over
// FloorBytes is how far the buffer plan is from ideal reuse.
func (p *Program) FloorBytes() int64 { return p.floor }

// PeakBytes is the largest number of bytes of planned buffers live at once during a run (bound
// inputs and parameters not included).
func (p *Program) PeakBytes() int64 { return p.peak }

// PlannedBytes is the total size of the planned buffers (what the program allocates).
func (p *Program) PlannedBytes() int64 {
	var t int64
	for _, s := range p.bufSize {
		t += s
	}
	return t
}

// Launches is the number of kernel launches of one run.
func (p *Program) Launches() int {
	n := 0
	for _, st := range p.steps {
		if _, ok := st.node.op.(viewOp); !ok {
			n++
		}
	}
	return n
}

// Leaves lists the inputs and parameters a run reads; each must be bound.
func (p *Program) Leaves() []*Node {
	var ls []*Node
	for _, n := range p.leaves {
		if n.constant == nil {
			ls = append(ls, n)
		}
	}
	return ls
}

// Bind supplies the tensor for an input or parameter. The tensor must live on the program's
// backend and match the node's shape and type.
func (p *Program) Bind(n *Node, t *Tensor) error {
	if n.kind != kindInput && n.kind != kindParam {
		return fmt.Errorf("bind %s: not an input or parameter", n)
	}
	if t.backend != p.backend {
		return fmt.Errorf("bind %s: tensor lives on another backend", n)
	}
	if t.buf == nil {
		return fmt.Errorf("bind %s: the tensor was released", n)
	}
	if t.meta.DType != n.meta.DType || !t.meta.Shape.Equal(n.meta.Shape) {
		return fmt.Errorf("bind %s: tensor is %s", n, t.meta)
	}
	// Rebinding the same buffer (a new batch written into the same tensor) keeps the prepared
	// launches; another buffer makes the next Run prepare them again.
	p.bound[n] = t
	return nil
}

// Run executes the program once, as one submission to the backend. The first Run plans its
// launches and has the backend prepare them (engine.Prepare); later runs resubmit that
// preparation, and prepare again only when a bound leaf now lives in another buffer.
func (p *Program) Run() error {
	if p.exec != nil && p.execLeaf != nil {
		same := true
		for i, n := range p.leaves {
			t := p.bound[n]
			if t == nil || t.buf != p.execLeaf[i] {
				same = false
				break
			}
		}
		if same {
			p.runs++
			if err := p.exec.Run(); err != nil {
				return fmt.Errorf("run: %w", err)
			}
			return nil
		}
	}
	// alloc binds the program's own constants, so it comes before the check that every leaf is bound.
	if err := p.alloc(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	for _, n := range p.leaves {
		if t := p.bound[n]; t == nil || t.buf == nil {
			return fmt.Errorf("run: %s is not bound (or its tensor was released)", n)
		}
	}
	if err := p.prepare(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	p.runs++
	if err := p.exec.Run(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// Runs is the number of times the program was submitted.
func (p *Program) Runs() int { return p.runs }

// prepare builds the launch list over the current buffers and has the backend prepare it.
func (p *Program) prepare() error {
	if p.exec != nil {
		p.exec.Release()
		p.exec, p.execLeaf = nil, nil
	}
	launches := make([]Launch, 0, len(p.steps))
	for _, st := range p.steps {
		if _, ok := st.node.op.(viewOp); ok {
			continue
		}
		l := Launch{Op: st.node.op, In: make([]Arg, len(st.in)), Out: make([]Arg, len(st.outs))}
		for i, x := range st.in {
			l.In[i] = p.arg(x)
		}
		for i, o := range st.outs {
			l.Out[i] = p.arg(o)
		}
		launches = append(launches, l)
	}
	exec, err := Prepare(p.backend, launches)
	if err != nil {
		return err
	}
	p.exec = exec
	p.execLeaf = make([]Buffer, len(p.leaves))
	for i, n := range p.leaves {
		p.execLeaf[i] = p.bound[n].buf
	}
	return nil
}

func (p *Program) alloc() error {
	if p.bufs != nil {
		return nil
	}
	p.bufs = make([]Buffer, len(p.bufSize))
	for i, sz := range p.bufSize {
		b, err := p.backend.Alloc(sz)
		if err != nil {
			p.Release()
			return fmt.Errorf("allocate %d bytes: %w", sz, err)
		}
		p.bufs[i] = b
	}
	for _, n := range p.leaves {
		if n.constant == nil {
			continue
		}
		t, err := FromFloat32(p.backend, n.meta.Shape, n.constant)
		if err != nil {
			p.Release()
			return fmt.Errorf("constant %s: %w", n.meta, err)
		}
		p.consts = append(p.consts, t)
		p.bound[n] = t
	}
	return nil
}

// Poison fills every planned buffer with 0xFF bytes (NaN as f32) so that a test can tell an
// element a kernel failed to write from one it wrote.
func (p *Program) Poison() error {
	if err := p.alloc(); err != nil {
		return err
	}
	for i, b := range p.bufs {
		nan := make([]byte, p.bufSize[i])
		for j := range nan {
			nan[j] = 0xFF
		}
		if err := p.backend.Write(b, 0, nan); err != nil {
			return fmt.Errorf("poison: %w", err)
		}
	}
	return nil
}

func (p *Program) arg(n *Node) Arg {
	s := p.slotOf[n]
	if s.leaf != nil {
		return Arg{Buf: p.bound[s.leaf].buf, Meta: n.meta}
	}
	return Arg{Buf: p.bufs[s.buf], Meta: n.meta}
}

// Arg returns the buffer holding an output value after Run (valid until the next Run), so that
// other launches (an optimizer step) can read it without a copy.
func (p *Program) Arg(n *Node) (Arg, error) {
	if r, ok := p.sub[n]; ok {
		n = r
	}
	s := p.slotOf[n]
	if s == nil || (!s.output && s.leaf == nil) {
		return Arg{}, fmt.Errorf("%s is not an output of the program", n)
	}
	if s.leaf == nil && p.bufs == nil {
		return Arg{}, fmt.Errorf("%s: the program has not run", n)
	}
	if s.leaf != nil && p.bound[s.leaf] == nil {
		return Arg{}, fmt.Errorf("%s is not bound", n)
	}
	return p.arg(n), nil
}

// Float32 reads an f32 output value back after Run.
func (p *Program) Float32(n *Node) ([]float32, error) {
	a, err := p.Arg(n)
	if err != nil {
		return nil, err
	}
	t := &Tensor{meta: a.Meta, buf: a.Buf, backend: p.backend}
	return t.Float32()
}

// Release frees the program's planned buffers and its prepared launches; bound tensors stay with
// their owners.
func (p *Program) Release() {
	if p.exec != nil {
		p.exec.Release()
		p.exec, p.execLeaf = nil, nil
	}
	for _, b := range p.bufs {
		if b != nil {
			p.backend.Free(b)
		}
	}
	p.bufs = nil
	for _, t := range p.consts {
		t.Release()
	}
	p.consts = nil
}
