package webgpu

import (
	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// The optimizer's ops (engine/optim.go): a training step's update recorded in its own submission.

// sumSquaresN puts each operand's Σx² at a slot of a scratch buffer (one reduce_at, or two passes
// for a large operand) and adds the slots in order into y.
func (r *recorder) sumSquaresN(l engine.Launch, in []bind, y bind) error {
	const perGroup = 16 * wg
	slots, err := r.temp(int64(4 * len(in)))
	if err != nil {
		return err
	}
	for i, x := range in {
		n := l.In[i].Meta.Shape.Numel()
		if n <= perGroup {
			r.dispatch("reduce_at", []shaders.Const{c("WG", wg), c("OP", 1)}, [3]uint32{1, 1, 1}, new(params).u(n, n, i), x, slots)
			continue
		}
		chunk := max(ceilDiv(n, 1024), perGroup)
		groups := ceilDiv(n, chunk)
		part, err := r.temp(int64(4 * groups))
		if err != nil {
			return err
		}
		g, err := groupsFor(groups, r.b.maxGroups())
		if err != nil {
			return err
		}
		r.dispatch("reduce_at", []shaders.Const{c("WG", wg), c("OP", 1)}, g, new(params).u(n, chunk, 0), x, part)
		part.rw = false
		r.dispatch("reduce_at", []shaders.Const{c("WG", wg), c("OP", 0)}, [3]uint32{1, 1, 1}, new(params).u(groups, groups, i), part, slots)
	}
	slots.rw = false
	r.dispatch("sum_in_order", []shaders.Const{c("WG", wg)}, [3]uint32{1, 1, 1}, new(params).u(len(in)), slots, y)
	return nil
}

// adamwStep binds p, m and v once each, read-write (the outputs are the operands' buffers).
func (r *recorder) adamwStep(op engine.AdamWStep, l engine.Launch, in, out []bind) error {
	n := l.In[0].Meta.Shape.Numel()
	g, err := r.items(n, wg)
	if err != nil {
		return err
	}
	p := new(params).u(n).f(op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	r.dispatch("adamw_step", []shaders.Const{c("WG", wg)}, g, p, out[0], in[1], out[1], out[2], in[4], in[5])
	return nil
}

// adamw8bitStep runs one workgroup of 64 per block of engine.Optim8Block values (each invocation
// owns one u32 word of each moment's codes, which start on words: engine.Optim8Codes); p, q and absmax are bound read-write once each.
func (r *recorder) adamw8bitStep(op engine.AdamW8bitStep, l engine.Launch, in, out []bind) error {
	n := l.In[0].Meta.Shape.Numel()
	nb := engine.Optim8Blocks(n)
	g, err := groupsFor(nb, r.b.maxGroups())
	if err != nil {
		return err
	}
	p := new(params).u(n, nb, engine.Optim8Codes(n)/4).f(op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	r.dispatch("adamw8bit_step", []shaders.Const{c("WG", engine.Optim8Block/4)}, g, p, out[0], in[1], out[1], out[2], in[4], in[5], in[6])
	return nil
}
