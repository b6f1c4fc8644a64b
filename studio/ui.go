package studio

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strings"
	"sync"

	"codeberg.org/go-fonts/liberation/liberationsansregular"
	"golang.org/x/image/font"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/lathe-ml/lathe/engine/webgpu"
)

// The window's colours. The curve's is used by nothing else, so a screenshot can find it.
var (
	Background = color.RGBA{0x1b, 0x1d, 0x23, 0xff}
	Panel      = color.RGBA{0x26, 0x29, 0x31, 0xff}
	Text       = color.RGBA{0xe6, 0xe6, 0xe6, 0xff}
	Dim        = color.RGBA{0x8a, 0x8f, 0x98, 0xff}
	Axis       = color.RGBA{0x4a, 0x4f, 0x5a, 0xff}
	Button     = color.RGBA{0x34, 0x5a, 0x8a, 0xff}
	ButtonOff  = color.RGBA{0x33, 0x36, 0x3e, 0xff}
	Curve      = color.RGBA{0xff, 0x8c, 0x1a, 0xff}
)

// A control is one button: what it does and its key.
type control int

const (
	controlStart control = iota
	controlPause
	controlStop
	numControls
)

var controlNames = [numControls]string{"Start (F1)", "Pause (F2)", "Stop (F3)"}

// phase is where the run is.
type phase int

const (
	phaseIdle     phase = iota // not started, or stopped: Start runs (resuming a checkpoint)
	phaseRunning               // training
	phasePaused                // training, held between steps
	phaseStopping              // stopping: the checkpoint is being written
	phaseDone                  // all steps taken
)

// view is what the window shows, written by the training and sampling goroutines and read by
// the one that draws; its methods hold mu.
type view struct {
	mu      sync.Mutex
	device  string
	phase   phase
	losses  []float64 // by step, from step 1 (NaN: a skipped step)
	first   int       // the step of losses[0] - 1 (a resumed run starts later)
	steps   int       // the run's planned steps
	status  string    // step, loss, tokens/s, memory, ETA
	message string    // the last event (stopped, a checkpoint, an error)
	sample  string    // the latest sample from the adapter
	prompt  []rune    // the prompt box's text
	reply   string    // the adapter's answer to the last prompt
	version int       // counts changes, so the window redraws only when there is something new
}

// update runs f on the view under its lock and marks it changed.
func (v *view) update(f func(v *view)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f(v)
	v.version++
}

// changed reports the version, for the window to compare with the one it drew.
func (v *view) changed() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.version
}

// layout is where the parts of the window are, for a size.
type layout struct {
	buttons [numControls]image.Rectangle
	plot    image.Rectangle // the curve's area, inside the axes
	sample  image.Rectangle
	prompt  image.Rectangle
}

func layoutFor(w, h int) layout {
	var l layout
	x := w - 16
	for c := numControls - 1; c >= 0; c-- {
		l.buttons[c] = image.Rect(x-96, 10, x, 38)
		x -= 104
	}
	l.plot = image.Rect(64, 84, w-24, max(h-150, 140))
	l.sample = image.Rect(16, l.plot.Max.Y+28, w-16, l.plot.Max.Y+70)
	l.prompt = image.Rect(16, l.sample.Max.Y+8, w-16, l.sample.Max.Y+64)
	return l
}

// hit is the control under the point, or -1.
func (l layout) hit(p image.Point) control {
	for c, r := range l.buttons {
		if p.In(r) {
			return control(c)
		}
	}
	return -1
}

var face = sync.OnceValues(func() (font.Face, error) {
	f, err := opentype.Parse(liberationsansregular.TTF)
	if err != nil {
		return nil, err
	}
	return opentype.NewFace(f, &opentype.FaceOptions{Size: 14, DPI: 72, Hinting: font.HintingFull})
})

// enabled says which controls do something in a phase.
func enabled(p phase) [numControls]bool {
	switch p {
	case phaseIdle:
		return [numControls]bool{true, false, false}
	case phaseRunning:
		return [numControls]bool{false, true, true}
	case phasePaused:
		return [numControls]bool{true, false, true}
	}
	return [numControls]bool{}
}

