package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// merge over a 4-bit base writes bf16 (or NF4 with --requantize) and reports its peak memory.
func TestMergeOver4bitBaseCommand(t *testing.T) {
	root := t.TempDir()
	dir, q4 := filepath.Join(root, "m"), filepath.Join(root, "q4")
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 2})
	require.NoError(t, err)
	_, _, err = run(t, "quantize", "--type", "nf4", dir, q4)
	require.NoError(t, err)
	cfg, err := model.LoadConfig(q4)
	require.NoError(t, err)
	c := peft.LoRAConfig()
	c.TargetModules = peft.Names("q_proj", "v_proj")
	a, err := peft.New(c, cfg, cpu.New(), 3)
	require.NoError(t, err)
	ad := filepath.Join(root, "ad")
	require.NoError(t, a.Save(ad))
	a.Release()

	_, res, err := run(t, "merge", "--model", q4, "--adapter", ad, "--out", filepath.Join(root, "bf16"))
	require.NoError(t, err)
	require.Equal(t, "BF16", res["dtype"])
	require.Equal(t, float64(2*cfg.NumLayers), res["changed_tensors"])
	require.Positive(t, res["peak_heap_bytes"])
	require.Positive(t, res["peak_rss_bytes"])
	ck, err := checkpoint.Open(filepath.Join(root, "bf16"))
	require.NoError(t, err)
	w, _ := ck.Tensor("model.layers.0.mlp.up_proj.weight")
	require.Equal(t, "BF16", w.DType)
	ck.Close()

	_, res, err = run(t, "merge", "--model", q4, "--adapter", ad, "--out", filepath.Join(root, "nf4"), "--requantize", "nf4")
	require.NoError(t, err)
	require.Equal(t, "nf4", res["dtype"])
	_, _, err = run(t, "merge", "--model", dir, "--adapter", ad, "--out", filepath.Join(root, "x"), "--requantize", "nf4")
	require.ErrorContains(t, err, "needs a 4-bit")
}

// combine --method passes PEFT's combination types through (numbers are checked in peft).
func TestCombineMethodsCommand(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 2})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	ad := filepath.Join(root, "ad")
	c := peft.LoRAConfig()
	c.R, c.TargetModules = 4, peft.Names("q_proj", "v_proj")
	a, err := peft.New(c, cfg, cpu.New(), 3)
	require.NoError(t, err)
	require.NoError(t, a.Save(ad))
	a.Release()
	for method, r := range map[string]float64{"cat": 8, "linear": 4, "ties": 4, "dare_ties": 4, "svd": 4, "magnitude_prune": 4} {
		_, res, err := run(t, "combine", "--model", dir, "--adapter", ad+"=0.5", "--adapter", ad+"=0.8", "--method", method,
			"--density", "0.5", "--out", filepath.Join(root, method))
		require.NoError(t, err, method)
		require.Equal(t, r, res["r"], method)
		require.Equal(t, method, res["method"])
	}
	_, _, err = run(t, "combine", "--model", dir, "--adapter", ad+"=1", "--method", "mean", "--out", filepath.Join(root, "x"))
	require.ErrorContains(t, err, "mean")
}
