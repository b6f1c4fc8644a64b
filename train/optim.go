package train

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
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
}

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

// AdamW is torch.optim.AdamW over a list of parameters on one backend. The update runs as the
// engine's AdamW kernel, in place on the parameters and the first and second moments; gradient
// norms come from SumSquares kernels, so only one float is read back per step.
type AdamW struct {
	b      engine.Backend
	cfg    AdamWConfig
	params []Param
	m, v   []*engine.Tensor
	step   int
	// tmp holds one parameter's scaled gradient at a time (kernels may not write over an operand).
	tmp engine.Buffer
	// ss holds partial sums of squares.
	ss [3]engine.Buffer
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
	seen := map[string]bool{}
	var maxBytes int64
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
		maxBytes = max(maxBytes, p.Tensor.Meta().Bytes())
		for _, dst := range []*[]*engine.Tensor{&o.m, &o.v} {
			t, err := zeros(b, p.Tensor.Shape())
			if err != nil {
				o.Close()
				return nil, fmt.Errorf("adamw: %s: %w", p.Name, err)
			}
			*dst = append(*dst, t)
		}
	}
	var err error
	if o.tmp, err = b.Alloc(maxBytes); err != nil {
		o.Close()
		return nil, fmt.Errorf("adamw: %w", err)
	}
	for i := range o.ss {
		if o.ss[i], err = b.Alloc(4); err != nil {
			o.Close()
			return nil, fmt.Errorf("adamw: %w", err)
		}
	}
	return o, nil
}

func zeros(b engine.Backend, shape engine.Shape) (*engine.Tensor, error) {
	return engine.FromFloat32(b, shape, make([]float32, shape.Numel()))
}

// Params returns the parameters in the order Step expects their gradients.
func (o *AdamW) Params() []Param { return o.params }

// StepCount is the number of updates applied so far.
func (o *AdamW) StepCount() int { return o.step }

// Close frees the moments and scratch buffers; the parameters stay with their owner.
func (o *AdamW) Close() {
	for _, t := range append(o.m, o.v...) {
		t.Release()
	}
	o.m, o.v = nil, nil
	for _, b := range append([]engine.Buffer{o.tmp}, o.ss[:]...) {
		if b != nil {
			o.b.Free(b)
		}
	}
	o.tmp, o.ss = nil, [3]engine.Buffer{}
}

var scalarMeta = engine.Meta{Shape: engine.Shape{1}, DType: engine.F32}

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

// gradNorm returns the global L2 norm of grads (one per parameter, in order): one SumSquares
// launch per gradient, summed on the device, and one float read back.
func gradNorm(b engine.Backend, grads []engine.Arg, scratch [3]engine.Buffer) (float64, error) {
	if len(grads) == 0 {
		return 0, nil
	}
	acc, other, part := scratch[0], scratch[1], scratch[2]
	ls := []engine.Launch{{Op: engine.SumSquares{}, In: grads[:1], Out: []engine.Arg{{Buf: acc, Meta: scalarMeta}}}}
	for _, g := range grads[1:] {
		ls = append(ls,
			engine.Launch{Op: engine.SumSquares{}, In: []engine.Arg{g}, Out: []engine.Arg{{Buf: part, Meta: scalarMeta}}},
			engine.Launch{Op: engine.Binary{Fn: engine.Add},
				In:  []engine.Arg{{Buf: acc, Meta: scalarMeta}, {Buf: part, Meta: scalarMeta}},
				Out: []engine.Arg{{Buf: other, Meta: scalarMeta}}})
		acc, other = other, acc
	}
	if err := b.Run(ls); err != nil {
		return 0, fmt.Errorf("gradient norm: %w", err)
	}
	var buf [4]byte
	if err := b.Read(acc, 0, buf[:]); err != nil {
		return 0, fmt.Errorf("gradient norm: %w", err)
	}
	return math.Sqrt(float64(math.Float32frombits(binary.LittleEndian.Uint32(buf[:])))), nil
}

