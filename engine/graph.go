package engine

import (
	"errors"
	"fmt"
)

// Op is one kernel of the graph: what a backend runs as one dispatch. Ops are plain structs whose
// fields are the kernel's parameters; backends switch on the concrete type.
type Op interface {
	// Name is the op's name in errors and profiles.
	Name() string
	// Infer checks the operands and returns the outputs' shapes and types.
	Infer(in []Meta) ([]Meta, error)
}

// gradOp is implemented by ops that carry gradient: grad adds to g the nodes that compute the
// gradient of every input i with need[i], given the gradients dout of the outputs (nil where an
// output received none). It returns one node per input (nil where not needed).
type gradOp interface {
	grad(g *Graph, n *Node, dout []*Node, need []bool) []*Node
}

// detachOp is implemented by ops some of whose operands carry no gradient, whatever they depend
// on (a stop-gradient): nothing upstream of them is differentiated through the op.
type detachOp interface{ detached(i int) bool }

// viewOp is implemented by ops whose output shares its first input's storage (reshapes).
type viewOp interface{ isView() }

// inPlaceOp is implemented by ops that write their output over their first input's storage: the
// launch runs, and its output argument is the first input's buffer.
type inPlaceOp interface{ isInPlace() }

// aliasOp is implemented by multi-output ops that write output k over the storage of input
// aliases()[k] (the optimizer's update of parameters and moments).
type aliasOp interface{ aliases() []int }

type nodeKind uint8

const (
	kindOp     nodeKind = iota
	kindInput           // bound at run time, never differentiated
	kindParam           // bound at run time; trainable params receive gradients
	kindOutput          // output k of a multi-output op node
)

// Node is a value in a Graph: an input, a parameter, or the result of an op.
type Node struct {
	g         *Graph
	id        int
	kind      nodeKind
	op        Op
	src       []*Node
	meta      Meta
	name      string
	trainable bool
	// needsGrad: this value depends on a trainable parameter.
	needsGrad bool
	// block is the gradient-checkpointing block the node was recorded in, -1 outside blocks.
	block int
	// outs are the output nodes of a multi-output op; index is this node's position among them.
	outs  []*Node
	index int
	// backward marks nodes recorded by Backward.
	backward bool
	// constant is the value of a constant input (recorded by a decomposition): the program
	// uploads and binds it itself.
	constant []float32
}

// Meta is the node's shape and type.
func (n *Node) Meta() Meta { return n.meta }

// Shape is the node's shape; do not modify it.
func (n *Node) Shape() Shape { return n.meta.Shape }

// DType is the node's element type.
func (n *Node) DType() DType { return n.meta.DType }

// Name is the name given to an input or parameter ("" for op results).
func (n *Node) Name() string { return n.name }

// Op is the op that computes the node (nil for inputs, parameters and multi-output slots).
func (n *Node) Op() Op { return n.op }

// Trainable reports whether the node is a trainable parameter.
func (n *Node) Trainable() bool { return n.trainable }

func (n *Node) String() string {
	switch n.kind {
	case kindInput:
		return fmt.Sprintf("input %q %s", n.name, n.meta)
	case kindParam:
		return fmt.Sprintf("param %q %s", n.name, n.meta)
	case kindOutput:
		return fmt.Sprintf("%s#%d output %d %s", n.src[0].op.Name(), n.src[0].id, n.index, n.meta)
	}
	return fmt.Sprintf("%s#%d %s", n.op.Name(), n.id, n.meta)
}

// Graph records ops once, to be compiled for a backend and run many times. Builder methods never
// panic: the first error is kept, later calls return a placeholder node, and Err (and Compile)
// report it.
type Graph struct {
	nodes    []*Node
	err      error
	block    int
	blocks   int
	backward bool
	params   map[string]*Node
}

// NewGraph returns an empty graph.
func NewGraph() *Graph { return &Graph{block: -1, params: map[string]*Node{}} }

// Err returns the first error met while building the graph.
func (g *Graph) Err() error { return g.err }

// Nodes returns the recorded nodes in execution order.
func (g *Graph) Nodes() []*Node { return g.nodes }

func (g *Graph) fail(err error) *Node {
	if g.err == nil {
		g.err = err
	}
	return g.placeholder()
}

// placeholder is returned after an error so that building code can go on without nil checks.
func (g *Graph) placeholder() *Node {
	return &Node{g: g, id: -1, kind: kindInput, meta: Meta{Shape: Shape{1}, DType: F32}, block: -1}
}

