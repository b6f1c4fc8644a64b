package studio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sync"
	"time"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/train"
)

// session runs training for the window through the public API: Start makes a trainer (resuming
// the latest checkpoint after a stop), Pause holds the run between steps, Stop cancels it (the
// run writes a checkpoint). Its methods are called from the window's thread and return at once.
type session struct {
	m   *lathe.Model
	cfg lathe.TrainConfig
	o   Options
	v   *view
	log io.Writer

	mu      sync.Mutex
	tr      *lathe.Trainer
	cancel  context.CancelFunc
	done    chan struct{} // closed when the current run ends
	paused  bool
	resume  chan struct{} // closed when a pause ends
	started bool          // a run was started before: the next one resumes its checkpoint
	asking  bool          // a prompt is being answered
	sum     Summary
}

// start begins a run, or resumes a paused one. An error (the trainer could not be made) is
// also shown in the window.
func (s *session) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		s.paused = false
		close(s.resume)
		fmt.Fprintln(s.log, "studio: resumed")
		s.v.update(func(v *view) { v.phase, v.message = phaseRunning, "" })
		return nil
	}
	if s.running() {
		return nil
	}
	if s.tr != nil {
		s.tr.Close()
		s.tr = nil
	}
	cfg := s.cfg
	if s.started {
		cfg.Resume, cfg.Overwrite = true, false
	}
	s.started = true
	tr, err := s.m.NewTrainer(cfg)
	if err != nil {
		s.fail(err)
		return err
	}
	s.tr = tr
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	s.v.update(func(v *view) {
		v.phase, v.steps, v.message = phaseRunning, cfg.Steps, ""
		v.status = fmt.Sprintf("training %s (%d parameters), %.1f MiB on the device", cfg.Method, tr.Params(), mib(tr.DeviceBytes()))
	})
	go s.run(ctx, tr, s.done)
	return nil
}

// fail shows err and leaves the session idle.
func (s *session) fail(err error) {
	fmt.Fprintf(s.log, "studio: %v\n", err)
	s.sum.Error = err.Error()
	s.v.update(func(v *view) { v.phase, v.message = phaseIdle, "error: "+err.Error() })
}

