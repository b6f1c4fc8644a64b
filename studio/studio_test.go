package studio

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/studio/internal/xwin"
)

// childEnv carries a studio's Options (JSON) to the test binary run as a child process: GLFW
// needs a process's main thread, which the test's goroutines are not.
const childEnv = "LATHE_STUDIO_CHILD"

var xvfbErr error // why no X display could be had

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		var o Options
		if err := json.Unmarshal([]byte(raw), &o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		o.Log = os.Stderr
		sum, err := Run(context.Background(), o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "studio:", err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(sum)
		os.Exit(0)
	}
	stop := startXvfb()
	code := m.Run()
	stop()
	os.Exit(code)
}

// startXvfb starts a virtual X server when DISPLAY is unset, as CI has none.
func startXvfb() (stop func()) {
	if os.Getenv("DISPLAY") != "" {
		return func() {}
	}
	path, err := exec.LookPath("Xvfb")
	if err != nil {
		xvfbErr = fmt.Errorf("DISPLAY is unset and Xvfb is not installed (apt-get install xvfb): %w", err)
		return func() {}
	}
	for n := 100 + os.Getpid()%800; ; n++ {
		sock := fmt.Sprintf("/tmp/.X11-unix/X%d", n)
		if _, err := os.Stat(sock); err == nil {
			continue // taken
		}
		cmd := exec.Command(path, fmt.Sprintf(":%d", n), "-screen", "0", "1024x768x24", "-nolisten", "tcp")
		if err := cmd.Start(); err != nil {
			xvfbErr = err
			return func() {}
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			select {
			case <-exited:
				deadline = time.Time{} // lost the display number to another server: try the next
			default:
			}
			if _, err := os.Stat(sock); err == nil {
				os.Setenv("DISPLAY", fmt.Sprintf(":%d", n))
				return func() { cmd.Process.Kill(); <-exited }
			}
		}
		cmd.Process.Kill()
		<-exited
		if n > 100+os.Getpid()%800+5 {
			xvfbErr = fmt.Errorf("Xvfb did not start")
			return func() {}
		}
	}
}

// needDisplay skips a test without an X display, or fails it under LATHE_REQUIRE_GPU=1 (CI).
func needDisplay(t *testing.T) string {
	t.Helper()
	if xvfbErr != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v", xvfbErr)
		}
		t.Skip(xvfbErr)
	}
	return os.Getenv("DISPLAY")
}

var fixture struct {
	once        sync.Once
	model, data string
	err         error
}

// files is a generated tiny Llama and a dataset of facts, shared by the tests.
func files(t *testing.T) (modelDir, data string) {
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "lathe-studio")
		if fixture.err = err; err != nil {
			return
		}
		fixture.model, fixture.data = filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl")
		if _, fixture.err = synth.Write(fixture.model, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: "F32"}); fixture.err != nil {
			return
		}
		fixture.err = synth.WriteDataset(fixture.data, synth.Facts, 1, 200)
	})
	require.NoError(t, fixture.err)
	return fixture.model, fixture.data
}

func config(t *testing.T, steps int) lathe.TrainConfig {
	modelDir, data := files(t)
	cfg := lathe.DefaultTrainConfig()
	cfg.Model, cfg.Data, cfg.Out, cfg.Method = modelDir, data, filepath.Join(t.TempDir(), "adapter"), "lora"
	cfg.Steps, cfg.Seq, cfg.LR, cfg.Warmup = steps, 48, 1e-2, 5
	return cfg
}

// child is a studio running in a child process, its progress lines read as they come.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	out   strings.Builder
	lines chan string
	exit  chan error

	mu  sync.Mutex
	log []string // every progress line, for a failure's message
}

// tail is the last progress lines, for a failure's message.
func (c *child) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.log[max(0, len(c.log)-40):], "\n")
}

func startChild(t *testing.T, o Options) *child {
	raw, err := json.Marshal(o)
	require.NoError(t, err)
	c := &child{t: t, cmd: exec.Command(os.Args[0], "-test.run=^$"), lines: make(chan string, 4096), exit: make(chan error, 1)}
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	c.cmd.Stdout = &c.out
	stderr, err := c.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.log = append(c.log, sc.Text())
			c.mu.Unlock()
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.exit <- c.cmd.Wait()
	}()
	t.Cleanup(func() { c.cmd.Process.Kill() })
	return c
}

