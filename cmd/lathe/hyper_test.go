package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/peft/hyper"
)

// lathe train --method hyper trains a hypernetwork on a tasks file; lathe hyper generate writes the
// LoRA it generates for a description, which eval, generate and merge take like any PEFT LoRA.
func TestHyperTrainGenerate(t *testing.T) {
	dir := t.TempDir()
	model, tasks, net, gen := filepath.Join(dir, "model"), filepath.Join(dir, "tasks"), filepath.Join(dir, "hyper"), filepath.Join(dir, "gen")
	_, _, err := run(t, "init-model", "--out", model)
	require.NoError(t, err)
	require.NoError(t, hyper.WriteFamilies(tasks, 1, 24, 6, "last"))
	_, res, err := run(t, "train", "--method", "hyper", "--model", model, "--tasks", filepath.Join(tasks, "tasks.jsonl"), "--out", net,
		"--steps", "14", "--batch", "2", "--seq", "32", "--lr", "3e-3", "--hyper-latent", "16", "--hyper-head-in", "32", "--hyper-head", "M",
		"--rank", "4", "--device", "cpu", "--quiet")
	require.NoError(t, err)
	require.Less(t, res["loss_end"].(float64), res["loss_start"].(float64))
	require.FileExists(t, filepath.Join(net, hyper.WeightsFile))
	_, g, err := run(t, "hyper", "generate", "--hyper", net, "--task", "say the last word of the list", "--out", gen, "--device", "cpu")
	require.NoError(t, err)
	require.Equal(t, gen, g["adapter"])
	_, base, err := run(t, "eval", "--model", model, "--data", filepath.Join(tasks, "last-eval.jsonl"), "--seq", "32", "--device", "cpu")
	require.NoError(t, err)
	_, with, err := run(t, "eval", "--model", model, "--adapter", gen, "--data", filepath.Join(tasks, "last-eval.jsonl"), "--seq", "32", "--device", "cpu")
	require.NoError(t, err)
	require.NotEqual(t, base["loss"], with["loss"], "the generated adapter changes the model")
	_, _, err = run(t, "generate", "--model", model, "--adapter", gen, "--prompt", "Input: cat dog\nOutput:", "--max-tokens", "4", "--device", "cpu")
	require.NoError(t, err)
	_, _, err = run(t, "merge", "--model", model, "--adapter", gen, "--out", filepath.Join(dir, "merged"))
	require.NoError(t, err)
	_, merged, err := run(t, "eval", "--model", filepath.Join(dir, "merged"), "--data", filepath.Join(tasks, "last-eval.jsonl"), "--seq", "32", "--device", "cpu")
	require.NoError(t, err)
	require.InDelta(t, with["loss"].(float64), merged["loss"].(float64), 1e-4)

	_, _, err = run(t, "train", "--method", "hyper", "--model", model, "--out", net, "--device", "cpu")
	require.ErrorContains(t, err, "--tasks")
	_, _, err = run(t, "train", "--method", "hyper", "--model", model, "--tasks", filepath.Join(tasks, "tasks.jsonl"), "--out", net, "--save-every", "5")
	require.ErrorContains(t, err, "no checkpoints")
	_, _, err = run(t, "hyper", "generate", "--hyper", filepath.Join(dir, "none"), "--task", "x", "--out", gen)
	require.Error(t, err)
}
