package train

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// fixture writes a tiny model and a learnable dataset, and returns a config training on them.
func fixture(t *testing.T, method string) Config {
	dir := t.TempDir()
	_, err := synth.Write(filepath.Join(dir, "model"), synth.Options{Preset: synth.Presets["tiny"], Seed: 3})
	require.NoError(t, err)
	require.NoError(t, synth.WriteDataset(filepath.Join(dir, "data.jsonl"), synth.Facts, 4, 96))
	cfg := DefaultConfig()
	cfg.Model, cfg.Data, cfg.Out, cfg.Method = filepath.Join(dir, "model"), filepath.Join(dir, "data.jsonl"), filepath.Join(dir, "out"), method
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.LR = 60, 4, 32, 3, 1e-2
	cfg.Dropout = 0
	if method == "ia3" {
		cfg.LR = 0.3
	}
	return cfg
}

func train(t *testing.T, cfg Config, b engine.Backend) Result {
	tr, err := New(cfg, b)
	require.NoError(t, err)
	defer tr.Close()
	res, err := tr.Run(context.Background(), nil)
	require.NoError(t, err)
	return res
}

func TestEveryMethodLowersTheLossOnCPU(t *testing.T) {
	for _, method := range []string{"lora", "qlora", "dora", "qdora", "ia3"} {
		t.Run(method, func(t *testing.T) {
			cfg := fixture(t, method)
			res := train(t, cfg, cpu.New())
			t.Logf("%s: loss %.3f → %.3f, eval %.3f, %.0f tokens/s, peak %d bytes", method, res.LossStart, res.LossEnd, *res.EvalLoss, res.TokensPerS, res.PeakBytes)
			require.Equal(t, cfg.Steps, res.Steps)
			require.Less(t, res.LossEnd, 0.8*res.LossStart, "the loss falls")
			require.FileExists(t, filepath.Join(cfg.Out, peft.ConfigFile))
			require.FileExists(t, filepath.Join(cfg.Out, "loss.png"))
			require.FileExists(t, filepath.Join(cfg.Out, "metrics.jsonl"))

			// The saved adapter reloads to the same eval loss, bit for bit.
			tr, err := New(cfg, cpu.New())
			require.NoError(t, err)
			defer tr.Close()
			saved, err := peft.Load(cfg.Out, tr.Model.Cfg, tr.Backend)
			require.NoError(t, err)
			defer saved.Release()
			ev, err := NewStepGraph(tr.Model, saved, cfg.Batch, cfg.Seq, false, false)
			require.NoError(t, err)
			defer ev.Close()
			l, _, err := Evaluate(ev, tr.evalSet, cfg.Batch, cfg.Seq)
			require.NoError(t, err)
			require.Equal(t, *res.EvalLoss, l)
		})
	}
}

func TestEveryMethodLowersTheLossOnWebGPU(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	for _, method := range []string{"lora", "qlora", "dora", "qdora", "ia3"} {
		cfg := fixture(t, method)
		cfg.Steps, cfg.Batch, cfg.Seq = 12, 2, 32
		res := train(t, cfg, gpu)
		t.Logf("%s on %s: loss %.3f → %.3f", method, res.Device, res.LossStart, res.LossEnd)
		require.Less(t, res.LossEnd, 0.9*res.LossStart, "the loss falls on WebGPU (%s)", method)
	}
}

// A run interrupted at a checkpoint and resumed ends with the weights of an uninterrupted run.
func TestResumeContinuesToTheSameWeights(t *testing.T) {
	for _, optim := range []string{OptimAdamW, OptimAdamW8bit} {
		t.Run(optim, func(t *testing.T) {
			cfg := fixture(t, "lora")
			cfg.Optim = optim
			testResume(t, cfg)
		})
	}
	// One submission a step (no accumulation), 8-bit moments.
	t.Run("adamw8bit/one-submission", func(t *testing.T) {
		cfg := fixture(t, "qlora")
		cfg.Optim, cfg.GradAccum = OptimAdamW8bit, 1
		testResume(t, cfg)
	})
}