// waitFor reads progress lines until one matches re, and returns its submatches.
func (c *child) waitFor(re string, timeout time.Duration) []string {
	c.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("the studio exited before %q: %v\n%s", re, <-c.exit, c.tail())
			}
			if m := rx.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-deadline:
			c.t.Fatalf("no %q within %v\n%s", re, timeout, c.tail())
		}
	}
}

// summary waits for the studio to exit and reads the JSON object it printed last.
func (c *child) summary() Summary {
	c.t.Helper()
	for range c.lines {
	}
	select {
	case err := <-c.exit:
		require.NoError(c.t, err, c.tail())
	case <-time.After(60 * time.Second):
		c.t.Fatal("the studio did not exit after its window closed")
	}
	lines := strings.Split(strings.TrimSpace(c.out.String()), "\n")
	var s Summary
	require.NoError(c.t, json.Unmarshal([]byte(lines[len(lines)-1]), &s), c.out.String())
	return s
}

// exitErr is the child's exit, once its output is read.
func (c *child) exitErr() <-chan error {
	for range c.lines {
	}
	return c.exit
}

// window finds the child's window by its title, waiting for it to be mapped.
func window(t *testing.T, display, title string) *xwin.Window {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var w *xwin.Window
		if w, err = xwin.Find(display, title); err == nil {
			t.Cleanup(w.Release)
			return w
		}
	}
	t.Fatal(err)
	return nil
}

// curve finds the curve's pixels in a screenshot: the mean row of those in the plot's first and
// last tenth (in the plot's height, 0 top to 1 bottom), and how many lie outside the plot.
func curve(img *image.RGBA) (left, right float64, nLeft, nRight, outside int) {
	p := layoutFor(img.Rect.Dx(), img.Rect.Dy()).plot
	var sumL, sumR float64
	for y := img.Rect.Min.Y; y < img.Rect.Max.Y; y++ {
		for x := img.Rect.Min.X; x < img.Rect.Max.X; x++ {
			if img.RGBAAt(x, y) != Curve {
				continue
			}
			in := image.Pt(x, y).In(p.Inset(-2))
			switch {
			case !in:
				outside++
			case x < p.Min.X+p.Dx()/10:
				sumL += float64(y-p.Min.Y) / float64(p.Dy())
				nLeft++
			case x >= p.Max.X-p.Dx()/10:
				sumR += float64(y-p.Min.Y) / float64(p.Dy())
				nRight++
			}
		}
	}
	return sumL / float64(max(nLeft, 1)), sumR / float64(max(nRight, 1)), nLeft, nRight, outside
}

// assertFalling checks that img shows a falling loss curve: high at the left of the plot, low
// at the right, and the curve's colour nowhere else.
func assertFalling(t *testing.T, img *image.RGBA) error {
	left, right, nl, nr, outside := curve(img)
	switch {
	case nl < 20 || nr < 20:
		return fmt.Errorf("the curve has %d pixels in the plot's left tenth and %d in its right tenth", nl, nr)
	case outside > 0:
		return fmt.Errorf("%d pixels of the curve's colour outside the plot", outside)
	case left > 0.4 || right < 0.6 || right-left < 0.4:
		return fmt.Errorf("the curve is at %.2f of the plot's height on the left and %.2f on the right (0 top, 1 bottom): not falling", left, right)
	}
	if got := img.RGBAAt(2, img.Rect.Dy()-2); got != Background {
		return fmt.Errorf("the background is %v, want %v", got, Background)
	}
	return nil
}

// assertButtons checks that the buttons are drawn enabled (or not) as want says.
func assertButtons(img *image.RGBA, want [numControls]bool) error {
	l := layoutFor(img.Rect.Dx(), img.Rect.Dy())
	for c, r := range l.buttons {
		got, col := img.RGBAAt(r.Min.X+2, r.Min.Y+2), ButtonOff
		if want[c] {
			col = Button
		}
		if got != col {
			return fmt.Errorf("button %q is %v, want %v", controlNames[c], got, col)
		}
	}
	return nil
}

// render draws v as the software canvas does.
func render(t *testing.T, v *view, img *image.RGBA) {
	lines, err := v.render(img)
	require.NoError(t, err)
	drawLines(img, lines)
}