// render draws the view into img (the window's pixels) in software, all but the loss curve,
// which it returns for the canvas to draw: a WebGPU canvas draws it with the device.
func (v *view) render(img *image.RGBA) ([]Line, error) {
	fc, err := face()
	if err != nil {
		return nil, fmt.Errorf("studio: font: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	w, h := img.Rect.Dx(), img.Rect.Dy()
	l := layoutFor(w, h)
	fill(img, img.Rect, Background)
	text := func(x, y int, c color.Color, s string) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: fc, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(16, 30, Text, "lathe studio · "+v.device)
	on := enabled(v.phase)
	for c, r := range l.buttons {
		bg, fg := ButtonOff, Dim
		if on[c] {
			bg, fg = Button, Text
		}
		fill(img, r, bg)
		text(r.Min.X+10, r.Min.Y+19, fg, controlNames[c])
	}
	text(16, 62, Text, v.status)
	if v.message != "" {
		text(16, 78, Dim, v.message)
	}

	// The loss curve: x by step over the whole run, y from the lowest to the highest loss.
	p := l.plot
	fill(img, image.Rect(p.Min.X-1, p.Min.Y, p.Min.X, p.Max.Y+1), Axis)
	fill(img, image.Rect(p.Min.X-1, p.Max.Y, p.Max.X, p.Max.Y+1), Axis)
	var lines []Line
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v.losses {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			lo, hi = min(lo, x), max(hi, x)
		}
	}
	if lo <= hi {
		if hi-lo < 1e-6 {
			lo, hi = lo-0.5, hi+0.5
		}
		text(8, p.Min.Y+10, Dim, fmt.Sprintf("%.2f", hi))
		text(8, p.Max.Y, Dim, fmt.Sprintf("%.2f", lo))
		steps := max(v.steps, v.first+len(v.losses), 2)
		at := func(i int) (float64, float64) {
			step := v.first + i + 1
			x := float64(p.Min.X) + float64(step-1)/float64(steps-1)*float64(p.Dx()-1)
			y := float64(p.Min.Y) + (hi-v.losses[i])/(hi-lo)*float64(p.Dy()-1)
			return x, y
		}
		// A skipped step (NaN) is left out: the line joins its neighbours.
		curve := Line{Color: Curve}
		for i, x := range v.losses {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				x, y := at(i)
				curve.Points = append(curve.Points, float32(x), float32(y))
			}
		}
		lines = append(lines, curve)
	}
	text(p.Min.X, p.Max.Y+18, Dim, fmt.Sprintf("step %d", v.first+1))
	text(p.Max.X-70, p.Max.Y+18, Dim, fmt.Sprintf("step %d", max(v.steps, v.first+len(v.losses))))

	fill(img, l.sample, Panel)
	text(l.sample.Min.X+8, l.sample.Min.Y+18, Dim, "sample from the adapter")
	text(l.sample.Min.X+8, l.sample.Min.Y+36, Text, clip(fc, v.sample, l.sample.Dx()-16))
	fill(img, l.prompt, Panel)
	text(l.prompt.Min.X+8, l.prompt.Min.Y+18, Dim, "try the adapter: type a prompt, Enter")
	text(l.prompt.Min.X+8, l.prompt.Min.Y+36, Text, clip(fc, "> "+string(v.prompt)+"_", l.prompt.Dx()-16))
	text(l.prompt.Min.X+8, l.prompt.Min.Y+52, Text, clip(fc, v.reply, l.prompt.Dx()-16))
	return lines, nil
}

// Line is a polyline a canvas draws over its picture, three pixels wide: pixel positions x0,
// y0, x1, y1, ... and a colour.
type Line = webgpu.Line

// drawLines draws lines into img in software, as the device draws them (a lone point too).
func drawLines(img *image.RGBA, lines []Line) {
	for _, l := range lines {
		p := l.Points
		for i := 0; i+1 < len(p); i += 2 {
			j := max(i-2, 0)
			line(img, float64(p[j]), float64(p[j+1]), float64(p[i]), float64(p[i+1]), l.Color)
		}
	}
}

// clip shortens s (on one line) to fit width pixels.
func clip(fc font.Face, s string, width int) string {
	s = strings.Join(strings.Fields(s), " ")
	for s != "" && font.MeasureString(fc, s).Ceil() > width {
		r := []rune(s)
		s = string(r[:len(r)-1])
	}
	return s
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// line draws a segment three pixels wide.
func line(img *image.RGBA, x0, y0, x1, y1 float64, c color.RGBA) {
	n := int(math.Ceil(max(math.Abs(x1-x0), math.Abs(y1-y0)))) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		x, y := int(math.Round(x0+t*(x1-x0))), int(math.Round(y0+t*(y1-y0)))
		fill(img, image.Rect(x-1, y-1, x+2, y+2).Intersect(img.Rect), c)
	}
}
