package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/synth"
)

// The example trains on a generated tiny Llama, reports progress and answers with the adapter.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	model, data, out := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl"), filepath.Join(dir, "adapter")
	_, err := synth.Write(model, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: "F32"})
	require.NoError(t, err)
	require.NoError(t, synth.WriteDataset(data, synth.Facts, 1, 300))
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"--model", model, "--data", data, "--out", out, "--device", "cpu",
		"--prompt", "What does the cow say?"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	require.Contains(t, stderr.String(), "step 400/400  loss ")
	require.Contains(t, stdout.String(), "trained on cpu:")
	require.Contains(t, stdout.String(), "\n The cow says moo.\n")
	require.DirExists(t, filepath.Join(out, "checkpoint-350"))

	stdout.Reset()
	require.NoError(t, run(context.Background(), []string{"--model", model, "--out", out, "--device", "cpu",
		"--prompt", "What does the cow say?"}, &stdout, &stderr))
	require.Equal(t, " The cow says moo.\n", stdout.String(), "the saved adapter, without training")
}