// TestRenderFallingCurve checks the software rasteriser's picture without a display: the curve
// test the screenshots rely on passes for a falling run and fails for a rising one.
func TestRenderFallingCurve(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 700, 460)) // not the default size
	v := &view{device: "test", steps: 37, status: "step 37/37", sample: "a sample", prompt: []rune("cow")}
	for i := range 37 {
		v.losses = append(v.losses, 5*math.Exp(-float64(i)/8)+0.3*math.Sin(float64(i)))
	}
	render(t, v, img)
	require.NoError(t, assertFalling(t, img))
	require.NoError(t, assertButtons(img, enabled(phaseIdle)))
	v.phase = phaseRunning
	render(t, v, img)
	require.NoError(t, assertButtons(img, enabled(phaseRunning)))
	require.Error(t, assertButtons(img, enabled(phaseIdle)))
	for i, j := 0, len(v.losses)-1; i < j; i, j = i+1, j-1 {
		v.losses[i], v.losses[j] = v.losses[j], v.losses[i]
	}
	render(t, v, img)
	require.Error(t, assertFalling(t, img), "a rising curve passed as falling")

	// A resumed run's curve starts where it resumed: its first point is to the right.
	v.losses, v.first, v.steps = v.losses[:10], 20, 40
	render(t, v, img)
	_, _, nl, _, _ := curve(img)
	require.Zero(t, nl, "a curve resumed at step 21 of 40 drew in the first tenth")
	// A skipped step (NaN) leaves a gap and does not spoil the scale.
	v.losses, v.first = []float64{3, math.NaN(), 2, 1}, 0
	render(t, v, img)
}

func TestControls(t *testing.T) {
	l := layoutFor(900, 600)
	for c := range numControls {
		r := l.buttons[c]
		require.Equal(t, c, l.hit(r.Min.Add(r.Size().Div(2))))
	}
	require.Equal(t, control(-1), l.hit(image.Pt(5, 300)))
	require.Equal(t, [numControls]bool{true, false, false}, enabled(phaseIdle))
	require.Equal(t, [numControls]bool{false, true, true}, enabled(phaseRunning))
	require.Equal(t, [numControls]bool{true, false, true}, enabled(phasePaused))
	require.Equal(t, [numControls]bool{}, enabled(phaseDone))
}

// TestWindowTrainsAndShowsAFallingCurve opens lathe studio's window under X (Xvfb in CI), trains
// a tiny model on the CPU (drawn with XPutImage) and on WebGPU (lavapipe in CI, drawn through a
// surface on the training device, whose render pipeline draws the curve: no software draws it
// there), reads the window's pixels back from the X server and checks
// the loss curve falls; it types a prompt and reads the adapter's reply, then closes the window.
func TestWindowTrainsAndShowsAFallingCurve(t *testing.T) {
	display := needDisplay(t)
	for _, tc := range []struct {
		device, presenter string
		steps             int
	}{{"cpu", "x11", 60}, {"webgpu", "webgpu", 16}} {
		t.Run(tc.device, func(t *testing.T) {
			if tc.device == "webgpu" {
				testdevice.WebGPU(t) // skips, or fails under LATHE_REQUIRE_GPU=1, without an adapter
			}
			title := "lathe studio test " + tc.device
			cfg := config(t, tc.steps)
			c := startChild(t, Options{Train: cfg, Device: tc.device, SampleEvery: 12, SamplePrompt: "What does the cow say?",
				SampleTokens: 8, Title: title})
			c.waitFor(`^studio: done`, 120*time.Second)
			w := window(t, display, title)
			var img *image.RGBA
			var err error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if img, err = w.Screenshot(); err == nil {
					if err = assertFalling(t, img); err == nil {
						if err = assertButtons(img, enabled(phaseDone)); err == nil {
							break
						}
					}
				}
			}
			if img != nil {
				save(t, img, tc.device)
			}
			require.NoError(t, err)

			for _, k := range []string{"c", "o", "w", "Return"} {
				w.Key(k)
			}
			reply := c.waitFor(`^studio: prompt "(.*)" →(.*)$`, 60*time.Second)
			require.Equal(t, "cow", reply[1], "the typed prompt")

			w.Close()
			s := c.summary()
			require.True(t, s.Finished)
			require.Equal(t, tc.steps, s.Step)
			require.Equal(t, tc.presenter, s.Presenter)
			require.Less(t, s.LossEnd, s.LossStart/2)
			require.FileExists(t, filepath.Join(s.Adapter, "adapter_model.safetensors"))
			if tc.device == "cpu" {
				// The reply is the trained adapter's: the saved adapter, loaded through the API,
				// says the same (greedy decoding, same device).
				m, err := lathe.Open(cfg.Model, lathe.Options{Device: "cpu"})
				require.NoError(t, err)
				defer m.Close()
				require.NoError(t, m.LoadAdapter("studio", s.Adapter))
				sp := lathe.DefaultSampling()
				sp.MaxTokens = 8
				want, err := m.Generate(context.Background(), lathe.Request{Prompt: "cow", Adapter: "studio", Sampling: &sp}, nil)
				require.NoError(t, err)
				require.Equal(t, want.Text, reply[2])
			}
		})
	}
}

