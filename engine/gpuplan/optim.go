package gpuplan

import (
	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// The optimizer's ops (engine/optim.go): a training step's update recorded in its own submission.

// sumSquaresN puts each operand's Σx² at a slot of a scratch buffer (one reduce_at, or two passes
// for a large operand) and adds the slots in order into y.
func (q *planner) sumSquaresN(l engine.Launch, in []Ref, y Ref) error {
	const perGroup = 16 * WG
	slots := q.temp(int64(4 * len(in)))
	for i, x := range in {
		n := l.In[i].Meta.Shape.Numel()
		if n <= perGroup {
			q.dispatch("reduce_at", []shaders.Const{c("WG", WG), c("OP", 1)}, [3]uint32{1, 1, 1}, new(Params).U(n, n, i), x, slots)
			continue
		}
		chunk := max(CeilDiv(n, 1024), perGroup)
		groups := CeilDiv(n, chunk)
		part := q.temp(int64(4 * groups))
		g, err := GroupsFor(groups, q.d.maxGroups())
		if err != nil {
			return err
		}
		q.dispatch("reduce_at", []shaders.Const{c("WG", WG), c("OP", 1)}, g, new(Params).U(n, chunk, 0), x, part)
		part.RW = false
		q.dispatch("reduce_at", []shaders.Const{c("WG", WG), c("OP", 0)}, [3]uint32{1, 1, 1}, new(Params).U(groups, groups, i), part, slots)
	}
	slots.RW = false
	q.dispatch("sum_in_order", []shaders.Const{c("WG", WG)}, [3]uint32{1, 1, 1}, new(Params).U(len(in)), slots, y)
	return nil
}

// adamwStep binds p, m and v once each, read-write (the outputs are the operands' buffers).
func (q *planner) adamwStep(op engine.AdamWStep, l engine.Launch, in, out []Ref) error {
	n := l.In[0].Meta.Shape.Numel()
	g, err := q.items(n, WG)
	if err != nil {
		return err
	}
	p := new(Params).U(n).F(op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	q.dispatch("adamw_step", []shaders.Const{c("WG", WG)}, g, p, out[0], in[1], out[1], out[2], in[4], in[5])
	return nil
}

// adamw8bitStep runs one workgroup per block of engine.Optim8Block values (each invocation owns one
// u32 word of each moment's codes, which start on words: engine.Optim8Codes); p, the codes and the
// absmax values are bound read-write once each.
func (q *planner) adamw8bitStep(op engine.AdamW8bitStep, l engine.Launch, in, out []Ref) error {
	n := l.In[0].Meta.Shape.Numel()
	nb := engine.Optim8Blocks(n)
	g, err := GroupsFor(nb, q.d.maxGroups())
	if err != nil {
		return err
	}
	p := new(Params).U(n, nb, engine.Optim8Codes(n)/4).F(op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	q.dispatch("adamw8bit_step", []shaders.Const{c("WG", engine.Optim8Block/4)}, g, p, out[0], in[1], out[1], out[2], in[4], in[5], in[6])
	return nil
}
