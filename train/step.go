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
}

// NewStepGraph records and compiles the step for batches of rows×seq tokens. recompute turns on
// gradient checkpointing (each decoder layer's activations recomputed in the backward pass). For
// evaluation (train false) the adapter may be nil: the base model alone.
func NewStepGraph(m *model.Model, a *peft.Adapter, rows, seq int, train, recompute bool) (*StepGraph, error) {
	g := engine.NewGraph()
	mg := m.Declare(g)
	n := rows * seq
	s := &StepGraph{backend: m.Backend, seq: seq}
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
		grads, err := g.Backward(s.Loss)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		for _, p := range a.Params() {
			d, ok := grads[p.Node]
			if !ok {
				return nil, fmt.Errorf("train: parameter %s gets no gradient", p.Key)
			}
			s.Params = append(s.Params, Param{Name: p.Key, Tensor: p.Tensor})
			s.Grads = append(s.Grads, d)
			outs = append(outs, d)
		}
	}
	prog, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{Recompute: recompute})
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
	return s, nil
}

// Run uploads a batch, runs the step and returns the batch's mean loss. The gradients stay on the
// device (GradArgs).
func (s *StepGraph) Run(b Batch, seed int32) (float64, error) {
	if err := s.idsT.SetInt32(b.IDs); err != nil {
		return 0, err
	}
	if err := s.posT.SetInt32(b.Pos); err != nil {
		return 0, err
	}
	starts := b.Starts
	if starts == nil {
		starts = docStarts(b.Pos, s.seq)
	}
	if err := s.startsT.SetInt32(starts); err != nil {
		return 0, err
	}
	if err := s.targetsT.SetInt32(b.Targets); err != nil {
		return 0, err
	}
	if s.seedT != nil {
		if err := s.seedT.SetInt32([]int32{seed}); err != nil {
			return 0, err
		}
	}
	if err := s.Program.Run(); err != nil {
		return 0, err
	}
	l, err := s.Program.Float32(s.Loss)
	if err != nil {
		return 0, err
	}
	return float64(l[0]), nil
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
	for _, t := range []*engine.Tensor{s.idsT, s.posT, s.startsT, s.targetsT, s.seedT} {
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