func (g *Graph) add(n *Node) *Node {
	n.g = g
	n.id = len(g.nodes)
	n.block = g.block
	n.backward = g.backward
	if g.backward {
		n.block = -1
	}
	g.nodes = append(g.nodes, n)
	return n
}

// Input declares a value supplied at run time (token ids, targets, quantized weights), never
// differentiated.
func (g *Graph) Input(name string, dt DType, shape Shape) *Node {
	return g.leaf(kindInput, name, dt, shape, false)
}

// Param declares a parameter supplied at run time. Trainable parameters receive gradients from
// Backward; frozen ones get none.
func (g *Graph) Param(name string, dt DType, shape Shape, trainable bool) *Node {
	if trainable && dt != F32 {
		return g.fail(fmt.Errorf("param %q: trainable parameters are f32, not %s", name, dt))
	}
	return g.leaf(kindParam, name, dt, shape, trainable)
}

func (g *Graph) leaf(kind nodeKind, name string, dt DType, shape Shape, trainable bool) *Node {
	if g.err != nil {
		return g.placeholder()
	}
	if !shape.valid() || len(shape) == 0 {
		return g.fail(fmt.Errorf("%s: shape %v must have positive dimensions", name, shape))
	}
	if _, dup := g.params[name]; dup {
		return g.fail(fmt.Errorf("%s: declared twice", name))
	}
	n := g.add(&Node{kind: kind, name: name, meta: Meta{Shape: shape.Clone(), DType: dt}, trainable: trainable, needsGrad: trainable})
	g.params[name] = n
	return n
}

// constant records an f32 constant input with the given value: a leaf the compiled program binds
// itself (not a named input, not in Lookup).
func (g *Graph) constant(shape Shape, v []float32) *Node {
	if g.err != nil {
		return g.placeholder()
	}
	if shape.Numel() != len(v) {
		return g.fail(fmt.Errorf("constant of %d values for shape %s", len(v), shape))
	}
	return g.add(&Node{kind: kindInput, meta: Meta{Shape: shape.Clone(), DType: F32}, constant: v})
}

// Lookup returns the input or parameter with the given name, or nil.
func (g *Graph) Lookup(name string) *Node { return g.params[name] }

// BeginBlock starts a gradient-checkpointing block: with Recompute, activations recorded inside it
// are dropped after the forward pass and recomputed before the block's backward pass.
func (g *Graph) BeginBlock() {
	g.block = g.blocks
	g.blocks++
}

// EndBlock ends the current checkpointing block.
func (g *Graph) EndBlock() { g.block = -1 }

// Apply records op on the inputs and returns its outputs.
func (g *Graph) Apply(op Op, in ...*Node) []*Node {
	if g.err != nil {
		return g.placeholders(op)
	}
	metas := make([]Meta, len(in))
	for i, x := range in {
		if x == nil || x.g != g || x.id < 0 {
			g.fail(fmt.Errorf("%s: input %d is not a node of this graph", op.Name(), i))
			return g.placeholders(op)
		}
		metas[i] = x.meta
	}
	outs, err := op.Infer(metas)
	if err != nil {
		g.fail(fmt.Errorf("%s(%s): %w", op.Name(), metaList(metas), err))
		return g.placeholders(op)
	}
	needs := false
	dop, _ := op.(detachOp)
	for i, x := range in {
		needs = needs || (x.needsGrad && (dop == nil || !dop.detached(i)))
	}
	n := g.add(&Node{kind: kindOp, op: op, src: append([]*Node(nil), in...), needsGrad: needs})
	if len(outs) == 1 {
		n.meta = outs[0]
		return []*Node{n}
	}
	n.meta = Meta{Shape: Shape{0}, DType: F32}
	res := make([]*Node, len(outs))
	for i, m := range outs {
		res[i] = g.add(&Node{kind: kindOutput, src: []*Node{n}, meta: m, index: i, needsGrad: needs})
	}
	n.outs = res
	return res
}

// Apply1 records a single-output op.
func (g *Graph) Apply1(op Op, in ...*Node) *Node { return g.Apply(op, in...)[0] }

func (g *Graph) placeholders(op Op) []*Node {
	ps := make([]*Node, 8)
	for i := range ps {
		ps[i] = g.placeholder()
	}
	return ps
}

func metaList(ms []Meta) string {
	s := ""
	for i, m := range ms {
		if i > 0 {
			s += ", "
		}
		s += m.String()
	}
	return s
}

var errNoGrad = errors.New("op has no gradient")
