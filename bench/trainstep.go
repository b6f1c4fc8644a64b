package bench

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// TrainStep is the TrainFunc of lathe's trainer: a LoRA of req.Rank (alpha 2·rank) on every
// linear layer, one step = forward, backward and the AdamW update in one program (the trainer's
// step with one micro-batch), on random token ids. It counts each step's submissions, host reads
// and launches through engine.Counting.
func TrainStep(ctx context.Context, be engine.Backend, req TrainRequest) (TrainMeasurement, error) {
	cb := engine.NewCounting(be)
	be = cb
	lo := model.LoadOptions{}
	if req.Method == "qlora" {
		lo = model.LoadOptions{Quantize: "nf4", DoubleQuant: true}
	}
	m, err := model.Load(req.ModelDir, be, lo)
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer m.Release()
	cfg := peft.LoRAConfig()
	cfg.R, cfg.LoraAlpha, cfg.LoraDropout = req.Rank, float64(2*req.Rank), 0
	cfg.TargetModules = peft.Modules{Pattern: peft.AllLinear}
	a, err := peft.New(cfg, m.Cfg, be, 1)
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer a.Release()
	opt, err := train.NewAdamW(be, train.AdapterParams(a), train.DefaultAdamW())
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer opt.Close()
	step, err := train.NewTrainStep(m, a, req.Batch, req.Seq, false, opt)
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer step.Close()
	n := req.Batch * req.Seq
	r := rand.New(rand.NewPCG(1, 2))
	b := train.Batch{Rows: req.Batch, Seq: req.Seq, IDs: make([]int32, n), Targets: make([]int32, n), Pos: make([]int32, n), Tokens: n}
	for i := range b.IDs {
		b.IDs[i] = int32(r.IntN(m.Cfg.VocabSize))
		b.Pos[i] = int32(i % req.Seq)
	}
	copy(b.Targets, b.IDs[1:])
	b.Targets[n-1] = train.IgnoreIndex
	res := TrainMeasurement{TokensPerStep: n, PeakBytes: step.Program.PeakBytes()}
	var start engine.Counts
	for i := 0; i < req.Warmup+req.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if i == req.Warmup {
			start = cb.Counts()
		}
		t0 := time.Now()
		loss, _, err := step.Update(b, int32(i), 1e-4)
		if err != nil {
			return res, err
		}
		if i >= req.Warmup {
			res.StepSeconds = append(res.StepSeconds, time.Since(t0).Seconds())
		}
		res.Loss = loss
	}
	if k := float64(req.Steps); k > 0 {
		d := cb.Counts().Sub(start)
		res.Submissions, res.Reads, res.Launches = float64(d.Submissions)/k, float64(d.Reads)/k, float64(d.Launches)/k
	}
	// The same step planned with each optimizer (compiled, not run).
	base := map[string]string{"lora": "f32", "qlora": "nf4"}[req.Method]
	for _, o := range []struct {
		name            string
		eightBit, paged bool
	}{{"adamw", false, false}, {"adamw8bit", true, false}, {"adamw paged", false, true}, {"adamw8bit paged", true, true}} {
		oc := train.DefaultAdamW()
		oc.EightBit, oc.Paged = o.eightBit, o.paged
		mem, err := train.PlanMemory(m, a, req.Batch, req.Seq, false, oc)
		if err != nil {
			return res, err
		}
		res.Memory = append(res.Memory, memoryRow(base, o.name, mem))
	}
	if req.Method == "lora" {
		// Over a 16-bit base, kept 16-bit (AdamW): only the weights differ.
		for _, dt := range []string{"BF16", "F16"} {
			dir, ok := req.Bases16[dt]
			if !ok {
				continue
			}
			mem, err := planOver(dir, be, req, cfg)
			if err != nil {
				return res, err
			}
			res.Memory = append(res.Memory, memoryRow(strings.ToLower(dt), "adamw", mem))
		}
	}
	return res, nil
}

// planOver plans the step's memory with AdamW over the checkpoint in dir, with a LoRA of cfg.
func planOver(dir string, be engine.Backend, req TrainRequest, cfg peft.Config) (train.Memory, error) {
	m, err := model.Load(dir, be, model.LoadOptions{})
	if err != nil {
		return train.Memory{}, err
	}
	defer m.Release()
	a16, err := peft.New(cfg, m.Cfg, be, 1)
	if err != nil {
		return train.Memory{}, err
	}
	defer a16.Release()
	return train.PlanMemory(m, a16, req.Batch, req.Seq, false, train.DefaultAdamW())
}

func memoryRow(base, optimizer string, mem train.Memory) MemoryRow {
	return MemoryRow{Base: base, Optimizer: optimizer, Weights: mem.Weights, Adapters: mem.Adapters, State: mem.Optimizer,
		Gradients: mem.Gradients, Activations: mem.Activations, Floor: mem.Floor, Peak: mem.Peak, HostState: mem.HostOptimizer, Moved: mem.PagedBytesPerStep}
}
