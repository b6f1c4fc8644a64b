package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// Memory is a training step's device memory by what holds it, against the floor: the same
// values with ideal buffer reuse (every planned value in a buffer of its own size, freed the
// moment it dies).
type Memory struct {
	// Weights are the frozen base's tensors (4-bit codes and scales for QLoRA).
	Weights int64 `json:"weights"`
	// Adapters are the trainable parameters.
	Adapters int64 `json:"adapters"`
	// Optimizer is the optimizer state on the device (moments, or their 8-bit codes and scales).
	Optimizer int64 `json:"optimizer"`
	// Gradients are the adapter's gradients (and, with gradient accumulation, their sums).
	Gradients int64 `json:"gradients"`
	// Activations are the step's other planned values at their live peak (forward activations,
	// backward temporaries), with ideal reuse.
	Activations int64 `json:"activations"`
	// Floor is the sum of the five above.
	Floor int64 `json:"floor"`
	// Peak is what the device holds during a step: weights, adapters, optimizer state, and the
	// buffers the step's plan allocates (plus the accumulation buffers).
	Peak int64 `json:"peak"`
}

// Ratio is Peak over Floor.
func (m Memory) Ratio() float64 {
	if m.Floor == 0 {
		return 0
	}
	return float64(m.Peak) / float64(m.Floor)
}

// String is one line: the peak, the floor and the parts.
func (m Memory) String() string {
	return fmt.Sprintf("peak %s (%.2f× the floor %s): weights %s, adapters %s, optimizer %s, gradients %s, activations %s",
		byteSize(m.Peak), m.Ratio(), byteSize(m.Floor), byteSize(m.Weights), byteSize(m.Adapters),
		byteSize(m.Optimizer), byteSize(m.Gradients), byteSize(m.Activations))
}

// stepMemory accounts for one step program: its planned buffers and their floor, with weights,
// adapter parameters and optimizer state bound to it; accum is the bytes of gradient sums held
// outside it (0 without accumulation).
func stepMemory(p *engine.Program, weights, optimizer, accum int64, params []Param) Memory {
	m := Memory{Weights: weights, Optimizer: optimizer}
	for _, q := range params {
		m.Adapters += q.Tensor.Meta().Bytes()
	}
	// The gradients are among the program's values (f32, the parameters' sizes).
	grads := m.Adapters
	floor := p.FloorBytes()
	m.Gradients = grads + accum
	m.Activations = max(0, floor-grads)
	m.Floor = m.Weights + m.Adapters + m.Optimizer + m.Gradients + m.Activations
	m.Peak = m.Weights + m.Adapters + m.Optimizer + accum + p.PlannedBytes()
	return m
}

// Memory is the step's device memory; weights are the model's bytes on the device.
func (s *StepGraph) Memory(weights int64) Memory {
	var opt int64
	if s.opt != nil {
		opt = s.opt.StateBytes()
	}
	return stepMemory(s.Program, weights, opt, 0, s.Params)
}
