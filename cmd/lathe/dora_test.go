package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
)

// DoRA through the command line: train (dense and on NF4), eval, generate and merge take the
// adapter; the server refuses it with the way to serve it merged.
func TestDoRACommands(t *testing.T) {
	dir := t.TempDir()
	mdir, data := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl")
	_, _, err := run(t, "init-model", "--out", mdir)
	require.NoError(t, err)
	_, _, err = run(t, "init-data", "--out", data, "--kind", "facts")
	require.NoError(t, err)
	var doraGen map[string]any
	for _, method := range []string{"dora", "qdora"} {
		out := filepath.Join(dir, method)
		_, res, err := run(t, "train", "--model", mdir, "--data", data, "--method", method, "--out", out, "--steps", "6", "--lr", "1e-2", "--seq", "48", "--device", "cpu")
		require.NoError(t, err)
		require.Less(t, res["loss_end"].(float64), res["loss_start"].(float64), method)
		q := []string{}
		if method == "qdora" {
			q = []string{"--quantize", "nf4"}
		}
		_, ev, err := run(t, append([]string{"eval", "--model", mdir, "--adapter", out, "--data", data, "--seq", "48", "--device", "cpu"}, q...)...)
		require.NoError(t, err)
		require.Positive(t, ev["loss"])
		_, gen, err := run(t, append([]string{"generate", "--model", mdir, "--adapter", out, "--prompt", "The cow", "--max-tokens", "4", "--temperature", "0", "--json", "--device", "cpu"}, q...)...)
		require.NoError(t, err)
		require.Contains(t, gen, "tokens", "%v", gen)
		if method == "dora" {
			doraGen = gen
		}
	}
	merged := filepath.Join(dir, "merged")
	_, _, err = run(t, "merge", "--model", mdir, "--adapter", filepath.Join(dir, "dora"), "--out", merged)
	require.NoError(t, err)
	_, ev, err := run(t, "eval", "--model", mdir, "--adapter", filepath.Join(dir, "dora"), "--data", data, "--seq", "48", "--device", "cpu")
	require.NoError(t, err)
	_, evm, err := run(t, "eval", "--model", merged, "--data", data, "--seq", "48", "--device", "cpu")
	require.NoError(t, err)
	require.InDelta(t, ev["loss"].(float64), evm["loss"].(float64), 1e-4*ev["loss"].(float64), "merged DoRA evaluates as the adapter")
	_, gm, err := run(t, "generate", "--model", merged, "--prompt", "The cow", "--max-tokens", "4", "--temperature", "0", "--json", "--device", "cpu")
	require.NoError(t, err)
	require.Equal(t, doraGen["text"], gm["text"], "merged DoRA generates as the adapter")
	require.Equal(t, doraGen["tokens"], gm["tokens"])
	t.Logf("DoRA generates %q (%v tokens)", gm["text"], gm["tokens"])

	m, err := model.Load(mdir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	_, err = servedAdapterLoader(m)(filepath.Join(dir, "dora"))
	require.ErrorContains(t, err, "--merge")
}
