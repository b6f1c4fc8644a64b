// Command desktop is a minimal desktop app that embeds lathe: a GLFW window that fine-tunes an
// adapter on the user's data and draws the loss curve live, step by step, with the title bar
// showing the step, loss, speed and ETA. Space pauses and resumes; closing the window stops
// training, leaving a checkpoint that --resume continues. The window draws with the training
// device when it is a GPU (studio.Canvas); `lathe studio` is the full version.
//
//	go run ./examples/desktop --model tiny --data facts.jsonl --out adapter
package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"

	"github.com/go-gl/glfw/v3.3/glfw"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/studio" // also locks main() to the main thread, as GLFW needs
)

func main() {
	dir := flag.String("model", "", "Hugging Face model folder")
	data := flag.String("data", "", "JSONL dataset")
	out := flag.String("out", "adapter", "adapter and checkpoint folder")
	steps := flag.Int("steps", 300, "training steps")
	resume := flag.Bool("resume", false, "continue from the latest checkpoint in --out")
	flag.Parse()
	if err := run(*dir, *data, *out, *steps, *resume); err != nil {
		fmt.Fprintln(os.Stderr, "desktop:", err)
		os.Exit(1)
	}
}

func run(dir, data, out string, steps int, resume bool) error {
	m, err := lathe.Open(dir, lathe.Options{Device: "auto"})
	if err != nil {
		return err
	}
	defer m.Close()
	cfg := lathe.DefaultTrainConfig()
	cfg.Method, cfg.Data, cfg.Out, cfg.Resume, cfg.Overwrite = "lora", data, out, resume, !resume
	cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup, cfg.SaveEvery = steps, 48, 1e-2, 5, 100
	tr, err := m.NewTrainer(cfg)
	if err != nil {
		return err
	}
	defer tr.Close()

	if err := glfw.Init(); err != nil {
		return err
	}
	defer glfw.Terminate()
	glfw.WindowHint(glfw.ClientAPI, glfw.NoAPI)
	win, err := glfw.CreateWindow(640, 360, "lathe", nil, nil)
	if err != nil {
		return err
	}
	defer win.Destroy()
	canvas, err := studio.NewCanvas(win, m)
	if err != nil {
		return err
	}
	defer canvas.Release()

	// Training runs on its own goroutine; its events arrive on a channel. Pausing holds the
	// event loop's reads, and so the run (it waits for a reader 16 events behind).
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	job := tr.Start(ctx)
	paused := false
	win.SetKeyCallback(func(_ *glfw.Window, k glfw.Key, _ int, a glfw.Action, _ glfw.ModifierKey) {
		if k == glfw.KeySpace && a == glfw.Press {
			paused = !paused
		}
	})
	var losses []float64
	events := job.Events()
	for !win.ShouldClose() {
		glfw.WaitEventsTimeout(1.0 / 30)
	drain:
		for !paused && events != nil {
			select {
			case p, ok := <-events:
				if !ok {
					events = nil
					break drain
				}
				losses = append(losses, p.Loss)
				win.SetTitle(fmt.Sprintf("lathe: step %d/%d, loss %.3f, %.0f tokens/s, ETA %v", p.Step, p.Steps, p.Loss,
					p.TokensPerS, p.ETA.Round(1e8)))
			default:
				break drain
			}
		}
		w, h := win.GetFramebufferSize()
		if err := canvas.Present(plot(w, h, losses, steps)); err != nil {
			return err
		}
	}
	stop() // the window closed: the run stops after its step and writes a checkpoint
	for range events {
	}
	res, err := job.Wait()
	if err != nil {
		fmt.Printf("stopped after step %d; --resume continues from the checkpoint in %s\n", len(losses), out)
		return nil
	}
	fmt.Printf("loss %.3f → %.3f; adapter in %s\n", res.LossStart, res.LossEnd, res.Adapter)
	return nil
}

// plot draws the losses as dots over the run's steps, scaled from 0 to the first loss.
func plot(w, h int, losses []float64, steps int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Rect, image.NewUniform(color.RGBA{0x1b, 0x1d, 0x23, 0xff}), image.Point{}, draw.Src)
	if len(losses) == 0 || w < 8 || h < 8 {
		return img
	}
	top := losses[0]
	for i, l := range losses {
		x := 4 + i*(w-8)/max(steps-1, 1)
		y := h - 4 - int(min(max(l/top, 0), 1)*float64(h-8))
		draw.Draw(img, image.Rect(x-1, y-1, x+2, y+2), image.NewUniform(studio.Curve), image.Point{}, draw.Src)
	}
	return img
}
