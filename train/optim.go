package train

import (
	"cmp"
	"errors"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/quant"
)

// Param is one trainable parameter: an f32 tensor and the name it is saved under.
type Param struct {
	Name   string
	Tensor *engine.Tensor
	// NoDecay exempts the parameter from weight decay (biases and norms, as transformers does).
	NoDecay bool
}

// AdamWConfig holds AdamW's hyperparameters; the learning rate comes per step from a Schedule.
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float32
	// MaxGradNorm clips the global L2 norm of the gradients to this value; 0 disables clipping.
	MaxGradNorm float32
	// EightBit stores both moments blockwise in 8 bits, as bitsandbytes' AdamW8bit does
	// (engine.AdamW8bitStep): a quarter of the f32 state's memory. Unlike bitsandbytes, small
	// tensors are quantized too (it keeps tensors under 4096 values in f32): LoRA's are small.
	EightBit bool
	// Paged keeps the optimizer state in host memory: each step streams it to the device one
	// layer at a time for the update and back (see pager). On the CPU backend, whose device
	// memory is host memory, it changes nothing.
	Paged bool
}

// Name is the optimizer's name as --optim spells it: "adamw" or "adamw8bit".
func (c AdamWConfig) Name() string {
	if c.EightBit {
		return OptimAdamW8bit
	}
	return OptimAdamW
}

// The optimizers --optim names.
const (
	OptimAdamW     = "adamw"
	OptimAdamW8bit = "adamw8bit"
)

// DefaultAdamW is transformers' TrainingArguments default: betas (0.9, 0.999), eps 1e-8, no
// weight decay, gradients clipped to norm 1.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: 1}
}

func (c AdamWConfig) validate() error {
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("betas (%v, %v) must be in [0, 1)", c.Beta1, c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("eps %v must be positive", c.Eps)
	case !(c.WeightDecay >= 0):
		return fmt.Errorf("weight decay %v must be non-negative", c.WeightDecay)
	case !(c.MaxGradNorm >= 0):
		return fmt.Errorf("max grad norm %v must be non-negative", c.MaxGradNorm)
	}
	return nil
}

// StepInfo reports what one optimizer step did.
type StepInfo struct {
	// Step is the number of updates applied so far (unchanged by a skipped step).
	Step int
	// GradNorm is the global L2 norm of the (scaled) gradients before clipping.
	GradNorm float64
	// Clipped says the gradients were scaled down to MaxGradNorm.
	Clipped bool
	// Skipped says the norm was not finite (NaN or Inf), so nothing was updated.
	Skipped bool
}

// AdamW is torch.optim.AdamW over a list of parameters on one backend. Its update is recorded into
// a graph (Record): one multi-tensor sum of squares of the gradients, the clip decision with a
// skip flag for a non-finite loss or norm (engine.ClipStatus), and AdamW in place on the
// parameters and moments reading both on the device. A training step records it into its own
// graph (NewTrainStep), so that forward, backward and update are one submission whose only read
// is the four-float status; Step runs it alone over gradients computed elsewhere.
type AdamW struct {
	b      engine.Backend
	cfg    AdamWConfig
	params []Param
	// m, v are the f32 moments; with EightBit, q and absmax hold them instead (both moments'
	// codes in one u8 tensor, their block scales in one f32 tensor) and qmap the two codes.
	m, v      []*engine.Tensor
	q, absmax []*engine.Tensor
	qmap      *engine.Tensor
	// ctl is the control vector the host writes before each update: lr, scale, step number.
	ctl *engine.Tensor
	// pager streams the state from host memory, layer by layer (Paged, on a GPU backend); the
	// state tensors then live on its host backend.
	pager *pager
	step  int
	// alone is the update compiled by itself, for Step.
	alone *optimProgram
}

// optimProgram is the update compiled by itself: gradients are inputs, bound at each Step.
type optimProgram struct {
	p     *engine.Program
	og    *OptimGraph
	grads []*engine.Node
	loss  *engine.Tensor
}