// testResume trains cfg straight, and in two runs with a checkpoint between; the weights agree bit
// for bit (the 8-bit state is saved as the device holds it).
func testResume(t *testing.T, cfg Config) { testResumeOn(t, cfg, cpu.New()) }

// testResumeOn is testResume on backend b.
func testResumeOn(t *testing.T, cfg Config, b engine.Backend) {
	cfg.Steps, cfg.Dropout, cfg.EvalFraction = 8, 0.1, 0 // dropout seeds resume too
	if cfg.GradAccum == 1 && cfg.Optim == OptimAdamW {
		cfg.GradAccum = 2 // accumulation resumes too
	}
	straight := cfg
	straight.Out = filepath.Join(t.TempDir(), "straight")
	train(t, straight, b)

	tr, err := New(cfg, b)
	require.NoError(t, err)
	for range 3 {
		_, err := tr.Step()
		require.NoError(t, err)
	}
	require.NoError(t, tr.checkpoint())
	tr.Close()
	cfg.Resume = true
	res := train(t, cfg, b)
	require.Equal(t, 3, res.ResumedFrom)
	require.Equal(t, 8, res.Steps)

	load := func(dir string) map[string][]float32 {
		tr, err := New(cfg, b)
		require.NoError(t, err)
		defer tr.Close()
		a, err := peft.Load(dir, tr.Model.Cfg, tr.Backend)
		require.NoError(t, err)
		out := map[string][]float32{}
		for _, p := range a.Params() {
			out[p.Key], err = p.Tensor.Float32()
			require.NoError(t, err)
		}
		return out
	}
	require.Equal(t, load(straight.Out), load(cfg.Out))
}

// On the demo task (QLoRA on the facts data, as scripts/demo trains it, fewer steps), the 8-bit
// optimizer ends near the f32 optimizer's loss, with its state at about a quarter of the memory
// (codes padded to whole blocks of 256, plus one f32 scale a block and the two codes).
//
// One run's final loss is too noisy to compare: across seeds the 8-bit/f32 ratio of single runs
// spread from 0.96 to 1.08, and a change of rounding in a CPU kernel (a GEMM's summation order)
// moved one seed's ratio from under 1.02 to 1.08. So the test compares the mean final loss over
// six seeds (whose own spread is about 2%) and allows 5%. CI's race pass skips it (scripts/test).
func TestAdamW8bitMatchesAdamWOnTheDemoTask(t *testing.T) {
	cfg := fixture(t, "qlora")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.EvalFraction = 150, 4, 48, 10, 0
	losses := map[string]float64{}
	stateBytes := map[string]int64{}
	const seeds = 6
	for seed := uint64(1); seed <= seeds; seed++ {
		for _, optim := range []string{OptimAdamW, OptimAdamW8bit} {
			c := cfg
			c.Seed = seed
			c.Optim, c.Out = optim, filepath.Join(t.TempDir(), optim)
			tr, err := New(c, cpu.New())
			require.NoError(t, err)
			res, err := tr.Run(context.Background(), nil)
			require.NoError(t, err)
			stateBytes[optim] = tr.opt.StateBytes()
			tr.Close()
			// The final loss: the mean of the last 10 steps' (a single batch's loss is noisy).
			steps, _, err := ReadMetrics(filepath.Join(c.Out, "metrics.jsonl"))
			require.NoError(t, err)
			var sum float64
			for _, s := range steps[len(steps)-10:] {
				sum += s.Loss
			}
			losses[optim] += sum / 10 / seeds
			t.Logf("seed %d %s: loss %.4f → %.4f (last 10 steps %.4f), optimizer state %d bytes", seed, optim, res.LossStart, res.LossEnd, sum/10, stateBytes[optim])
			require.Less(t, res.LossEnd, 0.5*res.LossStart, "the loss falls")
		}
	}
	t.Logf("mean final loss over %d seeds: f32 %.4f, 8-bit %.4f (ratio %.4f)", seeds, losses[OptimAdamW], losses[OptimAdamW8bit], losses[OptimAdamW8bit]/losses[OptimAdamW])
	require.Less(t, losses[OptimAdamW8bit], 1.05*losses[OptimAdamW], "8-bit mean final loss against f32's")
	ratio := float64(stateBytes[OptimAdamW8bit]) / float64(stateBytes[OptimAdamW])
	require.InDelta(t, 0.25, ratio, 0.02, "8-bit state / f32 state")
}

