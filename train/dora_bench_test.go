package train

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// BenchmarkDoRAStep times one training step (forward, backward and AdamW in one program) of a
// DoRA adapter against the same step with LoRA, on the CPU backend, rank 8 on every linear layer
// of the "small" synthetic Llama (hidden 256, 4 layers), 4 sequences of 128 tokens; dense (dora vs
// lora) and on an NF4 base (qdora vs qlora). The four steps take turns within each iteration, so
// that a shared machine's load falls on all of them alike; it reports each step's time and the
// ratios dora/lora and qdora/qlora:
//
//	go test -run '^$' -bench DoRAStep -benchtime 10x ./train/
func BenchmarkDoRAStep(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "small")
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["small"], Seed: 1})
	require.NoError(b, err)
	const rows, seq = 4, 128
	methods := []string{"lora", "dora", "qlora", "qdora"}
	steps := make([]func(i int), len(methods))
	for k, method := range methods {
		be := cpu.New()
		lo := model.LoadOptions{}
		if method[0] == 'q' {
			lo = model.LoadOptions{Quantize: "nf4", DoubleQuant: true}
		}
		m, err := model.Load(dir, be, lo)
		require.NoError(b, err)
		defer m.Release()
		cfg := peft.LoRAConfig()
		cfg.R, cfg.LoraAlpha, cfg.TargetModules = 8, 16, peft.Modules{Pattern: peft.AllLinear}
		cfg.UseDoRA = method == "dora" || method == "qdora"
		a, err := peft.NewFor(cfg, m, 1)
		require.NoError(b, err)
		defer a.Release()
		opt, err := NewAdamW(be, AdapterParams(a), DefaultAdamW())
		require.NoError(b, err)
		defer opt.Close()
		step, err := NewTrainStep(m, a, rows, seq, false, opt)
		require.NoError(b, err)
		defer step.Close()
		n := rows * seq
		r := rand.New(rand.NewPCG(1, 2))
		batch := Batch{Rows: rows, Seq: seq, IDs: make([]int32, n), Targets: make([]int32, n), Pos: make([]int32, n), Tokens: n}
		for i := range batch.IDs {
			batch.IDs[i] = int32(r.IntN(m.Cfg.VocabSize))
			batch.Pos[i] = int32(i % seq)
		}
		copy(batch.Targets, batch.IDs[1:])
		batch.Targets[n-1] = IgnoreIndex
		steps[k] = func(i int) {
			if _, _, err := step.Update(batch, int32(i), 1e-4); err != nil {
				b.Fatal(err)
			}
		}
		steps[k](0) // warm-up: first-run allocations
	}
	spent := make([]time.Duration, len(methods))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, step := range steps {
			t0 := time.Now()
			step(i + 1)
			spent[k] += time.Since(t0)
		}
	}
	for k, method := range methods {
		b.ReportMetric(spent[k].Seconds()*1e3/float64(b.N), method+"_ms/step")
	}
	b.ReportMetric(spent[1].Seconds()/spent[0].Seconds(), "dora/lora")
	b.ReportMetric(spent[3].Seconds()/spent[2].Seconds(), "qdora/qlora")
}