// OptimGraph is the optimizer's part of a graph, from Record.
type OptimGraph struct {
	// Status is ClipStatus's output, [loss, Σg², coefficient, skip]: the value the host reads.
	Status *engine.Node
	// Updates are the in-place outputs (parameters and moments): a program must list them as
	// outputs for the update to run.
	Updates   []*engine.Node
	m, v      []*engine.Node
	q, absmax []*engine.Node
	qmap      *engine.Node
	ctl       *engine.Node
}

// NewAdamW allocates zeroed moments for params on b.
func NewAdamW(b engine.Backend, params []Param, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("adamw: %w", err)
	}
	if len(params) == 0 {
		return nil, errors.New("adamw: no parameters")
	}
	o := &AdamW{b: b, cfg: cfg, params: params}
	sb := b // where the state lives
	if cfg.Paged && b.Device().Backend != "cpu" {
		o.pager = newPager(params)
		sb = o.pager.host
	}
	seen := map[string]bool{}
	for _, p := range params {
		if p.Tensor == nil || p.Tensor.DType() != engine.F32 {
			o.Close()
			return nil, fmt.Errorf("adamw: parameter %q must be an f32 tensor", p.Name)
		}
		if p.Name == "" || seen[p.Name] {
			o.Close()
			return nil, fmt.Errorf("adamw: parameter name %q is empty or repeated", p.Name)
		}
		seen[p.Name] = true
		if cfg.EightBit {
			q, absmax := o.state8Shapes(p)
			// Zero scales: zero moments. Codes of zero throughout, as the kernel writes padding.
			qt, err := engine.FromBytes(sb, engine.U8, q, zeroCodes(p.Tensor.Shape().Numel()))
			if err != nil {
				o.Close()
				return nil, fmt.Errorf("adamw: %s: %w", p.Name, err)
			}
			o.q = append(o.q, qt)
			at, err := zeros(sb, absmax)
			if err != nil {
				o.Close()
				return nil, fmt.Errorf("adamw: %s: %w", p.Name, err)
			}
			o.absmax = append(o.absmax, at)
			continue
		}
		for _, dst := range []*[]*engine.Tensor{&o.m, &o.v} {
			t, err := zeros(sb, p.Tensor.Shape())
			if err != nil {
				o.Close()
				return nil, fmt.Errorf("adamw: %s: %w", p.Name, err)
			}
			*dst = append(*dst, t)
		}
	}
	var err error
	if cfg.EightBit {
		codes := append(append([]float32(nil), quant.DynamicCode[:]...), quant.DynamicCodeUnsigned[:]...)
		if o.qmap, err = engine.FromFloat32(b, engine.Shape{len(codes)}, codes); err != nil {
			o.Close()
			return nil, fmt.Errorf("adamw: %w", err)
		}
	}
	if o.ctl, err = zeros(b, engine.Shape{engine.CtlLen}); err != nil {
		o.Close()
		return nil, fmt.Errorf("adamw: %w", err)
	}
	return o, nil
}

// state8Shapes are the shapes of p's 8-bit state: both moments' codes (each padded to whole
// words), and their block scales.
func (o *AdamW) state8Shapes(p Param) (q, absmax engine.Shape) {
	n := p.Tensor.Shape().Numel()
	return engine.Shape{2 * engine.Optim8Codes(n)}, engine.Shape{2 * engine.Optim8Blocks(n)}
}

// zeroCodes is the 8-bit state of n zero moments' codes: each moment's code of 0, padding included.
func zeroCodes(n int) []byte {
	n4 := engine.Optim8Codes(n)
	q := make([]byte, 2*n4)
	z1, z2 := quant.Quantize8(&quant.DynamicCode, 0), quant.Quantize8(&quant.DynamicCodeUnsigned, 0)
	for i := range n4 {
		q[i], q[n4+i] = z1, z2
	}
	return q
}

