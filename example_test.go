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
	cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup = 400, 48, 1e-2, 5
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
	// step 400 of 400, ETA 0s
	// the loss fell below a fifth: true
	//  The cow says moo.
}

// tiny writes a generated tiny Llama and a dataset of facts into a new temporary folder, for the
// examples; the caller removes the folder.
func tiny() (dir, modelDir, data string) {
	dir, err := os.MkdirTemp("", "lathe-example")
	if err != nil {
		log.Fatal(err)
	}
	modelDir, data = filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl")
	if _, err := synth.Write(modelDir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: "F32"}); err != nil {
		log.Fatal(err)
	}
	if err := synth.WriteDataset(data, synth.Facts, 1, 200); err != nil {
		log.Fatal(err)
	}
	return dir, modelDir, data
}

// Train on a goroutine and read the progress from a channel, as a UI loop would, with a
// checkpoint every 10 steps.
func ExampleTrainer_Start() {
	dir, modelDir, data := tiny()
	defer os.RemoveAll(dir)
	m, err := lathe.Open(modelDir, lathe.Options{Device: "cpu"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	cfg := lathe.DefaultTrainConfig()
	cfg.Data, cfg.Out = data, filepath.Join(dir, "adapter")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.LR, cfg.SaveEvery = 30, 2, 32, 1e-2, 10
	tr, err := m.NewTrainer(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	job := tr.Start(context.Background())
	events := 0
	for p := range job.Events() {
		events++
		_ = p.Loss // draw it
	}
	res, err := job.Wait()
	if err != nil {
		log.Fatal(err)
	}
	ckpts, _ := filepath.Glob(filepath.Join(cfg.Out, "checkpoint-*"))
	fmt.Println(events, "events; the loss fell:", res.LossEnd < res.LossStart)
	fmt.Println(len(ckpts), "checkpoints kept")
	// Output:
	// 30 events; the loss fell: true
	// 2 checkpoints kept
}

// Serve a weighted combination of adapters under a name: half and half of one adapter is that
// adapter, exactly.
func ExampleModel_CombineAdapters() {
	dir, modelDir, data := tiny()
	defer os.RemoveAll(dir)
	m, err := lathe.Open(modelDir, lathe.Options{Device: "cpu"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	cfg := lathe.DefaultTrainConfig()
	cfg.Data, cfg.Out = data, filepath.Join(dir, "adapter")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.LR = 30, 2, 32, 1e-2
	res, err := m.Train(context.Background(), cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	half := lathe.Weighted{Dir: res.Adapter, Weight: 0.5}
	if err := m.LoadAdapter("one", res.Adapter); err != nil {
		log.Fatal(err)
	}
	if err := m.CombineAdapters("halves", half, half); err != nil {
		log.Fatal(err)
	}
	text := func(adapter string) string {
		r, err := m.Generate(context.Background(), lathe.Request{Prompt: "What does the duck say?", Adapter: adapter}, nil)
		if err != nil {
			log.Fatal(err)
		}
		return r.Text
	}
	fmt.Println(m.Adapters())
	fmt.Println("the same text:", text("one") == text("halves"))
	fmt.Println("the base differs:", text("") != text("one"))
	m.UnloadAdapter("halves")
	fmt.Println(m.Adapters())
	// Output:
	// [halves one]
	// the same text: true
	// the base differs: true
	// [one]
}
