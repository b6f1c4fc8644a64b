package lathe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/lathe-ml/lathe/serve"
	"github.com/lathe-ml/lathe/train"
)

// TrainConfig is one fine-tuning run: the settings of `lathe train` (its JSON config file has the
// same fields). Data and Out are required; Model defaults to the opened model's folder.
type TrainConfig = train.Config

// DefaultTrainConfig holds the defaults of `lathe train`.
func DefaultTrainConfig() TrainConfig { return train.DefaultConfig() }

// TrainResult is what a run did: the losses, the adapter's folder (Out), speed and memory.
type TrainResult = train.Result

// Progress is the event a training run sends after each optimizer step.
type Progress struct {
	// Step is the step just taken, of Steps.
	Step, Steps int
	// Loss is the step's mean training loss (NaN for a skipped step).
	Loss float64
	// LR is the learning rate the step used.
	LR float64
	// TokensPerS is the training speed since the run (or its resumption) began.
	TokensPerS float64
	// Elapsed is the training time so far, resumed runs' included; ETA estimates what is left
	// from this run's pace.
	Elapsed, ETA time.Duration
	// Skipped says the step's loss or gradient was not finite and the weights were left alone.
	Skipped bool
}

// Trainer is a fine-tuning run prepared on an open model: data loaded, adapter made (or resumed
// from cfg.Out's latest checkpoint with cfg.Resume) and the training step compiled.
type Trainer struct {
	lm *Model
	tr *train.Trainer
	// ProgressBar, if set, receives a text progress bar while Run runs (the command line's).
	ProgressBar io.Writer

	run sync.Mutex // held while Run runs
	// steps is held by Run except while it calls onProgress (the adapter between steps), and
	// by Sample.
	steps  sync.Mutex
	mu     sync.Mutex
	cancel context.CancelFunc
	closed bool
	stop   chan struct{} // closed by Close
}

// OpenFor checks cfg without loading anything (its settings, and its sequence length against
// the model's context), then opens cfg.Model on device as cfg.Method needs it: for "qlora" and
// "qdora", in NF4 with double quantization (the QLoRA recipe) in blocks of cfg.Blocksize.
func OpenFor(cfg TrainConfig, device string) (*Model, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	o := Options{Device: device}
	if cfg.Method == "qlora" || cfg.Method == "qdora" {
		o.Quantize, o.DoubleQuant, o.Blocksize = "nf4", true, cfg.Blocksize
	}
	return Open(cfg.Model, o)
}

// NewTrainer prepares a run of cfg on the model (cfg.Model empty, or the model's folder); the
// trainer shares the model's weights (a "qlora" run needs the model opened with Quantize "nf4";
// a "lora" run on a 4-bit model is QLoRA). Close it when done; Model.Close closes it too.
func (lm *Model) NewTrainer(cfg TrainConfig) (*Trainer, error) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	if lm.closed {
		return nil, ErrClosed
	}
	tr, err := train.NewWithModel(cfg, lm.m)
	if err != nil {
		return nil, err
	}
	t := &Trainer{lm: lm, tr: tr, stop: make(chan struct{})}
	lm.trainers[t] = true
	return t, nil
}

// Train prepares and runs cfg (NewTrainer, Run, Close).
func (lm *Model) Train(ctx context.Context, cfg TrainConfig, onProgress func(Progress)) (TrainResult, error) {
	t, err := lm.NewTrainer(cfg)
	if err != nil {
		return TrainResult{}, err
	}
	res, err := t.Run(ctx, onProgress)
	return res, errors.Join(err, t.Close())
}

// Params is the number of trainable parameters.
func (t *Trainer) Params() int64 { return t.tr.Adapter.NumParams() }

// DeviceBytes is the device memory training takes: the base weights and the compiled step's
// peak (activations, gradients), the figure the command line's progress bar shows.
func (t *Trainer) DeviceBytes() int64 {
	return t.lm.m.WeightBytes() + t.tr.StepProgram().PeakBytes()
}

// Config is the run's configuration.
func (t *Trainer) Config() TrainConfig { return t.tr.Cfg }

