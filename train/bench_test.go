package train

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// randomBatch is one row of seq random tokens (a fixed seed) whose targets are the next tokens.
func randomBatch(vocab, seq int) Batch {
	r := rand.New(rand.NewPCG(1, 2))
	batch := Batch{Rows: 1, Seq: seq, IDs: make([]int32, seq), Pos: make([]int32, seq), Targets: make([]int32, seq), Tokens: seq}
	for i := range batch.IDs {
		batch.IDs[i], batch.Pos[i] = int32(r.IntN(vocab)), int32(i)
	}
	copy(batch.Targets, batch.IDs[1:])
	batch.Targets[seq-1] = IgnoreIndex
	return batch
}

// BenchmarkTrainStep times a LoRA training step (1×128 tokens, synth's "small" model, rank 8 on
// every linear layer) on the CPU, the update inside the step's program (one submission, one
// read) against the step and then the update as a second program (two submissions, two reads),
// alternately in the same run.
//
//	go test -run '^$' -bench TrainStep -benchtime 10x ./train/
func BenchmarkTrainStep(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "m")
	if _, err := synth.Write(dir, synth.Options{Preset: synth.Presets["small"], Seed: 1}); err != nil {
		b.Fatal(err)
	}
	be := cpu.New()
	m, err := model.Load(dir, be, model.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Release()
	const rows, seq = 1, 128
	batch := randomBatch(m.Cfg.VocabSize, seq)
	setup := func(b *testing.B) (*peft.Adapter, *AdamW) {
		cfg := peft.LoRAConfig()
		cfg.R, cfg.LoraAlpha, cfg.LoraDropout, cfg.TargetModules = 8, 16, 0, peft.Modules{Pattern: peft.AllLinear}
		a, err := peft.New(cfg, m.Cfg, be, 1)
		if err != nil {
			b.Fatal(err)
		}
		opt, err := NewAdamW(be, AdapterParams(a), DefaultAdamW())
		if err != nil {
			b.Fatal(err)
		}
		return a, opt
	}
	b.Run("one-program", func(b *testing.B) {
		a, opt := setup(b)
		defer a.Release()
		defer opt.Close()
		s, err := NewTrainStep(m, a, rows, seq, false, opt)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if _, _, err := s.Update(batch, -1, 1e-4); err != nil { // compiles and prepares
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := s.Update(batch, int32(i), 1e-4); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("two-programs", func(b *testing.B) {
		a, opt := setup(b)
		defer a.Release()
		defer opt.Close()
		s, err := NewStepGraph(m, a, rows, seq, true, false)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		step := func(i int) {
			if _, err := s.Run(batch, int32(i)); err != nil {
				b.Fatal(err)
			}
			g, err := s.GradArgs()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := opt.Step(g, 1e-4, 1); err != nil {
				b.Fatal(err)
			}
		}
		step(-1) // compiles and prepares
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			step(i)
		}
	})
}

// BenchmarkQLoRAStepCompute times a QLoRA training step (1×128 tokens, QVAC Fabric's context, on
// two layers of Llama-3.2-1B's shapes with a vocabulary of 8192, rank 16 on every linear layer) on
// the CPU with the base's products in f32 and in bfloat16 (Config.Compute), in the same run.
//
//	go test -run '^$' -bench QLoRAStepCompute -benchtime 5x ./train/
func BenchmarkQLoRAStepCompute(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "m")
	p := synth.Preset{Name: "1b-2", Vocab: 8192, Hidden: 2048, Intermediate: 8192, Layers: 2, Heads: 32, KVHeads: 8, MaxPos: 512, Tied: true}
	if _, err := synth.Write(dir, synth.Options{Preset: p, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	for _, compute := range []string{"f32", "bf16"} {
		b.Run(compute, func(b *testing.B) {
			be := cpu.New()
			m, err := model.Load(dir, be, model.LoadOptions{Quantize: "nf4", DoubleQuant: true, Compute: compute})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			const rows, seq = 1, 128
			batch := randomBatch(m.Cfg.VocabSize, seq)
			cfg := peft.LoRAConfig()
			cfg.R, cfg.LoraAlpha, cfg.LoraDropout, cfg.TargetModules = 16, 32, 0, peft.Modules{Pattern: peft.AllLinear}
			a, err := peft.New(cfg, m.Cfg, be, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer a.Release()
			opt, err := NewAdamW(be, AdapterParams(a), DefaultAdamW())
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Close()
			s, err := NewTrainStep(m, a, rows, seq, false, opt)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, _, err := s.Update(batch, -1, 1e-4); err != nil { // compiles and prepares
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := s.Update(batch, int32(i), 1e-4); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(seq*rows*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