// StateBytes is the device memory the optimizer state takes: the moments (or their codes and
// scales) and, for 8 bits, the codes' tables; paged, the staging buffers of two layers' state.
func (o *AdamW) StateBytes() int64 {
	var n int64
	if o.qmap != nil {
		n += o.qmap.Meta().Bytes()
	}
	if o.pager != nil {
		return n + o.pager.stagingBytes()
	}
	return n + o.HostStateBytes()
}

// HostStateBytes is the size of the whole state (in host memory when paged).
func (o *AdamW) HostStateBytes() int64 {
	var n int64
	for _, t := range o.stateTensors() {
		n += t.Meta().Bytes()
	}
	return n
}

// stateTensors are the state's tensors: m and v, or q and absmax, by parameter.
func (o *AdamW) stateTensors() []*engine.Tensor {
	return append(append(append(append([]*engine.Tensor(nil), o.m...), o.v...), o.q...), o.absmax...)
}

// MovedBytes is the state streamed between host and device by the last step (paged; else 0).
func (o *AdamW) MovedBytes() int64 {
	if o.pager == nil {
		return 0
	}
	return o.pager.moved
}

// Config is the optimizer's configuration.
func (o *AdamW) Config() AdamWConfig { return o.cfg }

func zeros(b engine.Backend, shape engine.Shape) (*engine.Tensor, error) {
	return engine.FromFloat32(b, shape, make([]float32, shape.Numel()))
}

// Params returns the parameters in the order Step expects their gradients.
func (o *AdamW) Params() []Param { return o.params }

// StepCount is the number of updates applied so far.
func (o *AdamW) StepCount() int { return o.step }

// Close frees the moments and the control vector; the parameters stay with their owner.
func (o *AdamW) Close() {
	if o.pager != nil {
		o.pager.close()
	}
	if o.alone != nil {
		o.alone.p.Release()
		o.alone.loss.Release()
		o.alone = nil
	}
	for _, t := range append(append(append(o.m, o.v...), o.q...), o.absmax...) {
		t.Release()
	}
	o.m, o.v, o.q, o.absmax = nil, nil, nil, nil
	if o.qmap != nil {
		o.qmap.Release()
		o.qmap = nil
	}
	if o.ctl != nil {
		o.ctl.Release()
		o.ctl = nil
	}
}

// Record adds the update to g: params[i] is the graph's node of Params()[i] (written in place),
// grads[i] its gradient and loss the step's loss ([1]; a non-finite loss skips the update). Bind
// the compiled program with Bind.
func (o *AdamW) Record(g *engine.Graph, params, grads []*engine.Node, loss *engine.Node) (*OptimGraph, error) {
	if len(params) != len(o.params) || len(grads) != len(o.params) {
		return nil, fmt.Errorf("adamw: %d parameters and %d gradients for %d parameters", len(params), len(grads), len(o.params))
	}
	og := &OptimGraph{ctl: g.Input("optim.ctl", engine.F32, engine.Shape{engine.CtlLen})}
	if o.pager != nil {
		return nil, fmt.Errorf("adamw: a paged optimizer updates layer by layer (Step), not inside a step program")
	}
	og.Status = g.ClipStatus(loss, g.SumSquaresN(grads...), og.ctl, o.cfg.MaxGradNorm)
	if o.cfg.EightBit {
		og.qmap = g.Input("optim.qmap", engine.F32, o.qmap.Shape())
	}
	for i := range o.params {
		o.recordParam(g, og, i, params[i], grads[i])
	}
	if err := g.Err(); err != nil {
		return nil, fmt.Errorf("adamw: %w", err)
	}
	return og, nil
}

