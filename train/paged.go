package train

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
)

// pager is a paged optimizer's device side (bitsandbytes' paged optimizers, done as explicit
// transfers): the state lives on a host backend, and each step, after one program has measured
// the gradients' norm and decided the clip and the skip (the status), each layer's state is
// written to staging buffers on the device, updated there by that layer's program, and read back.
// Two sets of staging buffers alternate between the layers, so that the next layer's state is
// written while this layer's update runs (a backend whose writes are queued, as WebGPU's are,
// overlaps the upload with the compute; one whose writes wait for the device serialises them).
// Device memory holds two layers' state instead of all of it; every step moves the whole state
// twice (host → device → host).
type pager struct {
	host engine.Backend
	// groups are the parameters' indices by layer (the "layers.N." of their names; the others
	// form one group).
	groups [][]int
	// status computes the status from every gradient; its grads are bound each step.
	status     *engine.Program
	statusNode *engine.Node
	grads      []*engine.Node
	loss       *engine.Tensor
	statusT    *engine.Tensor // a view of status's output, bound in every layer's program
	// progs are the layers' update programs; staging the device buffers they share (layer i
	// uses set i%2).
	progs   []*pagedProgram
	staging []*engine.Tensor
	moved   int64
}

// pagedProgram is one layer's update: its state nodes are bound to staging tensors, in the
// order stateOf lists the layer's host tensors.
type pagedProgram struct {
	p       *engine.Program
	params  []int
	grads   []*engine.Node
	status  *engine.Node
	host    []*engine.Tensor
	staging []*engine.Tensor
}

var layerIndex = regexp.MustCompile(`\.layers\.(\d+)\.`)

func newPager(params []Param) *pager {
	pg := &pager{host: cpu.New()}
	byLayer := map[int]int{} // layer → group
	for i, p := range params {
		l := -1
		if m := layerIndex.FindStringSubmatch(p.Name); m != nil {
			l, _ = strconv.Atoi(m[1])
		}
		g, ok := byLayer[l]
		if !ok {
			g = len(pg.groups)
			byLayer[l] = g
			pg.groups = append(pg.groups, nil)
		}
		pg.groups[g] = append(pg.groups[g], i)
	}
	return pg
}

func (pg *pager) stagingBytes() int64 {
	var n int64
	for _, t := range pg.staging {
		n += t.Meta().Bytes()
	}
	return n
}

func (pg *pager) close() {
	for _, p := range pg.progs {
		p.p.Release()
	}
	pg.progs = nil
	for _, t := range pg.staging {
		t.Release()
	}
	pg.staging = nil
	if pg.status != nil {
		pg.status.Release()
		pg.loss.Release()
		pg.status = nil
	}
}

// stateOf lists parameter i's host state tensors, in the order recordParam declares them.
func (o *AdamW) stateOf(i int) []*engine.Tensor {
	if o.cfg.EightBit {
		return []*engine.Tensor{o.q[i], o.absmax[i]}
	}
	return []*engine.Tensor{o.m[i], o.v[i]}
}

