package train

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
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
	// HostOptimizer is the optimizer state kept in host memory (paged), and PagedBytesPerStep
	// what a step streams between it and the device (the last step's; both ways).
	HostOptimizer     int64 `json:"host_optimizer,omitempty"`
	PagedBytesPerStep int64 `json:"paged_bytes_per_step,omitempty"`
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
	paged := ""
	if m.HostOptimizer > 0 {
		paged = fmt.Sprintf("; optimizer state in host memory %s, %s moved a step", byteSize(m.HostOptimizer), byteSize(m.PagedBytesPerStep))
	}
	return fmt.Sprintf("peak %s (%.2f× the floor %s): weights %s, adapters %s, optimizer %s, gradients %s, activations %s",
		byteSize(m.Peak), m.Ratio(), byteSize(m.Floor), byteSize(m.Weights), byteSize(m.Adapters),
		byteSize(m.Optimizer), byteSize(m.Gradients), byteSize(m.Activations)) + paged
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

// buildStep compiles the training step for micro-batches of rows: one program with the update
// when accum is 1, else a step program whose gradients are summed over accum micro-batches and an
// update compiled by itself. It replaces a step built before.
func (t *Trainer) buildStep(rows, accum int, recompute bool) error {
	t.dropStep()
	var err error
	if accum > 1 || t.opt.pager != nil {
		// Micro-batches' gradients are summed, then one update runs by itself.
		if t.step, err = NewTrainStepWith(t.Model, t.Adapter, rows, t.Cfg.Seq, StepOptions{Recompute: recompute, LossScaled: t.Cfg.LossScale > 0, Save: t.Cfg.SaveDType()}); err != nil {
			return err
		}
		if t.acc, err = NewGradAccumulator(t.Backend, t.step.Params); err != nil {
			return err
		}
		switch {
		case t.opt.pager != nil && t.opt.pager.status == nil:
			err = t.opt.compilePaged()
		case t.opt.pager == nil && t.opt.alone == nil:
			t.opt.alone, err = t.opt.compileAlone()
		}
		return err
	}
	// One submission a step: the update is part of the step's program.
	t.step, err = NewTrainStepWith(t.Model, t.Adapter, rows, t.Cfg.Seq, StepOptions{Recompute: recompute, Optimizer: t.opt, LossScaled: t.Cfg.LossScale > 0, Save: t.Cfg.SaveDType()})
	return err
}

// dropStep frees the training step and the accumulation buffers.
func (t *Trainer) dropStep() {
	if t.step != nil {
		t.step.Close()
		t.step = nil
	}
	if t.acc != nil {
		t.acc.Close()
		t.acc = nil
	}
}

// fitMemory picks the plan of the step within Cfg.MaxMemory: the first that fits of the whole
// batch, then smaller micro-batches (divisors of Batch, GradAccum raised to keep the rows of a
// step), each without and then with gradient checkpointing (when not already asked for). Plans
// are compiled, not run: nothing but the kept plan's buffers is ever allocated. It sets Cfg's
// Batch, GradAccum and Recompute to the plan's, or fails with the bytes the smallest plan needs.
func (t *Trainer) fitMemory() error {
	limit, err := ParseBytes(t.Cfg.MaxMemory)
	if err != nil {
		return fmt.Errorf("train: max_memory: %w", err)
	}
	batch, accum := t.Cfg.Batch, t.Cfg.GradAccum
	checkpointing := []bool{false, true}
	if t.Cfg.Recompute {
		checkpointing = []bool{true}
	}
	var last Memory
	var plan string
	for rows := batch; rows >= 1; rows-- {
		if batch%rows != 0 {
			continue
		}
		for _, recompute := range checkpointing {
			k := accum * batch / rows
			if err := t.buildStep(rows, k, recompute); err != nil {
				return err
			}
			last, plan = t.Memory(), planName(rows, recompute)
			if last.Peak <= limit {
				t.Cfg.Batch, t.Cfg.GradAccum, t.Cfg.Recompute = rows, k, recompute
				return nil
			}
		}
	}
	t.dropStep()
	return fmt.Errorf("train: max_memory %s (%d bytes) is too small: the smallest plan (%s) needs %d bytes (%s); "+
		"lower --seq or --rank, use --optim adamw8bit or --method qlora", t.Cfg.MaxMemory, limit, plan, last.Peak, last)
}

func planName(rows int, recompute bool) string {
	s := fmt.Sprintf("micro-batch %d", rows)
	if recompute {
		s += ", gradient checkpointing"
	}
	return s
}

// ParseBytes reads a size: a byte count, or a number with a unit, binary (KiB, MiB, GiB, TiB)
// or decimal (KB, MB, GB, TB; B), case-insensitive.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1}}
	mult := 1.0
	lower := strings.ToLower(t)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || !(v > 0) || v*mult > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (a positive number of bytes, or with a unit: 4GiB, 512MB)", s)
	}
	return int64(v * mult), nil
}

// PlanMemory is the device memory of a training step of m with a on batches of rows×seq tokens,
// with an optimizer of ocfg, from the compiled plan (nothing runs; the optimizer's state and, when
// paged, its staging buffers are allocated and freed). Unpaged, the step is one program with the
// update; paged, a gradient program, the gradients' copy and the layers' update programs.
func PlanMemory(m *model.Model, a *peft.Adapter, rows, seq int, recompute bool, ocfg AdamWConfig) (Memory, error) {
	opt, err := NewAdamW(m.Backend, AdapterParams(a), ocfg)
	if err != nil {
		return Memory{}, err
	}
	defer opt.Close()
	if opt.pager == nil {
		s, err := NewTrainStep(m, a, rows, seq, recompute, opt)
		if err != nil {
			return Memory{}, err
		}
		defer s.Close()
		return s.Memory(m.WeightBytes()), nil
	}
	t := &Trainer{Cfg: Config{Seq: seq}, Backend: m.Backend, Model: m, Adapter: a, opt: opt}
	defer t.dropStep()
	if err := t.buildStep(rows, 1, recompute); err != nil {
		return Memory{}, err
	}
	mem := t.Memory()
	mem.PagedBytesPerStep = 2 * opt.HostStateBytes() // every step streams the state down and back
	return mem, nil
}