// recordParam adds the update of parameter i (node p, gradient grad) to og: its state as inputs
// (og.m, og.v or og.q, og.absmax) and the in-place update (og.Updates), reading og.Status,
// og.ctl and, for 8 bits, og.qmap.
func (o *AdamW) recordParam(g *engine.Graph, og *OptimGraph, i int, p, grad *engine.Node) {
	prm := o.params[i]
	wd := o.cfg.WeightDecay
	if prm.NoDecay {
		wd = 0
	}
	if !grad.Shape().Equal(prm.Tensor.Shape()) {
		grad = g.Reshape(grad, prm.Tensor.Shape()...)
	}
	if o.cfg.EightBit {
		qs, as := o.state8Shapes(prm)
		q := g.Input("optim.q."+prm.Name, engine.U8, qs)
		a := g.Input("optim.absmax."+prm.Name, engine.F32, as)
		og.q, og.absmax = append(og.q, q), append(og.absmax, a)
		op := engine.AdamW8bitStep{Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, WeightDecay: wd}
		og.Updates = append(og.Updates, g.Apply(op, p, grad, q, a, og.qmap, og.Status, og.ctl)...)
		return
	}
	m := g.Input("optim.m."+prm.Name, engine.F32, prm.Tensor.Shape())
	v := g.Input("optim.v."+prm.Name, engine.F32, prm.Tensor.Shape())
	og.m, og.v = append(og.m, m), append(og.v, v)
	op := engine.AdamWStep{Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, WeightDecay: wd}
	og.Updates = append(og.Updates, g.Apply(op, p, grad, m, v, og.Status, og.ctl)...)
}

// Bind binds the moments and the control vector of og's graph in p.
func (o *AdamW) Bind(p *engine.Program, og *OptimGraph) error {
	if err := p.Bind(og.ctl, o.ctl); err != nil {
		return fmt.Errorf("adamw: %w", err)
	}
	if o.cfg.EightBit {
		if err := p.Bind(og.qmap, o.qmap); err != nil {
			return fmt.Errorf("adamw: %w", err)
		}
		for i := range o.params {
			if err := p.Bind(og.q[i], o.q[i]); err != nil {
				return fmt.Errorf("adamw: %w", err)
			}
			if err := p.Bind(og.absmax[i], o.absmax[i]); err != nil {
				return fmt.Errorf("adamw: %w", err)
			}
		}
		return nil
	}
	for i := range o.params {
		if err := p.Bind(og.m[i], o.m[i]); err != nil {
			return fmt.Errorf("adamw: %w", err)
		}
		if err := p.Bind(og.v[i], o.v[i]); err != nil {
			return fmt.Errorf("adamw: %w", err)
		}
	}
	return nil
}

// begin writes the control vector of the next update: learning rate lr, gradient scale and the
// update's number.
func (o *AdamW) begin(lr, scale float32) error {
	if !(lr >= 0) || math.IsInf(float64(lr), 0) || !(scale > 0) || math.IsInf(float64(scale), 0) {
		return fmt.Errorf("adamw: learning rate %v and gradient scale %v must be finite, scale positive", lr, scale)
	}
	ctl := make([]float32, engine.CtlLen)
	ctl[engine.CtlLR], ctl[engine.CtlScale], ctl[engine.CtlStep] = lr, scale, float32(o.step+1)
	if err := o.ctl.SetFloat32(ctl); err != nil {
		return fmt.Errorf("adamw: %w", err)
	}
	return nil
}

// finish reads an update's status: the step count moves on unless the device skipped it.
func (o *AdamW) finish(status []float32, scale float32) StepInfo {
	info := StepInfo{Step: o.step, GradNorm: math.Sqrt(float64(status[engine.StatusSumSq])) * float64(scale)}
	if status[engine.StatusSkip] != 0 {
		info.Skipped = true
		return info
	}
	info.Clipped = o.cfg.MaxGradNorm > 0 && info.GradNorm > float64(o.cfg.MaxGradNorm)
	o.step++
	info.Step = o.step
	return info
}

