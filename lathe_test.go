package lathe_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// fixture is a tiny generated Llama and a dataset of facts, made once for the package's tests.
var fixture struct {
	once             sync.Once
	dir, model, data string
	err              error
}

func files(t *testing.T) (modelDir, data string) {
	t.Helper()
	fixture.once.Do(func() {
		if fixture.dir, fixture.err = os.MkdirTemp("", "lathe-test"); fixture.err != nil {
			return
		}
		fixture.model, fixture.data = filepath.Join(fixture.dir, "model"), filepath.Join(fixture.dir, "facts.jsonl")
		if _, fixture.err = synth.Write(fixture.model, synth.Options{Preset: synth.Presets["tiny"], Seed: 3}); fixture.err != nil {
			return
		}
		fixture.err = synth.WriteDataset(fixture.data, synth.Facts, 4, 200)
	})
	require.NoError(t, fixture.err)
	return fixture.model, fixture.data
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

func open(t *testing.T, o lathe.Options) *lathe.Model {
	t.Helper()
	dir, _ := files(t)
	m, err := lathe.Open(dir, o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// config is a short LoRA run into a fresh folder, with dropout so that resuming must restore
// its random stream too.
func config(t *testing.T, steps int) lathe.TrainConfig {
	_, data := files(t)
	cfg := lathe.DefaultTrainConfig()
	cfg.Data, cfg.Out = data, filepath.Join(t.TempDir(), "out")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.LR, cfg.EvalFraction = steps, 2, 32, 2, 1e-2, 0
	return cfg
}

// weights reads an adapter folder's tensors.
func weights(t *testing.T, m *lathe.Model, dir string) map[string][]float32 {
	t.Helper()
	im := m.Internal()
	a, err := peft.Load(dir, im.Cfg, im.Backend)
	require.NoError(t, err)
	defer a.Release()
	out := map[string][]float32{}
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		out[p.Key] = v
	}
	return out
}

// Cancelling a run stops it after the step under way and leaves a checkpoint there, which a
// resumed run continues from to the weights of an uninterrupted run.
func TestCancelCheckpointsAndResumeEndsWhereAStraightRunDoes(t *testing.T) {
	m := open(t, lathe.Options{Device: "cpu"})
	straight := config(t, 10)
	want, err := m.Train(context.Background(), straight, nil)
	require.NoError(t, err)

	cfg := config(t, 10)
	cfg.SaveEvery = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var steps []int
	_, err = m.Train(ctx, cfg, func(p lathe.Progress) {
		steps = append(steps, p.Step)
		if p.Step == 6 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []int{1, 2, 3, 4, 5, 6}, steps)
	cks, err := train.ListCheckpoints(cfg.Out)
	require.NoError(t, err)
	require.Equal(t, []string{train.CheckpointDir(cfg.Out, 4), train.CheckpointDir(cfg.Out, 6)}, cks)

	cfg.Resume = true
	steps = nil
	got, err := m.Train(context.Background(), cfg, func(p lathe.Progress) { steps = append(steps, p.Step) })
	require.NoError(t, err)
	require.Equal(t, 6, got.ResumedFrom)
	require.Equal(t, []int{7, 8, 9, 10}, steps)
	require.Equal(t, want.LossEnd, got.LossEnd)
	require.Equal(t, weights(t, m, want.Adapter), weights(t, m, got.Adapter))
}

// Start delivers one event a step on a channel; closing the model mid-run stops the run, which
// leaves a checkpoint that a model opened afresh resumes to the end.
func TestStartEventsAndCloseMidTraining(t *testing.T) {
	dir, _ := files(t)
	m, err := lathe.Open(dir, lathe.Options{Device: "cpu"})
	require.NoError(t, err)
	cfg := config(t, 40)
	cfg.SaveEvery = 100 // no periodic checkpoint before the end: only the one Close leaves
	tr, err := m.NewTrainer(cfg)
	require.NoError(t, err)
	require.Positive(t, tr.Params())
	require.Greater(t, tr.DeviceBytes(), m.WeightBytes())
	job := tr.Start(context.Background())
	var last lathe.Progress
	for p := range job.Events() {
		require.Equal(t, last.Step+1, p.Step, "one event a step, in order")
		require.Equal(t, 40, p.Steps)
		require.Positive(t, p.TokensPerS)
		require.False(t, p.Skipped)
		require.GreaterOrEqual(t, p.ETA, int64(0))
		require.GreaterOrEqual(t, p.Elapsed, last.Elapsed)
		last = p
		if p.Step == 3 {
			require.NoError(t, m.Close()) // as an app's window closing would
		}
	}
	_, err = job.Wait()
	require.ErrorIs(t, err, context.Canceled)
	require.GreaterOrEqual(t, last.Step, 3)
	require.Less(t, last.Step, 40)
	cks, err := train.ListCheckpoints(cfg.Out)
	require.NoError(t, err)
	require.Equal(t, []string{train.CheckpointDir(cfg.Out, last.Step)}, cks)
	_, err = m.NewTrainer(cfg)
	require.ErrorIs(t, err, lathe.ErrClosed)
	_, err = m.Generate(context.Background(), lathe.Request{Prompt: "x"}, nil)
	require.ErrorIs(t, err, lathe.ErrClosed)

	m2 := open(t, lathe.Options{Device: "cpu"})
	cfg.Resume = true
	var n int
	var end lathe.Progress
	res, err := m2.Train(context.Background(), cfg, func(p lathe.Progress) { n, end = n+1, p })
	require.NoError(t, err)
	require.Equal(t, last.Step, res.ResumedFrom)
	require.Equal(t, 40-last.Step, n)
	require.Equal(t, 40, end.Step)
	require.Zero(t, end.ETA)
	require.Less(t, res.LossEnd, res.LossStart)
}

// trained is one LoRA adapter trained on the facts, for the generation tests.
var trained struct {
	once sync.Once
	dir  string
	err  error
}

func adapter(t *testing.T, m *lathe.Model) string {
	trained.once.Do(func() {
		cfg := config(t, 60)
		cfg.Out = filepath.Join(fixture.dir, "adapter")
		_, trained.err = m.Train(context.Background(), cfg, nil)
		trained.dir = cfg.Out
	})
	require.NoError(t, trained.err)
	return trained.dir
}

func generate(t *testing.T, m *lathe.Model, adapter string) string {
	t.Helper()
	s := lathe.DefaultSampling()
	s.MaxTokens = 12
	res, err := m.Generate(context.Background(), lathe.Request{Prompt: "What does the dog say?", Adapter: adapter, Sampling: &s}, nil)
	require.NoError(t, err)
	require.NotEmpty(t, res.Text)
	return res.Text
}

// Stream gives the pieces of Generate's text; breaking out of it stops the generation.
func TestStreamIsGenerate(t *testing.T) {
	m := open(t, lathe.Options{Device: "cpu", Quantize: "nf4"})
	require.NoError(t, m.LoadAdapter("facts", adapter(t, m)))
	want := generate(t, m, "facts")
	s := lathe.DefaultSampling()
	s.MaxTokens = 12
	var pieces []string
	for piece, err := range m.Stream(context.Background(), lathe.Request{Prompt: "What does the dog say?", Adapter: "facts", Sampling: &s}) {
		require.NoError(t, err)
		pieces = append(pieces, piece)
	}
	require.Greater(t, len(pieces), 1, "streamed in pieces")
	require.Equal(t, want, strings.Join(pieces, ""))

	n := 0
	for range m.Stream(context.Background(), lathe.Request{Prompt: "What does the dog say?", Adapter: "facts", Sampling: &s}) {
		n++
		break
	}
	require.Equal(t, 1, n)
	require.Equal(t, want, generate(t, m, "facts"), "the model serves on after a stream was left")

	bad := lathe.DefaultSampling()
	bad.TopP = 2
	for _, err := range m.Stream(context.Background(), lathe.Request{Sampling: &bad}) {
		require.ErrorContains(t, err, "top_p 2 is not in (0, 1]")
	}
}

// Adapters load, combine, save and unload by name; the base model is the empty name.
func TestAdaptersLoadCombineUnload(t *testing.T) {
	m := open(t, lathe.Options{Device: "cpu"})
	dir := adapter(t, m)
	base := generate(t, m, "")
	require.NoError(t, m.LoadAdapter("facts", dir))
	tuned := generate(t, m, "facts")
	require.NotEqual(t, base, tuned, "the adapter changes the text")

	// Half and half of one adapter is that adapter: the combination is exact.
	require.NoError(t, m.CombineAdapters("halves", lathe.Weighted{Dir: dir, Weight: 0.5}, lathe.Weighted{Dir: dir, Weight: 0.5}))
	require.Equal(t, tuned, generate(t, m, "halves"))
	saved := filepath.Join(t.TempDir(), "halves")
	require.NoError(t, m.SaveAdapter("halves", saved))
	require.NoError(t, m.LoadAdapter("saved", saved))
	require.Equal(t, tuned, generate(t, m, "saved"))
	require.Equal(t, []string{"facts", "halves", "saved"}, m.Adapters())

	require.True(t, m.UnloadAdapter("halves"))
	require.False(t, m.UnloadAdapter("halves"))
	_, err := m.Generate(context.Background(), lathe.Request{Prompt: "x", Adapter: "halves"}, nil)
	require.ErrorContains(t, err, `no adapter named "halves" is loaded`)
	require.ErrorContains(t, m.SaveAdapter("halves", saved), `no adapter named "halves"`)
	require.Equal(t, []string{"facts", "saved"}, m.Adapters())
	require.ErrorContains(t, m.LoadAdapter("nothing", filepath.Join(t.TempDir(), "missing")), "missing")
}

// Bad input is an error with context, never a panic.
func TestErrors(t *testing.T) {
	dir, _ := files(t)
	_, err := lathe.Open(dir, lathe.Options{Device: "tpu"})
	require.ErrorContains(t, err, `unknown backend "tpu"`)
	_, err = lathe.Open(filepath.Join(t.TempDir(), "none"), lathe.Options{Device: "cpu"})
	require.Error(t, err)

	m := open(t, lathe.Options{Device: "cpu"})
	cfg := config(t, 5)
	cfg.Method = "qlora"
	_, err = m.NewTrainer(cfg)
	require.ErrorContains(t, err, "qlora needs the model loaded in 4 bits")
	cfg.Method, cfg.Data = "lora", ""
	_, err = m.Train(context.Background(), cfg, nil)
	require.ErrorContains(t, err, "data and out are required")
	require.NotEmpty(t, lathe.Devices())
	require.True(t, strings.HasPrefix(m.Device(), "cpu:"))
}

// The API on a WebGPU device (lavapipe in CI): training lowers the loss, the adapter generates
// the text it generates on the CPU, and Close frees the device.
func TestWebGPU(t *testing.T) {
	testdevice.WebGPU(t).Close() // skips, or fails with LATHE_REQUIRE_GPU=1, without an adapter
	cpu := open(t, lathe.Options{Device: "cpu"})
	dir := adapter(t, cpu)
	require.NoError(t, cpu.LoadAdapter("facts", dir))

	m := open(t, lathe.Options{Device: "webgpu"})
	require.True(t, strings.HasPrefix(m.Device(), "webgpu:"), m.Device())
	res, err := m.Train(context.Background(), config(t, 20), nil)
	require.NoError(t, err)
	require.Less(t, res.LossEnd, 0.9*res.LossStart)
	require.NoError(t, m.LoadAdapter("facts", dir))
	require.Equal(t, generate(t, cpu, "facts"), generate(t, m, "facts"))
	require.NoError(t, m.Close())
	require.True(t, errors.Is(m.LoadAdapter("x", dir), lathe.ErrClosed))
}

// Sample generates with the adapter as trained so far: from the progress callback, from another
// goroutine during the run, and at the end the text of the saved adapter.
func TestSampleIsTheAdapterSoFar(t *testing.T) {
	m := open(t, lathe.Options{Device: "cpu"})
	tr, err := m.NewTrainer(config(t, 40))
	require.NoError(t, err)
	defer tr.Close()
	s := lathe.DefaultSampling()
	s.MaxTokens = 12
	req := lathe.Request{Prompt: "What does the dog say?", Sampling: &s, Adapter: "ignored"}
	samples := map[int]string{}
	other := make(chan error, 1)
	res, err := tr.Run(context.Background(), func(p lathe.Progress) {
		switch p.Step {
		case 1, 40:
			r, err := tr.Sample(context.Background(), req, nil)
			require.NoError(t, err)
			samples[p.Step] = r.Text
		case 5:
			go func() {
				r, err := tr.Sample(context.Background(), req, nil)
				if err == nil && r.Text == "" {
					err = errors.New("no text")
				}
				other <- err
			}()
		}
	})
	require.NoError(t, err)
	require.NoError(t, <-other)
	require.NotEqual(t, samples[1], samples[40], "the samples follow training")
	require.NoError(t, m.LoadAdapter("done", res.Adapter))
	require.Equal(t, generate(t, m, "done"), samples[40])
	r, err := tr.Sample(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, samples[40], r.Text, "after the run")
	require.NoError(t, tr.Close())
	_, err = tr.Sample(context.Background(), req, nil)
	require.ErrorContains(t, err, "the trainer is closed")
}

// Evaluate scores the base model and an adapter on a dataset: the adapter trained on it scores
// better.
func TestEvaluate(t *testing.T) {
	m := open(t, lathe.Options{Device: "cpu"})
	_, data := files(t)
	require.NoError(t, m.LoadAdapter("facts", adapter(t, m)))
	base, err := m.Evaluate(data, "", 0)
	require.NoError(t, err)
	tuned, err := m.Evaluate(data, "facts", 64)
	require.NoError(t, err)
	require.Positive(t, base.Tokens)
	require.Equal(t, base.Tokens, tuned.Tokens, "the same tokens, whatever the row length")
	require.Less(t, tuned.Loss, 0.5*base.Loss)
	require.InDelta(t, math.Exp(tuned.Loss), tuned.Perplexity, 1e-9*tuned.Perplexity)
	_, err = m.Evaluate(data, "none", 0)
	require.ErrorContains(t, err, `no adapter named "none"`)
	_, err = m.Evaluate(data, "", 513)
	require.ErrorContains(t, err, "seq 513 is above the model's context of 512 tokens")
}

// OpenFor checks a run's settings before loading anything and opens the model as the method
// needs it; a trainer refuses a config that names another model.
func TestOpenFor(t *testing.T) {
	dir, _ := files(t)
	cfg := config(t, 5)
	cfg.Model, cfg.Seq = dir, 100000
	_, err := lathe.OpenFor(cfg, "cpu")
	require.ErrorContains(t, err, "seq 100000 is above the model's context")
	cfg.Seq, cfg.Method = 32, "qlora"
	m, err := lathe.OpenFor(cfg, "cpu")
	require.NoError(t, err)
	defer m.Close()
	require.NotEmpty(t, m.Internal().Quant, "qlora: the base in 4 bits")
	res, err := m.Train(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.Equal(t, "qlora", res.Method)

	other := filepath.Join(t.TempDir(), "other")
	_, err = synth.Write(other, synth.Options{Preset: synth.Presets["tiny"], Seed: 9})
	require.NoError(t, err)
	cfg.Model = other
	_, err = m.NewTrainer(cfg)
	require.ErrorContains(t, err, "is not the loaded model's folder")
}