// save writes a screenshot into the test's folder, or to $LATHE_STUDIO_SCREENSHOT_DIR (how
// docs/studio.png is made).
func save(t *testing.T, img *image.RGBA, name string) {
	dir := os.Getenv("LATHE_STUDIO_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	f, err := os.Create(filepath.Join(dir, "studio-"+name+".png"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, png.Encode(f, img))
}

// TestCloseMidTrainingLeavesAResumableCheckpoint pauses a run from the keyboard (F2), checks it
// holds, resumes it (F1), closes the window mid-training and resumes the checkpoint the studio
// wrote through the API, as lathe train --resume does.
func TestCloseMidTrainingLeavesAResumableCheckpoint(t *testing.T) {
	display := needDisplay(t)
	title := "lathe studio test close"
	cfg := config(t, 2000)
	cfg.SaveEvery = 1000 // no regular checkpoint before the close: the close writes it
	c := startChild(t, Options{Train: cfg, Device: "cpu", Title: title})
	c.waitFor(`^step 10/2000 `, 60*time.Second)
	w := window(t, display, title)

	w.Key("F2")
	paused, err := strconv.Atoi(c.waitFor(`^studio: paused after step (\d+)`, 30*time.Second)[1])
	require.NoError(t, err)
	// At most the step under way finishes; then nothing until F1.
	var last int
	timeout := time.After(time.Second)
hold:
	for {
		select {
		case line := <-c.lines:
			var step int
			if _, err := fmt.Sscanf(line, "step %d/", &step); err == nil {
				last = step
			}
		case <-timeout:
			break hold
		}
	}
	require.LessOrEqual(t, last, paused+1, "training went on while paused")
	w.Key("F1")
	c.waitFor(`^studio: resumed`, 30*time.Second)
	c.waitFor(fmt.Sprintf(`^step %d/`, paused+5), 30*time.Second)

	w.Close()
	s := c.summary()
	require.False(t, s.Finished)
	require.Greater(t, s.Step, paused+4)
	require.Less(t, s.Step, 2000)
	require.Equal(t, filepath.Join(cfg.Out, fmt.Sprintf("checkpoint-%d", s.Step)), s.Checkpoint)
	require.DirExists(t, s.Checkpoint)

	// A studio that would start afresh over it refuses, before opening a window.
	again := startChild(t, Options{Train: cfg, Device: "cpu", Title: title + " again"})
	again.waitFor(`^studio: train: .* holds checkpoints of an earlier run`, 60*time.Second)
	require.Error(t, <-again.exitErr())

	// Resume it for a few more steps.
	cfg.Resume, cfg.Steps = true, s.Step+3
	m, err := lathe.OpenFor(cfg, "cpu")
	require.NoError(t, err)
	defer m.Close()
	var steps []int
	res, err := m.Train(context.Background(), cfg, func(p lathe.Progress) { steps = append(steps, p.Step) })
	require.NoError(t, err)
	require.Equal(t, s.Step, res.ResumedFrom)
	require.Equal(t, []int{s.Step + 1, s.Step + 2, s.Step + 3}, steps)
	require.FileExists(t, filepath.Join(res.Adapter, "adapter_model.safetensors"))
}