func (o *AdamW) checkGrads(grads []engine.Arg) error {
	if len(grads) != len(o.params) {
		return fmt.Errorf("%d gradients for %d parameters", len(grads), len(o.params))
	}
	for i, g := range grads {
		pm := o.params[i].Tensor.Meta()
		if g.Buf == nil || g.Meta.DType != engine.F32 || g.Meta.Shape.Numel() != pm.Shape.Numel() {
			return fmt.Errorf("gradient of %s is %s, want %s", o.params[i].Name, g.Meta, pm)
		}
	}
	return nil
}

// compileAlone compiles the update by itself, the gradients as inputs.
func (o *AdamW) compileAlone() (*optimProgram, error) {
	g := engine.NewGraph()
	op := &optimProgram{}
	var params []*engine.Node
	for i, p := range o.params {
		params = append(params, g.Input(fmt.Sprintf("param.%d", i), engine.F32, p.Tensor.Shape()))
		op.grads = append(op.grads, g.Input(fmt.Sprintf("grad.%d", i), engine.F32, p.Tensor.Shape()))
	}
	loss := g.Input("loss", engine.F32, engine.Shape{1})
	og, err := o.Record(g, params, op.grads, loss)
	if err != nil {
		return nil, err
	}
	op.og = og
	if op.p, err = engine.Compile(g, o.b, append([]*engine.Node{og.Status}, og.Updates...), engine.CompileOptions{}); err != nil {
		return nil, err
	}
	fail := func(err error) (*optimProgram, error) {
		op.p.Release()
		if op.loss != nil {
			op.loss.Release()
		}
		return nil, err
	}
	if err := o.Bind(op.p, og); err != nil {
		return fail(err)
	}
	for i, p := range o.params {
		if err := op.p.Bind(params[i], p.Tensor); err != nil {
			return fail(err)
		}
	}
	// The gradients were summed from finite micro-batches (or come from a caller): the loss
	// operand only has to be finite.
	if op.loss, err = zeros(o.b, engine.Shape{1}); err != nil {
		return fail(err)
	}
	if err := op.p.Bind(loss, op.loss); err != nil {
		return fail(err)
	}
	return op, nil
}

// Step applies one AdamW update with learning rate lr. grads[i] is the gradient of Params()[i]
// (a Program's gradient output or a GradAccumulator's sum); it is multiplied by scale first (1/k
// after summing k micro-batches, else 1). The global norm of the scaled gradients is measured;
// above MaxGradNorm they are scaled down to it, as torch.nn.utils.clip_grad_norm_ does
// (coefficient max_norm/(norm+1e-6)). A non-finite norm skips the step: parameters, moments and
// the step count stay as they were, and StepInfo.Skipped says so. The gradients are not modified.
// It is one submission and one read of four floats.
func (o *AdamW) Step(grads []engine.Arg, lr, scale float32) (StepInfo, error) {
	if err := o.checkGrads(grads); err != nil {
		return StepInfo{}, fmt.Errorf("adamw: %w", err)
	}
	if o.pager != nil {
		return o.pagedStep(grads, lr, scale)
	}
	if o.alone == nil {
		op, err := o.compileAlone()
		if err != nil {
			return StepInfo{}, err
		}
		o.alone = op
	}
	for i, g := range grads {
		t, err := engine.View(o.b, g.Buf, o.params[i].Tensor.Meta())
		if err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %s: %w", o.params[i].Name, err)
		}
		if err := o.alone.p.Bind(o.alone.grads[i], t); err != nil {
			return StepInfo{}, fmt.Errorf("adamw: %w", err)
		}
	}
	if err := o.begin(lr, scale); err != nil {
		return StepInfo{}, err
	}
	if err := o.alone.p.Run(); err != nil {
		return StepInfo{}, fmt.Errorf("adamw: step %d: %w", o.step+1, err)
	}
	st, err := o.alone.p.Float32(o.alone.og.Status)
	if err != nil {
		return StepInfo{}, fmt.Errorf("adamw: %w", err)
	}
	return o.finish(st, scale), nil
}