// Run trains to the configured steps and writes into cfg.Out what `lathe train` writes: the
// adapter in PEFT's format, metrics.jsonl, loss.png and, with SaveEvery, checkpoint-N folders.
// onProgress (nil: none) is called after each step, on Run's goroutine. Cancelling ctx (or
// closing the trainer or the model) stops the run after the step under way and, with SaveEvery
// set, writes a checkpoint that cfg.Resume continues from; Run then returns ctx's error.
func (t *Trainer) Run(ctx context.Context, onProgress func(Progress)) (TrainResult, error) {
	t.run.Lock()
	defer t.run.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return TrainResult{}, fmt.Errorf("lathe: train: the trainer is closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.cancel = cancel
	t.mu.Unlock()

	steps := t.tr.Cfg.Steps
	start, first := time.Now(), -1
	t.tr.OnStep = func(m train.StepMetrics) {
		if onProgress == nil {
			return
		}
		if first < 0 {
			first = m.Step - 1
		}
		p := Progress{Step: m.Step, Steps: steps, Loss: m.Loss, LR: m.LR, TokensPerS: m.TokensPerS,
			Elapsed: time.Duration(m.Elapsed * float64(time.Second)), Skipped: m.Skipped}
		if done := m.Step - first; done > 0 {
			p.ETA = time.Since(start) / time.Duration(done) * time.Duration(steps-m.Step)
		}
		t.steps.Unlock()
		defer t.steps.Lock()
		onProgress(p)
	}
	defer func() { t.tr.OnStep = nil }()
	t.steps.Lock()
	defer t.steps.Unlock()
	return t.tr.Run(ctx, t.ProgressBar)
}

// TrainJob is a run started by Start: its progress events on a channel.
type TrainJob struct {
	events chan Progress
	done   chan struct{}
	res    TrainResult
	err    error
}

// Start runs the trainer on a new goroutine. The job's Events must be read until they are
// closed (the run waits for a reader that falls 16 events behind, unless ctx is cancelled or
// the trainer closed); then Wait gives the result.
func (t *Trainer) Start(ctx context.Context) *TrainJob {
	j := &TrainJob{events: make(chan Progress, 16), done: make(chan struct{})}
	go func() {
		defer close(j.done)
		defer close(j.events)
		j.res, j.err = t.Run(ctx, func(p Progress) {
			select { // delivered while there is room, even once stopping
			case j.events <- p:
				return
			default:
			}
			select {
			case j.events <- p:
			case <-ctx.Done():
			case <-t.stop:
			}
		})
	}()
	return j
}

// Events delivers the run's progress, one event a step; it is closed when the run ends.
func (j *TrainJob) Events() <-chan Progress { return j.events }

// Wait waits for the run to end and returns what Run returned.
func (j *TrainJob) Wait() (TrainResult, error) {
	<-j.done
	return j.res, j.err
}

// Close stops a running Run (which writes its checkpoint, see Run), waits for it, and frees the
// trainer's adapter, optimizer and compiled steps; the model stays open.
func (t *Trainer) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.stop)
	if t.cancel != nil {
		t.cancel()
	}
	t.mu.Unlock()
	t.run.Lock() // wait for Run, and for Sample
	defer t.run.Unlock()
	t.steps.Lock()
	defer t.steps.Unlock()
	t.tr.Close()
	t.lm.mu.Lock()
	delete(t.lm.trainers, t)
	t.lm.mu.Unlock()
	return nil
}

// Sample generates with the adapter as training has made it so far (r.Adapter is not read), to
// show how training goes. While a Run runs, it waits for the step under way to end (from Run's
// progress callback it runs at once) and holds the next step back until it is done.
func (t *Trainer) Sample(ctx context.Context, r Request, onText func(string) error) (Result, error) {
	t.steps.Lock()
	defer t.steps.Unlock()
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return Result{}, fmt.Errorf("lathe: sample: the trainer is closed")
	}
	lm := t.lm
	if lm.tok == nil {
		return Result{}, fmt.Errorf("lathe: sample: %w", lm.tokErr)
	}
	req, err := r.serveRequest()
	if err != nil {
		return Result{}, fmt.Errorf("lathe: sample: %w", err)
	}
	req.Adapter = t.tr.Adapter
	// A generator of its own: its cache copies the adapter as it is now and keeps no keys and
	// values computed with older weights.
	g := &serve.Generator{Model: lm.m, Tok: lm.tok, Slots: 1, Context: lm.opts.Context, NoPrefixReuse: true}
	defer g.Close()
	return g.Generate(ctx, req, onText)
}