// A step whose loss is not finite is skipped and reported, and never reaches the weights.
func TestNonFiniteStepIsSkipped(t *testing.T) {
	cfg := fixture(t, "lora")
	tr, err := New(cfg, cpu.New())
	require.NoError(t, err)
	defer tr.Close()
	// Poison the base model: every logit becomes NaN.
	w := tr.Model.Tensors["model.norm.weight"]
	v, err := w.Float32()
	require.NoError(t, err)
	v[0] = float32(math.NaN())
	require.NoError(t, w.SetFloat32(v))
	before := map[string][]float32{}
	for _, p := range tr.Adapter.Params() {
		before[p.Key], _ = p.Tensor.Float32()
	}
	m, err := tr.Step()
	require.NoError(t, err)
	require.True(t, m.Skipped)
	require.True(t, math.IsNaN(m.Loss))
	for _, p := range tr.Adapter.Params() {
		after, _ := p.Tensor.Float32()
		require.Equal(t, before[p.Key], after, "%s untouched", p.Key)
	}
	_, err = tr.Run(context.Background(), nil)
	require.ErrorContains(t, err, "every step was skipped")
}

func TestConfigErrors(t *testing.T) {
	cfg := fixture(t, "lora")
	bad := cfg
	bad.Method = "vera"
	_, err := New(bad, cpu.New())
	require.ErrorContains(t, err, `method "vera"`)
	bad = cfg
	bad.Data = filepath.Join(t.TempDir(), "missing.jsonl")
	_, err = New(bad, cpu.New())
	require.ErrorContains(t, err, "missing.jsonl")
}

// A backend with only the core ops (the fused LoRA, its backward, SwiGLU and IA3's backward
// rewritten into core ops by the compiler) trains every method, LoRA with dropout, to the CPU's
// losses and weights.
func TestCoreOnlyBackendTrainsLikeTheCPU(t *testing.T) {
	for _, method := range []string{"lora", "qlora", "dora", "qdora", "ia3"} {
		t.Run(method, func(t *testing.T) {
			cfg := fixture(t, method)
			cfg.Steps, cfg.Batch, cfg.Seq = 8, 2, 32
			if method != "ia3" {
				cfg.Dropout = 0.1
			}
			mcfg, err := model.LoadConfig(cfg.Model)
			require.NoError(t, err)
			var res [2]Result
			var weights [2]map[string][]float32
			for i, b := range []engine.Backend{cpu.New(), enginetest.CoreOnly(cpu.New())} {
				cfg.Out = filepath.Join(t.TempDir(), "out")
				res[i] = train(t, cfg, b)
				a, err := peft.Load(cfg.Out, mcfg, cpu.New())
				require.NoError(t, err)
				weights[i] = map[string][]float32{}
				for _, k := range a.Keys() {
					x, _ := a.Tensor(k)
					weights[i][k], err = x.Float32()
					require.NoError(t, err)
				}
				a.Release()
			}
			require.InEpsilon(t, res[0].LossStart, res[1].LossStart, 1e-5)
			require.InEpsilon(t, res[0].LossEnd, res[1].LossEnd, 1e-3)
			require.InEpsilon(t, *res[0].EvalLoss, *res[1].EvalLoss, 1e-3)
			for k, w := range weights[0] {
				require.Len(t, weights[1][k], len(w), k)
				var diff, norm float64
				for j := range w {
					d := float64(w[j] - weights[1][k][j])
					diff += d * d
					norm += float64(w[j]) * float64(w[j])
				}
				require.Less(t, diff, 1e-6*norm, "%s: the core-only weights differ from the CPU's", k)
			}
		})
	}
}