// ParamState is one parameter's optimizer state: AdamW's first (M, torch's exp_avg) and second
// (V, exp_avg_sq) moments, or for the 8-bit optimizer their codes and block scales as the device
// holds them (Q: the first moment's codes then the second's, each padded to whole words with the
// code of zero, engine.Optim8Codes; Absmax: the first moment's block scales then the second's).
type ParamState struct {
	Name   string
	Shape  []int
	M, V   []float32
	Q      []byte
	Absmax []float32
}

// OptimizerState is everything AdamW needs to resume: the step count and the moments.
type OptimizerState struct {
	// Optim is the optimizer's name ("adamw" or "adamw8bit"; empty reads as "adamw").
	Optim  string
	Step   int
	Params []ParamState
}

// State reads the optimizer state back from the device.
func (o *AdamW) State() (OptimizerState, error) {
	s := OptimizerState{Optim: o.cfg.Name(), Step: o.step, Params: make([]ParamState, len(o.params))}
	for i, p := range o.params {
		if o.cfg.EightBit {
			ps := ParamState{Name: p.Name, Shape: append([]int(nil), p.Tensor.Shape()...)}
			var err error
			if ps.Q, err = o.q[i].Bytes(); err != nil {
				return OptimizerState{}, fmt.Errorf("adamw state %s: %w", p.Name, err)
			}
			if ps.Absmax, err = o.absmax[i].Float32(); err != nil {
				return OptimizerState{}, fmt.Errorf("adamw state %s: %w", p.Name, err)
			}
			s.Params[i] = ps
			continue
		}
		m, err := o.m[i].Float32()
		if err != nil {
			return OptimizerState{}, fmt.Errorf("adamw state %s: %w", p.Name, err)
		}
		v, err := o.v[i].Float32()
		if err != nil {
			return OptimizerState{}, fmt.Errorf("adamw state %s: %w", p.Name, err)
		}
		s.Params[i] = ParamState{Name: p.Name, Shape: append([]int(nil), p.Tensor.Shape()...), M: m, V: v}
	}
	return s, nil
}

// SetState restores a state from State (or a checkpoint). Every parameter must be present by
// name with its shape; nothing changes when one is not.
func (o *AdamW) SetState(s OptimizerState) error {
	if s.Step < 0 {
		return fmt.Errorf("adamw: restore: step %d is negative", s.Step)
	}
	if kind := cmp.Or(s.Optim, OptimAdamW); kind != o.cfg.Name() {
		return fmt.Errorf("adamw: restore: the state is %s's, the optimizer is %s", kind, o.cfg.Name())
	}
	byName := make(map[string]*ParamState, len(s.Params))
	for i := range s.Params {
		byName[s.Params[i].Name] = &s.Params[i]
	}
	if len(byName) != len(o.params) {
		return fmt.Errorf("adamw: restore: state has %d parameters, the optimizer %d", len(byName), len(o.params))
	}
	for _, p := range o.params {
		ps, ok := byName[p.Name]
		if !ok {
			return fmt.Errorf("adamw: restore: no state for %s", p.Name)
		}
		n := p.Tensor.Shape().Numel()
		if o.cfg.EightBit {
			qs, as := o.state8Shapes(p)
			if !engine.Shape(ps.Shape).Equal(p.Tensor.Shape()) || len(ps.Q) != qs.Numel() || len(ps.Absmax) != as.Numel() {
				return fmt.Errorf("adamw: restore %s: 8-bit state of shape %v (%d codes, %d scales) for a parameter of shape %v",
					p.Name, ps.Shape, len(ps.Q), len(ps.Absmax), p.Tensor.Shape())
			}
			continue
		}
		if !engine.Shape(ps.Shape).Equal(p.Tensor.Shape()) || len(ps.M) != n || len(ps.V) != n {
			return fmt.Errorf("adamw: restore %s: state of shape %v (%d, %d values) for a parameter of shape %v",
				p.Name, ps.Shape, len(ps.M), len(ps.V), p.Tensor.Shape())
		}
	}
	for i, p := range o.params {
		ps := byName[p.Name]
		if o.cfg.EightBit {
			if err := o.q[i].SetBytes(ps.Q); err != nil {
				return fmt.Errorf("adamw: restore %s: %w", p.Name, err)
			}
			if err := o.absmax[i].SetFloat32(ps.Absmax); err != nil {
				return fmt.Errorf("adamw: restore %s: %w", p.Name, err)
			}
			continue
		}
		if err := o.m[i].SetFloat32(ps.M); err != nil {
			return fmt.Errorf("adamw: restore %s: %w", p.Name, err)
		}
		if err := o.v[i].SetFloat32(ps.V); err != nil {
			return fmt.Errorf("adamw: restore %s: %w", p.Name, err)
		}
	}
	o.step = s.Step
	return nil
}

