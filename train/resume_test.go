package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model/synth"
)

// savedRun trains 6 steps with checkpoints at 2 and 4 and returns its config.
func savedRun(t *testing.T) Config {
	cfg := fixture(t, "lora")
	cfg.Steps, cfg.SaveEvery, cfg.KeepCkpts, cfg.Batch, cfg.Seq = 6, 2, 5, 2, 32
	train(t, cfg, cpu.New())
	cks, err := ListCheckpoints(cfg.Out)
	require.NoError(t, err)
	require.Len(t, cks, 2)
	return cfg
}

func TestFreshRunIntoCheckpointsRefused(t *testing.T) {
	cfg := savedRun(t)
	_, err := New(cfg, cpu.New())
	require.ErrorContains(t, err, "holds checkpoints of an earlier run (checkpoint-4): pass --resume to continue it or --overwrite")

	// --overwrite starts afresh: the old checkpoints are gone, the new run saves its own.
	cfg.Overwrite, cfg.Steps, cfg.SaveEvery = true, 3, 2
	res := train(t, cfg, cpu.New())
	require.Equal(t, 0, res.ResumedFrom)
	cks, err := ListCheckpoints(cfg.Out)
	require.NoError(t, err)
	require.Equal(t, []string{CheckpointDir(cfg.Out, 2)}, cks)
}

func TestResumeRefusesStructuralChanges(t *testing.T) {
	cfg := savedRun(t)
	cfg.Resume, cfg.Steps = true, 8
	other := filepath.Join(t.TempDir(), "other")
	_, err := synth.Write(other, synth.Options{Preset: synth.Presets["tiny"], Seed: 4})
	require.NoError(t, err)
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Method = "ia3" }, "method (checkpoint LORA adapter, now ia3)"},
		{func(c *Config) { c.Method = "dora" }, "method (checkpoint LORA adapter, now dora)"},
		{func(c *Config) { c.Rank = 4 }, "rank (checkpoint 8, now 4)"},
		{func(c *Config) { c.Targets = []string{"q_proj", "v_proj"} }, `targets (checkpoint ["all-linear"], now ["q_proj","v_proj"])`},
		{func(c *Config) { c.Model = other }, "model (checkpoint"},
		{func(c *Config) { c.Rank, c.Alpha = 4, 3 }, "alpha (checkpoint 16, now 3)"},
		{func(c *Config) { c.Optim = OptimAdamW8bit }, `optim (checkpoint "adamw", now "adamw8bit")`},
	} {
		c2 := cfg
		c.edit(&c2)
		_, err := New(c2, cpu.New())
		require.ErrorContains(t, err, "checkpoint-4 was trained with other settings")
		require.ErrorContains(t, err, c.want)
	}
}

func TestResumeWarnsAndRecordsChangedHyperparameters(t *testing.T) {
	cfg := savedRun(t)
	cfg.Resume, cfg.Steps, cfg.LR = true, 8, 5e-3
	res := train(t, cfg, cpu.New())
	require.Equal(t, 4, res.ResumedFrom)
	require.Equal(t, []string{"resumed with lr 0.005 (the checkpoint's run had 0.01)", "resumed with steps 8 (the checkpoint's run had 6)"}, res.Warnings)
	log, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.jsonl"))
	require.NoError(t, err)
	require.Contains(t, string(log), `{"step":4,"event":"resume","checkpoint":"checkpoint-4","changed":{"lr":[0.01,0.005],"steps":[6,8]}}`)
	steps, _, err := ReadMetrics(filepath.Join(cfg.Out, "metrics.jsonl"))
	require.NoError(t, err)
	require.Len(t, steps, 8, "the event line is not a step")
}

func TestResumeFallsBackFromACorruptCheckpoint(t *testing.T) {
	cfg := savedRun(t)
	// The newest checkpoint's adapter is truncated, as a crash mid-copy would leave it.
	p := filepath.Join(CheckpointDir(cfg.Out, 4), "adapter_model.safetensors")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw[:len(raw)/2], 0o644))
	cfg.Resume = true
	res := train(t, cfg, cpu.New())
	require.Equal(t, 2, res.ResumedFrom)
	require.Len(t, res.Warnings, 1)
	require.True(t, strings.HasPrefix(res.Warnings[0], "checkpoint-4 is unreadable ("), res.Warnings[0])
	require.Contains(t, res.Warnings[0], "resumed from checkpoint-2 instead")

	// With every checkpoint unreadable, resuming is an error.
	for _, s := range []int{2, 4} {
		require.NoError(t, os.Remove(filepath.Join(CheckpointDir(cfg.Out, s), TrainerStateFile)))
	}
	_, err = New(cfg, cpu.New())
	require.ErrorContains(t, err, "no checkpoint in")
}

func TestDataWithoutTrainableTokenRefused(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Data = filepath.Join(t.TempDir(), "masked.jsonl")
	require.NoError(t, os.WriteFile(cfg.Data, []byte(strings.Repeat(`{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}`+"\n", 10)), 0o644))
	_, err := New(cfg, cpu.New())
	require.ErrorContains(t, err, "masked.jsonl has no token to train on")
}
