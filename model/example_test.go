package model_test

import (
	"fmt"
	"os"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// Two sequences share each step of a KV cache: one with a LoRA adapter, one with the base model,
// each at its own position in its own slot.
func ExampleCache_Step() {
	dir, _ := os.MkdirTemp("", "lathe-example-")
	defer os.RemoveAll(dir)
	if _, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1}); err != nil {
		panic(err)
	}
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4"})
	if err != nil {
		panic(err)
	}
	defer m.Release()
	lora, err := peft.New(peft.LoRAConfig(), m.Cfg, m.Backend, 1)
	if err != nil {
		panic(err)
	}
	defer lora.Release()

	cache, err := m.NewCache(2, 64) // two slots of 64 positions
	if err != nil {
		panic(err)
	}
	defer cache.Release()
	// Prefill both prompts (of different lengths) in one step, then decode a token of each.
	logits, err := cache.Step([]model.Seq{
		{Slot: 0, IDs: []int32{1, 17, 42, 7}, Adapter: lora},
		{Slot: 1, IDs: []int32{1, 99}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("prefill logits:", len(logits)/m.Cfg.VocabSize, "rows")
	logits, err = cache.Step([]model.Seq{
		{Slot: 0, Pos: 4, IDs: []int32{argmax(logits[:m.Cfg.VocabSize])}, Adapter: lora},
		{Slot: 1, Pos: 2, IDs: []int32{argmax(logits[m.Cfg.VocabSize:])}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("decode logits:", len(logits)/m.Cfg.VocabSize, "rows; programs compiled:", cache.Programs())
	// Output:
	// prefill logits: 2 rows
	// decode logits: 2 rows; programs compiled: 2
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}