// GradAccumulator sums the gradients of k micro-batches into buffers of its own, so that one
// optimizer step sees the sum (pass Scale() = 1/k to AdamW.Step for the mean). The sums run as
// compiled programs of in-place Accumulate ops: one that copies the first micro-batch's
// gradients, one that adds the others'.
type GradAccumulator struct {
	b      engine.Backend
	params []Param
	acc    []*engine.Tensor
	progs  [2]*accumProgram // [0] copies, [1] adds
	n      int
}

type accumProgram struct {
	p     *engine.Program
	grads []*engine.Node
}

// NewGradAccumulator allocates one accumulation buffer per parameter.
func NewGradAccumulator(b engine.Backend, params []Param) (*GradAccumulator, error) {
	a := &GradAccumulator{b: b, params: params}
	for _, p := range params {
		if p.Tensor == nil || p.Tensor.DType() != engine.F32 {
			a.Close()
			return nil, fmt.Errorf("gradient accumulator: parameter %q must be an f32 tensor", p.Name)
		}
		t, err := engine.NewTensor(b, engine.F32, p.Tensor.Shape())
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("gradient accumulator: %s: %w", p.Name, err)
		}
		a.acc = append(a.acc, t)
	}
	return a, nil
}

func (a *GradAccumulator) program(overwrite bool) (*accumProgram, error) {
	k := 1
	if overwrite {
		k = 0
	}
	if a.progs[k] != nil {
		return a.progs[k], nil
	}
	g := engine.NewGraph()
	ap := &accumProgram{}
	var accs, outs []*engine.Node
	for i, p := range a.params {
		acc := g.Input(fmt.Sprintf("acc.%d", i), engine.F32, p.Tensor.Shape())
		grad := g.Input(fmt.Sprintf("grad.%d", i), engine.F32, p.Tensor.Shape())
		accs, ap.grads = append(accs, acc), append(ap.grads, grad)
		outs = append(outs, g.Apply1(engine.Accumulate{Overwrite: overwrite}, acc, grad))
	}
	var err error
	if ap.p, err = engine.Compile(g, a.b, outs, engine.CompileOptions{}); err != nil {
		return nil, err
	}
	for i, acc := range accs {
		if err := ap.p.Bind(acc, a.acc[i]); err != nil {
			ap.p.Release()
			return nil, err
		}
	}
	a.progs[k] = ap
	return ap, nil
}

// Add adds one micro-batch's gradients (one per parameter, in order) to the sums.
func (a *GradAccumulator) Add(grads []engine.Arg) error {
	if len(grads) != len(a.params) {
		return fmt.Errorf("gradient accumulator: %d gradients for %d parameters", len(grads), len(a.params))
	}
	for i, g := range grads {
		m := a.acc[i].Meta()
		if g.Buf == nil || g.Meta.DType != engine.F32 || g.Meta.Shape.Numel() != m.Shape.Numel() {
			return fmt.Errorf("gradient accumulator: gradient of %s is %s, want %s", a.params[i].Name, g.Meta, m)
		}
	}
	ap, err := a.program(a.n == 0)
	if err != nil {
		return fmt.Errorf("gradient accumulator: %w", err)
	}
	for i, g := range grads {
		t, err := engine.View(a.b, g.Buf, a.acc[i].Meta())
		if err != nil {
			return fmt.Errorf("gradient accumulator: %w", err)
		}
		if err := ap.p.Bind(ap.grads[i], t); err != nil {
			return fmt.Errorf("gradient accumulator: %w", err)
		}
	}
	if err := ap.p.Run(); err != nil {
		return fmt.Errorf("gradient accumulator: %w", err)
	}
	a.n++
	return nil
}

