package train

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// StepGraph is the compiled forward and backward pass of a model with an adapter on batches of one
// shape: the loss (mean cross-entropy over the batch's targets) and the adapter's gradients. With
// Train false it is the forward pass alone (evaluation, no dropout).
type StepGraph struct {
	Program *engine.Program
	Loss    *engine.Node
	// Grads[i] is the gradient of Params[i].
	Grads  []*engine.Node
	Params []Param

	backend                              engine.Backend
	seq                                  int
	ids, pos, starts, targets, seed      *engine.Node
	idsT, posT, startsT, targetsT, seedT *engine.Tensor
	// opt and og are the optimizer recorded into the step (NewTrainStep).
	opt *AdamW
	og  *OptimGraph
	// With loss scaling, the gradients are those of loss·scale, scale an input (lossScaleT).
	lossScale  float32
	lossScaleN *engine.Node
	lossScaleT *engine.Tensor
	// ScaledLoss is loss·scale, an output of a loss-scaled step without an optimizer (data
	// parallelism weights each rank's gradients and loss this way).
	ScaledLoss *engine.Node
}

// NewStepGraph records and compiles the step for batches of rows×seq tokens. recompute turns on
// gradient checkpointing (each decoder layer's activations recomputed in the backward pass). For
// evaluation (train false) the adapter may be nil: the base model alone.
func NewStepGraph(m *model.Model, a *peft.Adapter, rows, seq int, train, recompute bool) (*StepGraph, error) {
	return newStepGraph(m, trainable(a), rows, seq, train, recompute, nil, false, engine.F32)
}

// StepOptions are a training step's optional parts.
type StepOptions struct {
	// Recompute turns on gradient checkpointing.
	Recompute bool
	// Optimizer, when set, is recorded into the step (as NewTrainStep does); else the gradients
	// are the step's outputs (GradArgs).
	Optimizer *AdamW
	// LossScaled differentiates loss·S for a scale S set before each run (SetLossScale): dynamic
	// loss scaling. Update divides the gradients by S again before the norm and clipping; the
	// gradients of Run stay scaled.
	LossScaled bool
	// Save, F16 or BF16, keeps the activations the backward pass reads in 16 bits between the
	// passes (engine.CompileOptions.Save); zero is f32.
	Save engine.DType
}

// NewTrainStepWith compiles a training step for batches of rows×seq tokens with the options o.
func NewTrainStepWith(m *model.Model, a *peft.Adapter, rows, seq int, o StepOptions) (*StepGraph, error) {
	return newStepGraph(m, trainable(a), rows, seq, true, o.Recompute, o.Optimizer, o.LossScaled, o.Save)
}

// SetLossScale sets the factor the next runs multiply the loss by before differentiating (a step
// compiled with LossScaled); it must be a positive, finite power of two for the unscaling to be
// exact.
func (s *StepGraph) SetLossScale(scale float32) error {
	if s.lossScaleN == nil {
		return fmt.Errorf("train: the step was compiled without loss scaling")
	}
	if !(scale > 0) || math.IsInf(float64(scale), 0) {
		return fmt.Errorf("train: loss scale %v must be positive and finite", scale)
	}
	s.lossScale = scale
	return nil
}

// AdapterParams lists an adapter's trainable parameters as the optimizer takes them, in the order
// the step graph differentiates them.
func AdapterParams(a *peft.Adapter) []Param {
	var ps []Param
	for _, p := range a.Params() {
		ps = append(ps, Param{Name: p.Key, Tensor: p.Tensor})
	}
	return ps
}

// NewTrainStep compiles the whole training step for batches of rows×seq tokens: forward, backward,
// and opt's update (gradient norm, clipping, the non-finite check, AdamW) in one program, so that
// a step (Update) is one submission and one read. opt must hold the adapter's parameters
// (AdapterParams).
func NewTrainStep(m *model.Model, a *peft.Adapter, rows, seq int, recompute bool, opt *AdamW) (*StepGraph, error) {
	if opt == nil {
		return nil, fmt.Errorf("train: no optimizer")
	}
	return newStepGraph(m, trainable(a), rows, seq, true, recompute, opt, false, engine.F32)
}

