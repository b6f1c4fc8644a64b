package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// StepMetrics is one line of the metrics log for a training step. Non-finite values are written
// as null (JSON has no NaN) and read back as NaN.
type StepMetrics struct {
	Step       int
	Loss       float64
	LR         float64
	GradNorm   float64
	Tokens     int
	TokensPerS float64
	// Elapsed is the training time so far in seconds.
	Elapsed float64
	// Skipped says the optimizer skipped the step (non-finite gradient norm).
	Skipped bool
	// CommSeconds is the time the step spent in its all-reduce (data-parallel runs only).
	CommSeconds float64
}

// EvalMetrics is one line of the metrics log for an evaluation.
type EvalMetrics struct {
	Step int
	Loss float64
	// Perplexity is exp(Loss).
	Perplexity float64
}

// jsonFloat is a float64 that JSON-encodes a non-finite value as null (JSON has no NaN) and
// decodes null as NaN.
type jsonFloat float64

// MarshalJSON writes the number, or null when it is not finite.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	x := float64(f)
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, x, 'g', -1, 64), nil
}

// UnmarshalJSON reads a number, or null as NaN.
func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = jsonFloat(math.NaN())
		return nil
	}
	var x float64
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*f = jsonFloat(x)
	return nil
}

type stepLine struct {
	Step       int       `json:"step"`
	Loss       jsonFloat `json:"loss"`
	LR         jsonFloat `json:"lr"`
	GradNorm   jsonFloat `json:"grad_norm"`
	Tokens     int       `json:"tokens"`
	TokensPerS jsonFloat `json:"tokens_per_s"`
	Elapsed    jsonFloat `json:"elapsed"`
	Skipped    bool      `json:"skipped"`
	CommS      float64   `json:"comm_s,omitempty"`
}

type evalLine struct {
	Step       int       `json:"step"`
	EvalLoss   jsonFloat `json:"eval_loss"`
	Perplexity jsonFloat `json:"eval_perplexity"`
}

// lineKind tells eval lines (with eval_loss) and event lines (with event) from step lines.
type lineKind struct {
	Step     int             `json:"step"`
	EvalLoss json.RawMessage `json:"eval_loss"`
	Event    string          `json:"event"`
}

// MetricsLog appends one JSON object per line to a file: a training step's metrics or an
// evaluation's loss and perplexity.
type MetricsLog struct {
	f *os.File
}

// OpenMetricsLog opens the metrics log at path. A fresh run (resumeStep 0) starts an empty file;
// a run resumed from the checkpoint at resumeStep keeps the lines up to that step and drops the
// later ones, which the interrupted run wrote after its last checkpoint and the resumed run will
// write again.
func OpenMetricsLog(path string, resumeStep int) (*MetricsLog, error) {
	if resumeStep > 0 {
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open metrics log: %w", err)
		}
		var kept bytes.Buffer
		for i, ln := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(ln)) == 0 {
				continue
			}
			var m lineKind
			if err := json.Unmarshal(ln, &m); err != nil {
				// A torn last line from a crash is dropped; anything else is an error.
				if i == bytes.Count(data, []byte("\n")) {
					continue
				}
				return nil, fmt.Errorf("open metrics log %s:%d: %w", path, i+1, err)
			}
			if m.Step <= resumeStep {
				kept.Write(ln)
				kept.WriteByte('\n')
			}
		}
		if err := atomicfile.WriteFile(path, kept.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("open metrics log: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open metrics log: %w", err)
		}
		return &MetricsLog{f: f}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("open metrics log: %w", err)
	}
	return &MetricsLog{f: f}, nil
}

func (l *MetricsLog) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("metrics log: %w", err)
	}
	// One write per line, so a crash tears at most the last line.
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("metrics log: %w", err)
	}
	return nil
}