// Step applies one AdamW update with learning rate lr. grads[i] is the gradient of Params()[i]
// (a Program's gradient output or a GradAccumulator's sum); it is multiplied by scale first (1/k
// after summing k micro-batches, else 1). The global norm of the scaled gradients is measured;
// above MaxGradNorm they are scaled down to it, as torch.nn.utils.clip_grad_norm_ does
// (coefficient max_norm/(norm+1e-6)). A non-finite norm skips the step: parameters, moments and
// the step count stay as they were, and StepInfo.Skipped says so. The gradients are not modified.
func (o *AdamW) Step(grads []engine.Arg, lr, scale float32) (StepInfo, error) {
	if err := o.checkGrads(grads); err != nil {
		return StepInfo{}, fmt.Errorf("adamw: %w", err)
	}
	if !(lr >= 0) || math.IsInf(float64(lr), 0) || !(scale > 0) || math.IsInf(float64(scale), 0) {
		return StepInfo{}, fmt.Errorf("adamw: learning rate %v and gradient scale %v must be finite, scale positive", lr, scale)
	}
	norm, err := gradNorm(o.b, grads, o.ss)
	if err != nil {
		return StepInfo{}, fmt.Errorf("adamw: %w", err)
	}
	info := StepInfo{Step: o.step, GradNorm: norm * float64(scale)}
	if math.IsNaN(info.GradNorm) || math.IsInf(info.GradNorm, 0) {
		info.Skipped = true
		return info, nil
	}
	coef := float64(scale)
	if o.cfg.MaxGradNorm > 0 && info.GradNorm > float64(o.cfg.MaxGradNorm) {
		coef *= float64(o.cfg.MaxGradNorm) / (info.GradNorm + 1e-6)
		info.Clipped = true
	}
	step := o.step + 1
	var ls []engine.Launch
	for i, p := range o.params {
		pa := engine.Arg{Buf: p.Tensor.Buffer(), Meta: p.Tensor.Meta()}
		g := engine.Arg{Buf: grads[i].Buf, Meta: pa.Meta}
		if coef != 1 {
			scaled := engine.Arg{Buf: o.tmp, Meta: pa.Meta}
			ls = append(ls, engine.Launch{Op: engine.Scale{S: float32(coef)}, In: []engine.Arg{g}, Out: []engine.Arg{scaled}})
			g = scaled
		}
		wd := o.cfg.WeightDecay
		if p.NoDecay {
			wd = 0
		}
		ma := engine.Arg{Buf: o.m[i].Buffer(), Meta: pa.Meta}
		va := engine.Arg{Buf: o.v[i].Buffer(), Meta: pa.Meta}
		ls = append(ls, engine.Launch{
			Op: engine.AdamW{Step: step, LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, WeightDecay: wd},
			In: []engine.Arg{pa, g, ma, va}, Out: []engine.Arg{pa, ma, va}})
	}
	if err := o.b.Run(ls); err != nil {
		return StepInfo{}, fmt.Errorf("adamw: step %d: %w", step, err)
	}
	o.step = step
	info.Step = step
	return info, nil
}

// ParamState is one parameter's optimizer state: AdamW's first (M, torch's exp_avg) and second
// (V, exp_avg_sq) moments.
type ParamState struct {
	Name  string
	Shape []int
	M, V  []float32
}

// OptimizerState is everything AdamW needs to resume: the step count and the moments.
type OptimizerState struct {
	Step   int
	Params []ParamState
}

// State reads the optimizer state back from the device.
func (o *AdamW) State() (OptimizerState, error) {
	s := OptimizerState{Step: o.step, Params: make([]ParamState, len(o.params))}
	for i, p := range o.params {
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
		if !engine.Shape(ps.Shape).Equal(p.Tensor.Shape()) || len(ps.M) != n || len(ps.V) != n {
			return fmt.Errorf("adamw: restore %s: state of shape %v (%d, %d values) for a parameter of shape %v",
				p.Name, ps.Shape, len(ps.M), len(ps.V), p.Tensor.Shape())
		}
	}
	for i, p := range o.params {
		ps := byName[p.Name]
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
// optimizer step sees the sum (pass Scale() = 1/k to AdamW.Step for the mean). Sums run on the
// device as Add kernels; an Add cannot write over its operand, so each sum goes through one
// shared scratch buffer and is copied back.
type GradAccumulator struct {
	b      engine.Backend
	params []Param
	acc    []*engine.Tensor
	tmp    engine.Buffer
	n      int
}

// NewGradAccumulator allocates one accumulation buffer per parameter.
func NewGradAccumulator(b engine.Backend, params []Param) (*GradAccumulator, error) {
	a := &GradAccumulator{b: b, params: params}
	var maxBytes int64
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
		maxBytes = max(maxBytes, p.Tensor.Meta().Bytes())
	}
	var err error
	if a.tmp, err = b.Alloc(max(maxBytes, 4)); err != nil {
		a.Close()
		return nil, fmt.Errorf("gradient accumulator: %w", err)
	}
	return a, nil
}

// Add adds one micro-batch's gradients (one per parameter, in order) to the sums.
func (a *GradAccumulator) Add(grads []engine.Arg) error {
	if len(grads) != len(a.params) {
		return fmt.Errorf("gradient accumulator: %d gradients for %d parameters", len(grads), len(a.params))
	}
	var ls []engine.Launch
	for i, g := range grads {
		m := a.acc[i].Meta()
		if g.Buf == nil || g.Meta.DType != engine.F32 || g.Meta.Shape.Numel() != m.Shape.Numel() {
			return fmt.Errorf("gradient accumulator: gradient of %s is %s, want %s", a.params[i].Name, g.Meta, m)
		}
		g.Meta = m
		acc := engine.Arg{Buf: a.acc[i].Buffer(), Meta: m}
		if a.n == 0 {
			ls = append(ls, engine.Launch{Op: engine.Scale{S: 1}, In: []engine.Arg{g}, Out: []engine.Arg{acc}})
			continue
		}
		tmp := engine.Arg{Buf: a.tmp, Meta: m}
		ls = append(ls,
			engine.Launch{Op: engine.Binary{Fn: engine.Add}, In: []engine.Arg{acc, g}, Out: []engine.Arg{tmp}},
			engine.Launch{Op: engine.Scale{S: 1}, In: []engine.Arg{tmp}, Out: []engine.Arg{acc}})
	}
	if err := a.b.Run(ls); err != nil {
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

// Close frees the accumulation buffers.
func (a *GradAccumulator) Close() {
	for _, t := range a.acc {
		t.Release()
	}
	a.acc = nil
	if a.tmp != nil {
		a.b.Free(a.tmp)
		a.tmp = nil
	}
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