func newStepGraph(m *model.Model, a Trainable, rows, seq int, train, recompute bool, opt *AdamW, scaled bool, save engine.DType) (*StepGraph, error) {
	g := engine.NewGraph()
	mg := m.Declare(g)
	n := rows * seq
	s := &StepGraph{backend: m.Backend, seq: seq, lossScale: 1}
	s.ids = g.Input("batch.ids", engine.I32, engine.Shape{n})
	s.pos = g.Input("batch.pos", engine.I32, engine.Shape{n})
	s.starts = g.Input("batch.starts", engine.I32, engine.Shape{n})
	s.targets = g.Input("batch.targets", engine.I32, engine.Shape{n})
	var seed *engine.Node
	if train {
		s.seed = g.Input("batch.dropout_seed", engine.I32, engine.Shape{1})
		seed = s.seed
	}
	var lin model.LinearFunc
	if a != nil {
		lin = a.LinearFunc(g, seed)
	} else if train {
		return nil, fmt.Errorf("train: no adapter to train")
	}
	logits := mg.ForwardPacked(s.ids, s.pos, s.starts, rows, seq, lin)
	s.Loss = g.CrossEntropy(logits, s.targets, IgnoreIndex)
	outs := []*engine.Node{s.Loss}
	if train {
		diff := s.Loss
		if scaled {
			s.lossScaleN = g.Input("batch.loss_scale", engine.F32, engine.Shape{1})
			diff = g.Mul(s.Loss, s.lossScaleN)
		}
		grads, err := g.Backward(diff)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		nodes := map[*engine.Tensor]*engine.Node{}
		for _, p := range a.Params() {
			d, ok := grads[p.Node]
			if !ok {
				return nil, fmt.Errorf("train: parameter %s gets no gradient", p.Key)
			}
			s.Params = append(s.Params, Param{Name: p.Key, Tensor: p.Tensor})
			s.Grads = append(s.Grads, d)
			nodes[p.Tensor] = p.Node
		}
		if opt == nil {
			outs = append(outs, s.Grads...)
			if scaled {
				s.ScaledLoss = diff
				outs = append(outs, diff)
			}
		} else {
			// The update reads the gradients on the device: they are not outputs.
			var pn, gn []*engine.Node
			for _, p := range opt.Params() {
				n := nodes[p.Tensor]
				if n == nil {
					return nil, fmt.Errorf("train: optimizer parameter %s is not the adapter's", p.Name)
				}
				pn, gn = append(pn, n), append(gn, grads[n])
			}
			og, err := opt.Record(g, pn, gn, s.Loss)
			if err != nil {
				return nil, fmt.Errorf("train: %w", err)
			}
			s.opt, s.og = opt, og
			outs = append([]*engine.Node{og.Status}, og.Updates...)
		}
	}
	if !train {
		save = engine.F32 // nothing is kept for a backward pass
	}
	prog, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{Recompute: recompute, Save: save})
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	s.Program = prog
	if err := m.Bind(prog); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if a != nil {
		if err := a.Bind(prog); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	if s.opt != nil {
		if err := s.opt.Bind(prog, s.og); err != nil {
			prog.Release()
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	mk := func(node *engine.Node) (*engine.Tensor, error) {
		t, err := engine.NewTensor(m.Backend, engine.I32, node.Shape())
		if err != nil {
			return nil, err
		}
		return t, prog.Bind(node, t)
	}
	for _, x := range []struct {
		node *engine.Node
		t    **engine.Tensor
	}{{s.ids, &s.idsT}, {s.pos, &s.posT}, {s.starts, &s.startsT}, {s.targets, &s.targetsT}, {s.seed, &s.seedT}} {
		if x.node == nil {
			continue
		}
		if *x.t, err = mk(x.node); err != nil {
			s.Close()
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	if s.lossScaleN != nil {
		if s.lossScaleT, err = engine.NewTensor(m.Backend, engine.F32, engine.Shape{1}); err == nil {
			err = prog.Bind(s.lossScaleN, s.lossScaleT)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	return s, nil
}

// Run uploads a batch, runs the step and returns the batch's mean loss. The gradients stay on the
// device (GradArgs). A step from NewTrainStep runs with Update instead.
func (s *StepGraph) Run(b Batch, seed int32) (float64, error) {
	if err := s.Exec(b, seed); err != nil {
		return 0, err
	}
	l, err := s.Program.Float32(s.Loss)
	if err != nil {
		return 0, err
	}
	return float64(l[0]), nil
}

// Exec uploads a batch and runs the step, reading nothing back: the loss, the gradients and
// ScaledLoss stay on the device (Program.Arg).
func (s *StepGraph) Exec(b Batch, seed int32) error {
	if s.opt != nil {
		return fmt.Errorf("train: the step updates the weights: run it with Update")
	}
	if err := s.upload(b, seed); err != nil {
		return err
	}
	return s.Program.Run()
}

// Update runs a step of NewTrainStep on a batch with learning rate lr: forward, backward and the
// optimizer's update in one submission, then one read of the status. It returns the batch's mean
// loss and what the update did (skipped, on the device, when the loss or the gradient norm is not
// finite).
func (s *StepGraph) Update(b Batch, seed int32, lr float32) (float64, StepInfo, error) {
	if s.opt == nil {
		return 0, StepInfo{}, fmt.Errorf("train: the step has no optimizer (NewTrainStep)")
	}
	if err := s.upload(b, seed); err != nil {
		return 0, StepInfo{}, err
	}
	unscale := 1 / s.lossScale // exact: the scale is a power of two
	if err := s.opt.begin(lr, unscale); err != nil {
		return 0, StepInfo{}, err
	}
	if err := s.Program.Run(); err != nil {
		return 0, StepInfo{}, err
	}
	st, err := s.Program.Float32(s.og.Status)
	if err != nil {
		return 0, StepInfo{}, err
	}
	return float64(st[engine.StatusLoss]), s.opt.finish(st, unscale), nil
}

func (s *StepGraph) upload(b Batch, seed int32) error {
	if err := s.idsT.SetInt32(b.IDs); err != nil {
		return err
	}
	if err := s.posT.SetInt32(b.Pos); err != nil {
		return err
	}
	starts := b.Starts
	if starts == nil {
		starts = docStarts(b.Pos, s.seq)
	}
	if err := s.startsT.SetInt32(starts); err != nil {
		return err
	}
	if err := s.targetsT.SetInt32(b.Targets); err != nil {
		return err
	}
	if s.seedT != nil {
		if err := s.seedT.SetInt32([]int32{seed}); err != nil {
			return err
		}
	}
	if s.lossScaleT != nil {
		return s.lossScaleT.SetFloat32([]float32{s.lossScale})
	}
	return nil
}

// GradArgs returns the gradient buffers of the last Run, in Params order.
func (s *StepGraph) GradArgs() ([]engine.Arg, error) {
	args := make([]engine.Arg, len(s.Grads))
	for i, g := range s.Grads {
		a, err := s.Program.Arg(g)
		if err != nil {
			return nil, err
		}
		args[i] = a
	}
	return args, nil
}

// Close frees the program and the batch tensors.
func (s *StepGraph) Close() {
	if s.Program != nil {
		s.Program.Release()
	}
	for _, t := range []*engine.Tensor{s.idsT, s.posT, s.startsT, s.targetsT, s.seedT, s.lossScaleT} {
		if t != nil {
			t.Release()
		}
	}
}

// Evaluate returns the mean next-token loss over every target of examples (weighted by tokens),
// computed in batches of rows×seq, and the number of tokens it covered.
func Evaluate(s *StepGraph, examples []Example, rows, seq int) (loss float64, tokens int64, err error) {
	batches, err := EvalBatches(examples, rows, seq)
	if err != nil {
		return 0, 0, err
	}
	var meter LossMeter
	for _, b := range batches {
		if b.Tokens == 0 {
			continue
		}
		l, err := s.Run(b, 0)
		if err != nil {
			return 0, 0, err
		}
		meter.Add(l, b.Tokens)
	}
	if meter.Tokens() == 0 {
		return math.NaN(), 0, fmt.Errorf("evaluate: the data has no token to predict")
	}
	return meter.Mean(), meter.Tokens(), nil
}
