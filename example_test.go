package lathe_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/model/synth"
)

// Fine-tune a QLoRA adapter on a generated tiny Llama and a dataset of facts, with progress
// events, then generate with it, streamed.
func Example() {
	dir, err := os.MkdirTemp("", "lathe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// A tiny random Llama and 300 {"prompt","completion"} lines such as "What does the cow say?".
	modelDir, data := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl")
	if _, err := synth.Write(modelDir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: "F32"}); err != nil {
		log.Fatal(err)
	}
	if err := synth.WriteDataset(data, synth.Facts, 1, 300); err != nil {
		log.Fatal(err)
	}

	m, err := lathe.Open(modelDir, lathe.Options{Device: "cpu", Quantize: "nf4", DoubleQuant: true})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	cfg := lathe.DefaultTrainConfig()
	cfg.Data, cfg.Out, cfg.Method = data, filepath.Join(dir, "adapter"), "qlora"
	cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup = 150, 48, 1e-2, 5
	var last lathe.Progress
	res, err := m.Train(context.Background(), cfg, func(p lathe.Progress) {
		last = p // an app would draw p.Loss, p.TokensPerS and p.ETA
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("step %d of %d, ETA %v\n", last.Step, last.Steps, last.ETA)
	fmt.Println("the loss fell below a fifth:", res.LossEnd < res.LossStart/5)

	if err := m.LoadAdapter("facts", res.Adapter); err != nil {
		log.Fatal(err)
	}
	for piece, err := range m.Stream(context.Background(), lathe.Request{Prompt: "What does the cow say?", Adapter: "facts"}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(piece)
	}
	fmt.Println()
	// Output:
	// step 150 of 150, ETA 0s
	// the loss fell below a fifth: true
	//  The cow says moo.
}
