package bench

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// TrainStep is the TrainFunc of lathe's trainer: a LoRA of req.Rank (alpha 2·rank) on every
// linear layer, one step = forward, backward and the AdamW update, on random token ids.
func TrainStep(ctx context.Context, be engine.Backend, req TrainRequest) (TrainMeasurement, error) {
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
	step, err := train.NewStepGraph(m, a, req.Batch, req.Seq, true, false)
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer step.Close()
	opt, err := train.NewAdamW(be, step.Params, train.DefaultAdamW())
	if err != nil {
		return TrainMeasurement{}, err
	}
	defer opt.Close()
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
	for i := 0; i < req.Warmup+req.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		t0 := time.Now()
		loss, err := step.Run(b, int32(i))
		if err != nil {
			return res, err
		}
		grads, err := step.GradArgs()
		if err != nil {
			return res, err
		}
		if _, err := opt.Step(grads, 1e-4, 1); err != nil {
			return res, err
		}
		if i >= req.Warmup {
			res.StepSeconds = append(res.StepSeconds, time.Since(t0).Seconds())
		}
		res.Loss = loss
	}
	return res, nil
}