// A training step (one micro-batch) is one submission and one read: forward, backward, gradient
// norm, clipping, the non-finite check and AdamW run in the step's program, and the host reads
// back only the status (loss and skip flag).
func TestTrainingStepIsOneSubmission(t *testing.T) {
	for _, method := range []string{"lora", "qlora"} {
		t.Run(method, func(t *testing.T) {
			cfg := fixture(t, method)
			cfg.EvalFraction = 0
			b := engine.NewCounting(cpu.New())
			tr, err := New(cfg, b)
			require.NoError(t, err)
			defer tr.Close()
			for step := range 3 {
				before := b.Counts()
				lr := tr.sched.LR(tr.opt.StepCount(), cfg.LR) // the rate this update uses
				m, err := tr.Step()
				require.NoError(t, err)
				require.False(t, m.Skipped)
				require.Equal(t, lr, m.LR, "step %d: the metrics' learning rate is the update's", step)
				d := b.Counts().Sub(before)
				require.Equal(t, int64(1), d.Submissions, "step %d: submissions", step)
				require.Equal(t, int64(1), d.Reads, "step %d: host reads", step)
				require.Equal(t, int64(tr.StepProgram().Launches()), d.Launches)
			}
			require.Equal(t, 3, tr.opt.StepCount())
		})
	}
}

// A PiSSA run trains (the loss falls), and its saved adapter, converted as PEFT converts it,
// gives over the original base the eval loss the run measured over the residual base.
func TestPiSSARun(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Init, cfg.Steps, cfg.Targets = peft.InitPiSSA, 30, []string{"q_proj", "v_proj", "down_proj"}
	res := train(t, cfg, cpu.New())
	require.Less(t, res.LossEnd, 0.8*res.LossStart, "the loss falls")
	plain := cfg
	plain.Init = ""
	tr, err := New(plain, cpu.New()) // the original base
	require.NoError(t, err)
	defer tr.Close()
	saved, err := peft.Load(cfg.Out, tr.Model.Cfg, tr.Backend)
	require.NoError(t, err)
	defer saved.Release()
	require.Equal(t, 2*cfg.Rank, saved.Modules()[0].R)
	ev, err := NewStepGraph(tr.Model, saved, cfg.Batch, cfg.Seq, false, false)
	require.NoError(t, err)
	defer ev.Close()
	l, _, err := Evaluate(ev, tr.evalSet, cfg.Batch, cfg.Seq)
	require.NoError(t, err)
	require.InDelta(t, *res.EvalLoss, l, 1e-3**res.EvalLoss)
}

// Compute "bf16" (QLoRA's usual bnb_4bit_compute_dtype) trains: the loss falls as with f32
// products, by a different path where the CPU multiplies in bfloat16 (the same bits elsewhere).
// Other values are refused.
func TestComputeBF16TrainsQLoRA(t *testing.T) {
	bad := fixture(t, "qlora")
	bad.Compute = "f8"
	_, err := New(bad, cpu.New())
	require.ErrorContains(t, err, `compute "f8" is not f32 or bf16`)

	// QLoRA on its NF4 base, and LoRA on a checkpoint stored in bf16 (kept 16-bit: MatMul16 forward
	// and backward).
	for _, c := range []struct{ method, dtype string }{{"qlora", "F32"}, {"lora", "BF16"}} {
		t.Run(c.method+"/"+c.dtype, func(t *testing.T) {
			exact := fixture(t, c.method)
			_, err := synth.Write(exact.Model, synth.Options{Preset: synth.Presets["tiny"], Seed: 3, DType: c.dtype})
			require.NoError(t, err)
			exact.Steps = 30
			bf := exact
			bf.Compute, bf.Out = "bf16", filepath.Join(t.TempDir(), "out")
			re, rb := train(t, exact, cpu.New()), train(t, bf, cpu.New())
			t.Logf("loss %.4f → %.4f with f32 products, %.4f → %.4f with bf16", re.LossStart, re.LossEnd, rb.LossStart, rb.LossEnd)
			require.Less(t, rb.LossEnd, 0.8*rb.LossStart, "the loss falls")
			if gemm.HasBF16() {
				require.NotEqual(t, re.LossEnd, rb.LossEnd, "bf16 products changed nothing on a CPU with AVX512_BF16")
				require.InDelta(t, re.LossStart, rb.LossStart, 0.01*re.LossStart, "the first step's loss is within bfloat16's rounding")
			} else {
				require.Equal(t, re.LossEnd, rb.LossEnd)
			}
		})
	}
}