// LogStep appends a training step's metrics.
func (l *MetricsLog) LogStep(m StepMetrics) error {
	return l.write(stepLine{Step: m.Step, Loss: jsonFloat(m.Loss), LR: jsonFloat(m.LR), GradNorm: jsonFloat(m.GradNorm),
		Tokens: m.Tokens, TokensPerS: jsonFloat(m.TokensPerS), Elapsed: jsonFloat(m.Elapsed), Skipped: m.Skipped, CommS: m.CommSeconds})
}

// LogEval appends an evaluation's loss and perplexity.
func (l *MetricsLog) LogEval(m EvalMetrics) error {
	return l.write(evalLine{Step: m.Step, EvalLoss: jsonFloat(m.Loss), Perplexity: jsonFloat(m.Perplexity)})
}

// LogResume appends what resuming found: the checkpoint, skipped ones, changed settings.
func (l *MetricsLog) LogResume(e ResumeEvent) error { return l.write(e) }

// Close syncs and closes the log.
func (l *MetricsLog) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := errors.Join(l.f.Sync(), l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("metrics log: %w", err)
	}
	return nil
}

// ReadMetrics reads a metrics log back, train and eval lines apart. A torn last line is ignored.
func ReadMetrics(path string) ([]StepMetrics, []EvalMetrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read metrics: %w", err)
	}
	defer f.Close()
	var steps []StepMetrics
	var evals []EvalMetrics
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var pending error
	for n := 1; sc.Scan(); n++ {
		if pending != nil {
			return nil, nil, pending
		}
		ln := bytes.TrimSpace(sc.Bytes())
		if len(ln) == 0 {
			continue
		}
		var k lineKind
		if err := json.Unmarshal(ln, &k); err != nil {
			pending = fmt.Errorf("read metrics %s:%d: %w", path, n, err)
			continue
		}
		if k.Event != "" {
			continue // an event (a resume), not a measurement
		}
		if k.EvalLoss != nil {
			var e evalLine
			if err := json.Unmarshal(ln, &e); err != nil {
				return nil, nil, fmt.Errorf("read metrics %s:%d: %w", path, n, err)
			}
			evals = append(evals, EvalMetrics{Step: e.Step, Loss: float64(e.EvalLoss), Perplexity: float64(e.Perplexity)})
			continue
		}
		var m stepLine
		if err := json.Unmarshal(ln, &m); err != nil {
			return nil, nil, fmt.Errorf("read metrics %s:%d: %w", path, n, err)
		}
		steps = append(steps, StepMetrics{Step: m.Step, Loss: float64(m.Loss), LR: float64(m.LR), GradNorm: float64(m.GradNorm),
			Tokens: m.Tokens, TokensPerS: float64(m.TokensPerS), Elapsed: float64(m.Elapsed), Skipped: m.Skipped})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read metrics %s: %w", path, err)
	}
	return steps, evals, nil
}

// LossMeter averages a loss over tokens, for evaluation: each batch contributes its mean loss
// weighted by its number of target tokens, so the result is the mean over all tokens.
type LossMeter struct {
	sum    float64
	tokens int64
}

// Add records a batch whose mean loss over tokens target tokens is meanLoss.
func (m *LossMeter) Add(meanLoss float64, tokens int) {
	if tokens <= 0 {
		return
	}
	m.sum += meanLoss * float64(tokens)
	m.tokens += int64(tokens)
}

// Tokens is the number of target tokens recorded.
func (m *LossMeter) Tokens() int64 { return m.tokens }

// Mean is the token-weighted mean loss (NaN before any token).
func (m *LossMeter) Mean() float64 {
	if m.tokens == 0 {
		return math.NaN()
	}
	return m.sum / float64(m.tokens)
}

// Perplexity is exp(Mean()).
func (m *LossMeter) Perplexity() float64 { return Perplexity(m.Mean()) }

// Perplexity is exp(loss) for a mean cross-entropy loss in nats.
func Perplexity(loss float64) float64 { return math.Exp(loss) }

// ErrNoPlot is PlotLoss's error in the lite build (-tags lathe_lite), which draws no charts.
var ErrNoPlot = errors.New("this lathe is the lite build (-tags lathe_lite), which draws no charts")

