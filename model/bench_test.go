package model_test

import (
	"fmt"
	"testing"

	"github.com/lathe-ml/lathe/bench"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// BenchmarkDecodeStep times one decode step of 8 sequences on the CPU: two layers of
// Llama-3.2-1B's shapes, NF4 weights, vocab 8192, 64 cached positions each; without adapters and
// with 8 different LoRA adapters (rank 16, every linear layer) from the cache's pool.
//
//	go test -run '^$' -bench DecodeStep -benchtime 20x ./model/
func BenchmarkDecodeStep(b *testing.B) {
	dir := b.TempDir()
	p := bench.E2E1B(16, 8192, 2).Preset // two layers of Llama-3.2-1B, as lathe bench
	if _, err := synth.Write(dir, synth.Options{Preset: p, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Release()
	const batch, ctx = 8, 64
	var loras []model.Adapter
	for i := range batch {
		cfg := peft.LoRAConfig()
		cfg.R, cfg.LoraAlpha, cfg.TargetModules, cfg.InitLoraWeights = 16, 32, peft.Modules{Pattern: peft.AllLinear}, false
		a, err := peft.New(cfg, m.Cfg, m.Backend, uint64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		defer a.Release()
		loras = append(loras, a)
	}
	for _, adapters := range []int{0, batch} {
		b.Run(fmt.Sprintf("adapters=%d", adapters), func(b *testing.B) {
			c, err := m.NewCache(batch, ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Release()
			seqs := make([]model.Seq, batch)
			for i := range seqs {
				seqs[i] = model.Seq{Slot: i, Pos: ctx - 1, IDs: []int32{int32(7 * i)}}
				if adapters > 0 {
					seqs[i].Adapter = loras[i%adapters]
				}
			}
			if _, err := c.Step(seqs); err != nil { // compiles, fills the pool
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := c.Step(seqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