// run trains on its own goroutine until the end, a stop or an error.
func (s *session) run(ctx context.Context, tr *lathe.Trainer, done chan struct{}) {
	defer close(done)
	res, err := tr.Run(ctx, func(p lathe.Progress) { s.progress(ctx, tr, p) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = false
	s.sum.Error = ""
	switch {
	case err == nil:
		s.sum.Finished, s.sum.Adapter, s.sum.LossStart, s.sum.LossEnd = true, res.Adapter, res.LossStart, res.LossEnd
		msg := fmt.Sprintf("done: loss %.3f → %.3f; adapter in %s", res.LossStart, res.LossEnd, res.Adapter)
		s.v.update(func(v *view) { v.phase, v.message = phaseDone, msg })
		fmt.Fprintln(s.log, "studio: "+msg)
	case errors.Is(err, context.Canceled):
		ck := lastCheckpoint(s.cfg.Out)
		s.sum.Checkpoint = ck
		msg := fmt.Sprintf("stopped at step %d", s.sum.Step)
		if ck != "" {
			msg += "; checkpoint " + ck + " (Start resumes it)"
		}
		s.v.update(func(v *view) { v.phase, v.message = phaseIdle, msg })
		fmt.Fprintln(s.log, "studio: "+msg)
	default:
		s.fail(err)
	}
}

// progress shows a step, draws a sample every SampleEvery steps and holds the run while paused.
func (s *session) progress(ctx context.Context, tr *lathe.Trainer, p lathe.Progress) {
	s.mu.Lock()
	s.sum.Step, s.sum.Steps = p.Step, p.Steps
	s.mu.Unlock()
	fmt.Fprintf(s.log, "step %d/%d loss %.4f %.0f tokens/s\n", p.Step, p.Steps, p.Loss, p.TokensPerS)
	s.v.update(func(v *view) {
		if p.Step != v.first+len(v.losses)+1 { // a run that does not continue the curve
			v.losses, v.first = nil, p.Step-1
		}
		v.losses = append(v.losses, p.Loss)
		v.status = fmt.Sprintf("step %d/%d   loss %.3f   %.0f tokens/s   %.1f MiB   ETA %v", p.Step, p.Steps, p.Loss,
			p.TokensPerS, mib(tr.DeviceBytes()), p.ETA.Round(100*time.Millisecond))
	})
	if s.o.SampleEvery > 0 && p.Step%s.o.SampleEvery == 0 && s.o.SamplePrompt != "" {
		r, err := tr.Sample(ctx, lathe.Request{Prompt: s.o.SamplePrompt, Sampling: s.sampling()}, nil)
		text := fmt.Sprintf("step %d: %q →%s", p.Step, s.o.SamplePrompt, r.Text)
		if err != nil {
			text = fmt.Sprintf("step %d: %v", p.Step, err)
		}
		s.v.update(func(v *view) { v.sample = text })
	}
	for {
		s.mu.Lock()
		paused, resume := s.paused, s.resume
		s.mu.Unlock()
		if !paused {
			return
		}
		select {
		case <-resume:
		case <-ctx.Done():
			return
		}
	}
}

// pause holds a running run after the step under way.
func (s *session) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused || !s.running() {
		return
	}
	s.paused, s.resume = true, make(chan struct{})
	fmt.Fprintf(s.log, "studio: paused after step %d\n", s.sum.Step)
	s.v.update(func(v *view) { v.phase, v.message = phasePaused, "paused: Start resumes, Stop saves a checkpoint" })
}

// stop cancels the run; it writes a checkpoint and ends.
func (s *session) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running() {
		return
	}
	if s.paused {
		s.paused = false
		close(s.resume)
	}
	s.cancel()
	s.v.update(func(v *view) { v.phase, v.message = phaseStopping, "stopping: writing a checkpoint" })
}

// running reports whether a run is under way; s.mu is held.
func (s *session) running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// ask answers a prompt with the adapter as training has made it (the base model before the
// first run), streaming the reply into the view. One prompt at a time.
func (s *session) ask(prompt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.asking || prompt == "" {
		return
	}
	s.asking = true
	tr := s.tr
	s.v.update(func(v *view) { v.reply = "…" })
	go func() {
		defer func() {
			s.mu.Lock()
			s.asking = false
			s.mu.Unlock()
		}()
		var reply []byte
		onText := func(piece string) error {
			reply = append(reply, piece...)
			text := string(reply)
			s.v.update(func(v *view) { v.reply = text })
			return nil
		}
		req := lathe.Request{Prompt: prompt, Sampling: s.sampling()}
		var err error
		if tr != nil {
			_, err = tr.Sample(context.Background(), req, onText)
		} else {
			_, err = s.m.Generate(context.Background(), req, onText)
		}
		if err != nil {
			s.v.update(func(v *view) { v.reply = "error: " + err.Error() })
			fmt.Fprintf(s.log, "studio: prompt %q: %v\n", prompt, err)
			return
		}
		fmt.Fprintf(s.log, "studio: prompt %q →%s\n", prompt, reply)
	}()
}

func (s *session) sampling() *lathe.Sampling {
	sp := lathe.DefaultSampling()
	sp.MaxTokens = s.o.SampleTokens
	return &sp
}

// close stops the run (which writes its checkpoint), waits for it and frees the trainer.
func (s *session) close() Summary {
	s.stop()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr != nil {
		s.tr.Close()
		s.tr = nil
	}
	return s.sum
}

// lastCheckpoint is the newest checkpoint folder in out, or "".
func lastCheckpoint(out string) string {
	cks, err := train.ListCheckpoints(out)
	if err != nil || len(cks) == 0 {
		return ""
	}
	return filepath.Clean(cks[len(cks)-1])
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// finite is x, or 0 when it is not finite (for JSON).
func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}