// Progress reports training steps: step, loss, tokens/s, device memory and ETA. On a terminal
// it is a redrawn bar; written to a file or a pipe it is plain lines, one every tenth of the run
// or every 5 seconds, so that a log holds a readable line per report and no carriage returns.
// A nil or disabled Progress does nothing, so callers need not check.
type Progress struct {
	bar          io.Writer // terminal mode: where the bar is redrawn
	start, total int

	lines    io.Writer // line mode: where lines go
	every    int       // a line every this many steps
	last     time.Time // when the last line was written
	lastStep int
	begun    time.Time
}

// NewProgress returns a progress report writing to w for a run going from step start to total;
// it returns nil (a no-op) when disabled or w is nil.
func NewProgress(w io.Writer, start, total int, enabled bool) *Progress {
	if !enabled || w == nil {
		return nil
	}
	if !isTerminal(w) {
		now := time.Now()
		return &Progress{start: start, total: total, lines: w, every: max(1, (total-start)/10), last: now, lastStep: start, begun: now}
	}
	return newBar(w, start, total)
}

// newBar is the terminal's Progress: a bar redrawn in place on w.
func newBar(w io.Writer, start, total int) *Progress {
	now := time.Now()
	p := &Progress{bar: w, start: start, total: total, begun: now, last: now, lastStep: start}
	p.draw(start, fmt.Sprintf("step %d/%d", start, total), now)
	return p
}

// draw redraws the terminal bar: how much of this process's steps are done (so that a resumed
// run's ETA is not fooled by the steps done before it started), desc, the time elapsed and the
// time left.
func (p *Progress) draw(step int, desc string, now time.Time) {
	const width = 24
	n := max(1, p.total-p.start)
	done := min(max(0, step-p.start), n)
	filled := width * done / n
	bar := strings.Repeat("█", filled) + strings.Repeat(" ", width-filled)
	elapsed := now.Sub(p.begun)
	left := "?"
	if done > 0 {
		left = (time.Duration(float64(elapsed) / float64(done) * float64(n-done))).Round(time.Second).String()
	}
	// \r returns to the line's start and \x1b[K clears what a longer previous line left.
	fmt.Fprintf(p.bar, "\r%s %3d%% |%s| (%d/%d) [%s:%s]\x1b[K", desc, 100*done/n, bar, done, n,
		elapsed.Round(time.Second), left)
}

// isTerminal says whether w is a character device (a terminal), where a redrawn bar belongs.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update shows step (steps taken so far), the latest loss and throughput, and mem, the device
// memory as the caller words it ("" to leave it out).
func (p *Progress) Update(step int, loss, tokensPerS float64, mem string) {
	if p == nil {
		return
	}
	desc := fmt.Sprintf("step %d/%d loss %.4f %.0f tok/s", step, p.total, loss, tokensPerS)
	if mem != "" {
		desc += " mem " + mem
	}
	if p.lines != nil {
		now := time.Now()
		if step == p.total || (step-p.start)%p.every == 0 || now.Sub(p.last) >= 5*time.Second {
			if done := step - p.start; done > 0 && step < p.total {
				eta := time.Duration(float64(now.Sub(p.begun)) / float64(done) * float64(p.total-step))
				desc += " eta " + eta.Round(time.Second).String()
			}
			fmt.Fprintln(p.lines, desc)
			p.last, p.lastStep = now, step
		}
		return
	}
	// A redraw at most every tenth of a second: a fast run does not flood the terminal.
	if now := time.Now(); step == p.total || now.Sub(p.last) >= 100*time.Millisecond {
		p.draw(step, desc, now)
		p.last, p.lastStep = now, step
	}
}

// Finish completes the bar and ends its line.
func (p *Progress) Finish() error {
	if p == nil || p.lines != nil {
		return nil
	}
	_, err := fmt.Fprintln(p.bar)
	return err
}
