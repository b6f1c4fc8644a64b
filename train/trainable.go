package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// Trainable is what a step graph trains: an adapter's parameters, or a network that generates an
// adapter (peft/hyper). LinearFunc records the model's linear layers with it; Params lists the
// trainable tensors with their nodes in the graph that last called LinearFunc; Bind binds them
// (and any constant it needs) in a compiled program.
type Trainable interface {
	LinearFunc(g *engine.Graph, dropoutSeed *engine.Node) model.LinearFunc
	Params() []peft.Param
	Bind(p *engine.Program) error
}

// trainable turns a possibly nil adapter into a Trainable that is nil when it is.
func trainable(a *peft.Adapter) Trainable {
	if a == nil {
		return nil
	}
	return a
}

// TrainableParams lists a Trainable's parameters as the optimizer takes them (AdapterParams for
// any Trainable).
func TrainableParams(t Trainable) []Param {
	var ps []Param
	for _, p := range t.Params() {
		ps = append(ps, Param{Name: p.Key, Tensor: p.Tensor})
	}
	return ps
}

// NewTrainableStep is NewStepGraph (opt nil; train false for evaluation) or NewTrainStep for any
// Trainable.
func NewTrainableStep(m *model.Model, t Trainable, rows, seq int, train, recompute bool, opt *AdamW) (*StepGraph, error) {
	if t == nil {
		return nil, fmt.Errorf("train: nothing to train")
	}
	return newStepGraph(m, t, rows, seq, train, recompute, opt, false, engine.F32)
}
