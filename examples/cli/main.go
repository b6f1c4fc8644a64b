// Command cli is the smallest program that embeds lathe: it fine-tunes an adapter on a JSONL
// dataset (when --data is given) and generates from a prompt with it, streaming the text.
//
//	go run ./examples/cli --model tiny --data facts.jsonl --out adapter --prompt "What does the cow say?"
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/lathe-ml/lathe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cli:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cli", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("model", "", "Hugging Face model folder")
	data := fs.String("data", "", "JSONL dataset to fine-tune on (none: use --out as it is)")
	out := fs.String("out", "", "adapter folder (written by training, read for generation)")
	prompt := fs.String("prompt", "", "text to continue")
	steps := fs.Int("steps", 400, "training steps")
	device := fs.String("device", "auto", "auto, cpu, webgpu or webgpu:N")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := lathe.Open(*dir, lathe.Options{Device: *device, Quantize: "nf4", DoubleQuant: true})
	if err != nil {
		return err
	}
	defer m.Close()
	if *data != "" {
		cfg := lathe.DefaultTrainConfig()
		cfg.Method, cfg.Data, cfg.Out = "qlora", *data, *out
		cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup, cfg.SaveEvery, cfg.Overwrite = *steps, 48, 1e-2, 5, 50, true
		res, err := m.Train(ctx, cfg, func(p lathe.Progress) {
			if p.Step%25 == 0 || p.Step == p.Steps {
				fmt.Fprintf(stderr, "step %d/%d  loss %.3f  %.0f tokens/s  ETA %v\n", p.Step, p.Steps, p.Loss, p.TokensPerS, p.ETA.Round(1e8))
			}
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "trained on %s: loss %.3f → %.3f\n", m.Device(), res.LossStart, res.LossEnd)
	}
	adapter := ""
	if *out != "" {
		if err := m.LoadAdapter("mine", *out); err != nil {
			return err
		}
		adapter = "mine"
	}
	for piece, err := range m.Stream(ctx, lathe.Request{Prompt: *prompt, Adapter: adapter}) {
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, piece)
	}
	fmt.Fprintln(stdout)
	return nil
}
