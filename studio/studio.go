// Package studio is `lathe studio`: a desktop window (GLFW 3.3 on X11) that fine-tunes an
// adapter live through the public lathe API. It shows the loss curve, tokens/s, device memory
// and a sample generation from the current adapter every few steps; Start, Pause and Stop
// buttons (F1, F2, F3) control the run, and a prompt box tries the adapter. Closing the window
// mid-training writes a checkpoint that `lathe train --resume` (or Start in a later studio with
// Resume) continues.
//
// The window's picture is rendered in Go (text from the Liberation font, the curve, the
// controls). A run on WebGPU shows it through a surface made from the window's X11 handles on
// the device that trains; a run on the CPU shows it with XPutImage, with no GPU involved.
//
// GLFW needs the process's main thread: importing this package locks the main goroutine to it,
// and Run must be called from the main goroutine. Package lathe does not import studio, so
// library users do not build GLFW.
package studio

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/engine/webgpu"
)

func init() {
	// GLFW's calls must come from the main thread; init runs on it.
	runtime.LockOSThread()
}

var releaseOnce sync.Once

// ReleaseMainThread undoes this package's lock of the main goroutine to the main OS thread, for a
// program that links the studio but does not open its window: a locked goroutine hands its
// thread over at every block and wake-up, and the CPU backend's kernels, which the main goroutine
// joins, lost up to half their speed to it (lathe bench's 1B decode: 24-35 tokens/s locked, 40-44
// not). It must be called from the main goroutine; later calls do nothing.
func ReleaseMainThread() { releaseOnce.Do(runtime.UnlockOSThread) }

// Options are a studio session's settings.
type Options struct {
	// Train is the run (Data and Out required; Model is the model folder). SaveEvery defaults
	// to 50 here, so that stopping or closing always leaves a checkpoint.
	Train lathe.TrainConfig
	// Device is "auto", "cpu", "webgpu" or "webgpu:N" (lathe.Options.Device).
	Device string
	// SampleEvery shows a generation from the adapter every N steps (0: none); SamplePrompt
	// is its prompt and SampleTokens the most tokens of it and of a prompt box's reply.
	SampleEvery  int
	SamplePrompt string
	SampleTokens int
	// Width and Height are the window's size (default 900×600); Title its title.
	Width, Height int
	Title         string
	// Paused waits for Start (F1) instead of starting the run when the window opens.
	Paused bool
	// Log receives a line a step and the run's events (the command line's stderr); nil: none.
	Log io.Writer
}

