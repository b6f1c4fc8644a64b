// Command desktop is the skeleton of a desktop app that embeds lathe, drawn in a terminal until
// lathe has a window toolkit: it fine-tunes an adapter on the user's data and shows training
// live (the loss curve, tokens/s, memory, ETA, a sample from the adapter every few steps). Type
// "p" to pause or resume, "s" to stop, any other line to try it as a prompt. Stopping, Ctrl-C or
// the end of input leaves a checkpoint that --resume continues from.
//
//	go run ./examples/desktop --model tiny --data facts.jsonl --out adapter
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strings"

	"github.com/lathe-ml/lathe"
)

func main() {
	dir := flag.String("model", "", "Hugging Face model folder")
	data := flag.String("data", "", "JSONL dataset")
	out := flag.String("out", "adapter", "adapter and checkpoint folder")
	steps := flag.Int("steps", 300, "training steps")
	every := flag.Int("sample-every", 50, "show a sample every N steps")
	prompt := flag.String("prompt", "What does the cow say?", "the sample's prompt")
	resume := flag.Bool("resume", false, "continue from the latest checkpoint in --out")
	flag.Parse()
	if err := run(*dir, *data, *out, *prompt, *steps, *every, *resume); err != nil {
		fmt.Fprintln(os.Stderr, "desktop:", err)
		os.Exit(1)
	}
}

// ui is what the screen shows; the training goroutine updates and draws it.
type ui struct {
	losses []float64
	status string
	sample string
	paused bool
}

func run(dir, data, out, prompt string, steps, every int, resume bool) error {
	m, err := lathe.Open(dir, lathe.Options{Device: "auto", Quantize: "nf4", DoubleQuant: true})
	if err != nil {
		return err
	}
	defer m.Close()
	cfg := lathe.DefaultTrainConfig()
	cfg.Method, cfg.Data, cfg.Out, cfg.Resume, cfg.Overwrite = "qlora", data, out, resume, !resume
	cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup, cfg.SaveEvery = steps, 48, 1e-2, 5, 100
	tr, err := m.NewTrainer(cfg)
	if err != nil {
		return err
	}
	defer tr.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// The controls: lines typed while training runs.
	toggle, prompts := make(chan struct{}, 1), make(chan string, 4)
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			switch line := strings.TrimSpace(in.Text()); line {
			case "p":
				toggle <- struct{}{}
			case "s":
				stop()
			case "":
			default:
				prompts <- line
			}
		}
		stop() // end of input: stop as a closed window would
	}()

	var u ui
	sample := func(text string) {
		r, err := tr.Sample(ctx, lathe.Request{Prompt: text}, nil)
		if err == nil {
			u.sample = fmt.Sprintf("%q →%s", text, r.Text)
		}
	}
	res, err := tr.Run(ctx, func(p lathe.Progress) {
		u.losses = append(u.losses, p.Loss)
		u.status = fmt.Sprintf("step %d/%d  loss %.3f  %.0f tokens/s  %.1f MiB  ETA %v", p.Step, p.Steps, p.Loss,
			p.TokensPerS, float64(tr.DeviceBytes())/(1<<20), p.ETA.Round(1e8))
		if p.Step%every == 0 {
			sample(prompt)
		}
		for { // the controls, between steps
			u.draw(m.Device())
			select {
			case text := <-prompts:
				sample(text)
				continue
			case <-toggle:
				u.paused = !u.paused
				continue
			default:
			}
			if !u.paused || ctx.Err() != nil {
				return
			}
			select { // paused: wait for a control
			case text := <-prompts:
				sample(text)
			case <-toggle:
				u.paused = !u.paused
			case <-ctx.Done():
			}
		}
	})
	if err != nil {
		fmt.Printf("\nstopped: %v; the checkpoint in %s continues with --resume\n", err, out)
		return nil
	}
	fmt.Printf("\nloss %.3f → %.3f; adapter in %s\n", res.LossStart, res.LossEnd, res.Adapter)
	return nil
}

// draw clears the terminal and shows the status, the loss curve of the last 64 steps as a
// sparkline, and the latest sample.
func (u *ui) draw(device string) {
	const bars = "▁▂▃▄▅▆▇█"
	ls := u.losses[max(0, len(u.losses)-64):]
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range ls {
		lo, hi = min(lo, l), max(hi, l)
	}
	var curve strings.Builder
	for _, l := range ls {
		i := 0
		if hi > lo {
			i = int((l - lo) / (hi - lo) * 7)
		}
		curve.WriteString(string([]rune(bars)[i]))
	}
	if u.paused {
		curve.WriteString("  (paused: p resumes)")
	}
	fmt.Printf("\033[H\033[2Jlathe on %s\n%s\nloss %s\nsample %s\n> ", device, u.status, curve.String(), u.sample)
}