// Count is the number of micro-batches summed since the last Reset.
func (a *GradAccumulator) Count() int { return a.n }

// Scale is 1/Count, the factor that turns the sum into the mean (1 before any Add).
func (a *GradAccumulator) Scale() float32 {
	if a.n == 0 {
		return 1
	}
	return 1 / float32(a.n)
}

// Grads returns the summed gradients, one per parameter, for AdamW.Step.
func (a *GradAccumulator) Grads() []engine.Arg {
	out := make([]engine.Arg, len(a.acc))
	for i, t := range a.acc {
		out[i] = engine.Arg{Buf: t.Buffer(), Meta: t.Meta()}
	}
	return out
}

// Reset starts a new sum (the next Add overwrites the buffers).
func (a *GradAccumulator) Reset() { a.n = 0 }

// Close frees the accumulation buffers and programs.
func (a *GradAccumulator) Close() {
	for i, ap := range a.progs {
		if ap != nil {
			ap.p.Release()
			a.progs[i] = nil
		}
	}
	for _, t := range a.acc {
		t.Release()
	}
	a.acc = nil
}

// ScheduleKind names the decay after warmup.
type ScheduleKind string

// The schedules, after transformers' get_*_schedule_with_warmup.
const (
	Cosine   ScheduleKind = "cosine"
	Linear   ScheduleKind = "linear"
	Constant ScheduleKind = "constant"
)

// Schedule is a learning-rate schedule: linear warmup from 0 over Warmup steps, then Kind's decay
// until Total steps, to a floor of MinRatio × the base rate (0 for transformers' schedules;
// cosine with MinRatio is get_cosine_with_min_lr_schedule_with_warmup's min_lr_rate).
type Schedule struct {
	Warmup, Total int
	Kind          ScheduleKind
	MinRatio      float64
}

// Validate reports a schedule that cannot be evaluated.
func (s Schedule) Validate() error {
	switch s.Kind {
	case Cosine, Linear, Constant, "":
	default:
		return fmt.Errorf("schedule: unknown kind %q (want cosine, linear or constant)", s.Kind)
	}
	if s.Warmup < 0 || s.Total < 0 {
		return fmt.Errorf("schedule: warmup %d and total %d must be non-negative", s.Warmup, s.Total)
	}
	if !(s.MinRatio >= 0 && s.MinRatio <= 1) {
		return fmt.Errorf("schedule: min ratio %v is not in [0, 1]", s.MinRatio)
	}
	return nil
}

// Factor is the multiplier of the base rate at step, the number of optimizer steps taken so far:
// as in transformers, the first update uses Factor(0), which is 0 under warmup. Past Total the
// factor stays at its floor (transformers' cosine would rise again).
func (s Schedule) Factor(step int) float64 {
	if step < s.Warmup {
		return float64(step) / float64(max(1, s.Warmup))
	}
	if s.Kind == Constant || s.Kind == "" {
		return 1
	}
	progress := math.Min(1, float64(step-s.Warmup)/float64(max(1, s.Total-s.Warmup)))
	var f float64
	if s.Kind == Cosine {
		f = 0.5 * (1 + math.Cos(math.Pi*progress))
	} else {
		f = 1 - progress
	}
	return math.Max(0, f*(1-s.MinRatio)+s.MinRatio)
}

// LR is the learning rate at step for base rate base.
func (s Schedule) LR(step int, base float64) float64 { return base * s.Factor(step) }