// Summary is what a session did, the last line `lathe studio` prints.
type Summary struct {
	// Step is the last step taken, of Steps; Finished says the run reached Steps.
	Step     int  `json:"step"`
	Steps    int  `json:"steps"`
	Finished bool `json:"finished"`
	// LossStart and LossEnd are the finished run's first and last losses.
	LossStart float64 `json:"loss_start,omitempty"`
	LossEnd   float64 `json:"loss_end,omitempty"`
	// Adapter is the finished run's adapter folder; Checkpoint the latest checkpoint a stopped
	// run left (what --resume continues).
	Adapter    string `json:"adapter,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	// Device is where training ran; Presenter how the window was drawn: "webgpu" (a surface on
	// the training device) or "x11" (software).
	Device    string `json:"device"`
	Presenter string `json:"presenter"`
	// Error is the last training error shown in the window, if any.
	Error string `json:"error,omitempty"`
}

// presenter shows a frame in the window.
type presenter interface {
	name() string
	present(img *image.RGBA, lines []Line) error
	release()
}

// Run opens the model, opens the window and trains until the window is closed (or ctx is
// done, which closes it). A run still going when the window closes is stopped and writes a
// checkpoint first. Call it from the main goroutine.
func Run(ctx context.Context, o Options) (sum Summary, err error) {
	// GLFW reports its errors as panics (the binding's, after it has logged a platform error):
	// they become Run's error, after the deferred calls below have stopped training.
	defer func() {
		if r := recover(); r != nil {
			err = errors.Join(err, fmt.Errorf("studio: %v", r))
		}
	}()
	if os.Getenv("DISPLAY") == "" {
		return sum, errors.New("studio: no X display: set DISPLAY (an X server, or Xvfb for none)")
	}
	if o.Width <= 0 || o.Height <= 0 {
		o.Width, o.Height = 900, 600
	}
	if o.Title == "" {
		o.Title = "lathe studio"
	}
	if o.SampleTokens <= 0 {
		o.SampleTokens = 32
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	cfg := o.Train
	if cfg.SaveEvery == 0 {
		cfg.SaveEvery = 50
	}
	m, err := lathe.OpenFor(cfg, o.Device)
	if err != nil {
		return sum, err
	}
	defer func() { err = errors.Join(err, m.Close()) }()

	v := &view{device: m.Device(), steps: cfg.Steps}
	s := &session{m: m, cfg: cfg, o: o, v: v, log: o.Log}
	s.sum.Device = m.Device()
	defer func() {
		// Stop training (it writes its checkpoint) before the deferred closes free the device.
		got := s.close()
		got.LossStart, got.LossEnd = finite(got.LossStart), finite(got.LossEnd)
		sum = got
		if err == nil && sum.Error != "" {
			err = fmt.Errorf("studio: %s", sum.Error)
		}
	}()
	// The first run starts before the window opens, so that a run that cannot start (an Out
	// with an earlier run's checkpoints, say) is Run's error.
	if !o.Paused {
		if err := s.start(); err != nil {
			return sum, err
		}
	}

	if err := glfw.Init(); err != nil {
		return sum, fmt.Errorf("studio: cannot open a window (is DISPLAY set?): %w", err)
	}
	defer glfw.Terminate()
	glfw.WindowHint(glfw.ClientAPI, glfw.NoAPI)
	win, err := glfw.CreateWindow(o.Width, o.Height, o.Title, nil, nil)
	if err != nil {
		return sum, fmt.Errorf("studio: %w", err)
	}
	defer win.Destroy()
	pr, err := NewCanvas(win, m)
	if err != nil {
		return sum, err
	}
	defer pr.Release()

	s.mu.Lock()
	s.sum.Presenter = pr.Kind()
	s.mu.Unlock()
	bindInput(win, s, v)
	drawn, fw, fh := -1, 0, 0
	var img *image.RGBA
	win.SetRefreshCallback(func(*glfw.Window) { drawn = -1 })
	for !win.ShouldClose() {
		if ctx.Err() != nil {
			win.SetShouldClose(true)
			break
		}
		glfw.WaitEventsTimeout(1.0 / 30)
		w, h := win.GetFramebufferSize()
		ver := v.changed()
		if (ver == drawn && w == fw && h == fh) || w <= 0 || h <= 0 {
			continue
		}
		if img == nil || w != fw || h != fh {
			img = image.NewRGBA(image.Rect(0, 0, w, h))
		}
		lines, err := v.render(img)
		if err != nil {
			return sum, err
		}
		if err := pr.Present(img, lines...); err != nil {
			return sum, err
		}
		drawn, fw, fh = ver, w, h
	}
	return sum, nil
}

// Canvas shows pictures rendered in Go in a GLFW window (made with ClientAPI NoAPI, on X11):
// for a model on WebGPU through a surface on the model's own device, for one on the CPU with
// XPutImage, in software. An app that draws its own window embeds lathe with it.
type Canvas struct{ p presenter }

// NewCanvas makes the canvas of win for the model m. Call it, Present and Release on the
// thread that runs GLFW, and Release before the window is destroyed and m closed.
func NewCanvas(win *glfw.Window, m *lathe.Model) (c *Canvas, err error) {
	defer func() {
		if r := recover(); r != nil { // GLFW reports its errors as panics
			c, err = nil, fmt.Errorf("studio: %v", r)
		}
	}()
	display, window := unsafe.Pointer(glfw.GetX11Display()), uint64(win.GetX11Window())
	if b, ok := m.Internal().Backend.(*webgpu.Backend); ok {
		s, err := b.NewXlibSurface(display, window)
		if err != nil {
			return nil, fmt.Errorf("studio: %w", err)
		}
		return &Canvas{gpuPresenter{s}}, nil
	}
	return &Canvas{&x11Presenter{display: display, window: window}}, nil
}

// Present shows img, the size of the window's framebuffer, with the lines drawn over it (by
// the device on WebGPU, into img in software otherwise).
func (c *Canvas) Present(img *image.RGBA, lines ...Line) error { return c.p.present(img, lines) }

// Kind says how the canvas draws: "webgpu" (on the model's device) or "x11" (software).
func (c *Canvas) Kind() string { return c.p.name() }

// Release frees the canvas (a WebGPU surface).
func (c *Canvas) Release() { c.p.release() }

// gpuPresenter shows frames through a WebGPU surface on the training device.
type gpuPresenter struct{ s *webgpu.Surface }

func (p gpuPresenter) name() string { return "webgpu" }
func (p gpuPresenter) present(img *image.RGBA, lines []Line) error {
	return p.s.Present(img, lines...)
}
func (p gpuPresenter) release() { p.s.Release() }

// bindInput connects the mouse and keyboard to the session: the buttons and F1–F3 control the
// run; typed text goes into the prompt box, Enter asks it, Backspace deletes.
func bindInput(win *glfw.Window, s *session, v *view) {
	act := func(c control) {
		v.mu.Lock()
		on := enabled(v.phase)
		v.mu.Unlock()
		if c < 0 || !on[c] {
			return // a greyed-out button, or its key
		}
		switch c {
		case controlStart:
			_ = s.start() // an error is shown in the window
		case controlPause:
			s.pause()
		case controlStop:
			s.stop()
		}
	}
	win.SetMouseButtonCallback(func(w *glfw.Window, b glfw.MouseButton, a glfw.Action, _ glfw.ModifierKey) {
		if b != glfw.MouseButtonLeft || a != glfw.Press {
			return
		}
		x, y := w.GetCursorPos()
		ww, wh := w.GetSize()
		fw, fh := w.GetFramebufferSize()
		p := image.Pt(int(x*float64(fw)/float64(max(ww, 1))), int(y*float64(fh)/float64(max(wh, 1))))
		act(layoutFor(fw, fh).hit(p))
	})
	win.SetKeyCallback(func(_ *glfw.Window, k glfw.Key, _ int, a glfw.Action, _ glfw.ModifierKey) {
		if a == glfw.Release {
			return
		}
		switch k {
		case glfw.KeyF1:
			act(controlStart)
		case glfw.KeyF2:
			act(controlPause)
		case glfw.KeyF3:
			act(controlStop)
		case glfw.KeyEnter, glfw.KeyKPEnter:
			var prompt string
			v.update(func(v *view) { prompt, v.prompt = string(v.prompt), nil })
			s.ask(prompt)
		case glfw.KeyBackspace:
			v.update(func(v *view) {
				if len(v.prompt) > 0 {
					v.prompt = v.prompt[:len(v.prompt)-1]
				}
			})
		}
	})
	win.SetCharCallback(func(_ *glfw.Window, r rune) {
		v.update(func(v *view) { v.prompt = append(v.prompt, r) })
	})
}