// compilePaged compiles the status program and the layers' update programs, and allocates the
// staging tensors: two sets (even and odd layers) of, for each dtype and shape, as many as the
// layer that needs the most.
func (o *AdamW) compilePaged() error {
	pg := o.pager
	g := engine.NewGraph()
	for i, p := range o.params {
		pg.grads = append(pg.grads, g.Input(fmt.Sprintf("grad.%d", i), engine.F32, p.Tensor.Shape()))
	}
	loss := g.Input("loss", engine.F32, engine.Shape{1})
	ctl := g.Input("optim.ctl", engine.F32, engine.Shape{engine.CtlLen})
	pg.statusNode = g.ClipStatus(loss, g.SumSquaresN(pg.grads...), ctl, o.cfg.MaxGradNorm)
	var err error
	if pg.status, err = engine.Compile(g, o.b, []*engine.Node{pg.statusNode}, engine.CompileOptions{}); err != nil {
		return err
	}
	// The gradients were summed from finite micro-batches: the loss operand only has to be finite.
	if pg.loss, err = zeros(o.b, engine.Shape{1}); err != nil {
		return err
	}
	if err := pg.status.Bind(loss, pg.loss); err != nil {
		return err
	}
	if err := pg.status.Bind(ctl, o.ctl); err != nil {
		return err
	}
	pools := [2]map[string][]*engine.Tensor{{}, {}}
	for gi, group := range pg.groups {
		pool := pools[gi%2]
		g := engine.NewGraph()
		og := &OptimGraph{ctl: g.Input("optim.ctl", engine.F32, engine.Shape{engine.CtlLen}),
			Status: g.Input("optim.status", engine.F32, engine.Shape{engine.StatusLen})}
		if o.cfg.EightBit {
			og.qmap = g.Input("optim.qmap", engine.F32, o.qmap.Shape())
		}
		pp := &pagedProgram{params: group, status: og.Status}
		var pnodes []*engine.Node
		for _, i := range group {
			p := o.params[i]
			pn := g.Input(fmt.Sprintf("param.%d", i), engine.F32, p.Tensor.Shape())
			gn := g.Input(fmt.Sprintf("grad.%d", i), engine.F32, p.Tensor.Shape())
			pnodes, pp.grads = append(pnodes, pn), append(pp.grads, gn)
			o.recordParam(g, og, i, pn, gn)
			pp.host = append(pp.host, o.stateOf(i)...)
		}
		if err := g.Err(); err != nil {
			return err
		}
		if pp.p, err = engine.Compile(g, o.b, og.Updates, engine.CompileOptions{}); err != nil {
			return err
		}
		pg.progs = append(pg.progs, pp)
		if err := pp.p.Bind(og.ctl, o.ctl); err != nil {
			return err
		}
		if og.qmap != nil {
			if err := pp.p.Bind(og.qmap, o.qmap); err != nil {
				return err
			}
		}
		for k, i := range group {
			if err := pp.p.Bind(pnodes[k], o.params[i].Tensor); err != nil {
				return err
			}
		}
		// The state nodes, in stateOf's order, each bound to the next staging tensor of its kind.
		var states []*engine.Node
		for k := range group {
			if o.cfg.EightBit {
				states = append(states, og.q[k], og.absmax[k])
			} else {
				states = append(states, og.m[k], og.v[k])
			}
		}
		used := map[string]int{}
		for _, n := range states {
			key := n.Meta().String()
			if used[key] == len(pool[key]) {
				t, err := engine.NewTensor(o.b, n.DType(), n.Shape())
				if err != nil {
					return err
				}
				pool[key] = append(pool[key], t)
				pg.staging = append(pg.staging, t)
			}
			t := pool[key][used[key]]
			used[key]++
			pp.staging = append(pp.staging, t)
			if err := pp.p.Bind(n, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// pagedStep is Step for a paged optimizer: the status (one submission, one read), then unless it
// skips, each layer's state written to the device, updated, and read back.
func (o *AdamW) pagedStep(grads []engine.Arg, lr, scale float32) (StepInfo, error) {
	pg := o.pager
	if pg.status == nil {
		if err := o.compilePaged(); err != nil {
			pg.close()
			return StepInfo{}, fmt.Errorf("adamw: paged: %w", err)
		}
	}
	views := make([]*engine.Tensor, len(grads))
	for i, g := range grads {
		t, err := engine.View(o.b, g.Buf, o.params[i].Tensor.Meta())
		if err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %s: %w", o.params[i].Name, err)
		}
		if err := pg.status.Bind(pg.grads[i], t); err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %w", err)
		}
		views[i] = t
	}
	if err := o.begin(lr, scale); err != nil {
		return StepInfo{}, err
	}
	if err := pg.status.Run(); err != nil {
		return StepInfo{}, fmt.Errorf("adamw: step %d: %w", o.step+1, err)
	}
	st, err := pg.status.Float32(pg.statusNode)
	if err != nil {
		return StepInfo{}, fmt.Errorf("adamw: %w", err)
	}
	pg.moved = 0
	if st[engine.StatusSkip] != 0 {
		return o.finish(st, scale), nil
	}
	if pg.statusT == nil {
		a, err := pg.status.Arg(pg.statusNode)
		if err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %w", err)
		}
		if pg.statusT, err = engine.View(o.b, a.Buf, a.Meta); err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %w", err)
		}
	}
	// Layer j's update is submitted, then layer j+1's state written into the other staging set
	// (while j's update runs), then j's state read back.
	upload := func(pp *pagedProgram) error {
		for k, h := range pp.host {
			raw, err := h.Bytes()
			if err != nil {
				return fmt.Errorf("adamw: paged: %w", err)
			}
			if err := pp.staging[k].SetBytes(raw); err != nil {
				return fmt.Errorf("adamw: paged: %w", err)
			}
			pg.moved += int64(len(raw))
		}
		return nil
	}
	if len(pg.progs) > 0 {
		if err := upload(pg.progs[0]); err != nil {
			return StepInfo{}, err
		}
	}
	for j, pp := range pg.progs {
		if err := pp.p.Bind(pp.status, pg.statusT); err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %w", err)
		}
		for k, i := range pp.params {
			if err := pp.p.Bind(pp.grads[k], views[i]); err != nil {
				return StepInfo{}, fmt.Errorf("adamw: %w", err)
			}
		}
		if err := pp.p.Run(); err != nil {
			return StepInfo{}, fmt.Errorf("adamw: step %d: %w", o.step+1, err)
		}
		if j+1 < len(pg.progs) {
			if err := upload(pg.progs[j+1]); err != nil {
				return StepInfo{}, err
			}
		}
		for k, h := range pp.host {
			raw, err := pp.staging[k].Bytes()
			if err != nil {
				return StepInfo{}, fmt.Errorf("adamw: paged: %w", err)
			}
			if err := h.SetBytes(raw); err != nil {
				return StepInfo{}, fmt.Errorf("adamw: paged: %w", err)
			}
			pg.moved += int64(len(raw))
		}
	}
	return o.finish(st, scale), nil
}
