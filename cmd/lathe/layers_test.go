package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// lathe train --layers: ranks and modules per layer, saved as one PEFT LoRA that lathe serve (its
// mixed-adapter batches) and lathe merge take: both answer as the adapter does.
func TestTrainLayerGroups(t *testing.T) {
	dir := t.TempDir()
	model, data, adapter, layers := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl"), filepath.Join(dir, "adapter"), filepath.Join(dir, "layers.json")
	_, _, err := run(t, "init-model", "--out", model)
	require.NoError(t, err)
	_, _, err = run(t, "init-data", "--out", data, "--kind", "facts")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(layers, []byte(`[{"layers": "0", "targets": ["q_proj", "v_proj"], "rank": 4},
		{"layers": "1", "targets": ["all-linear"], "rank": 16, "alpha": 16}]`), 0o644))
	_, res, err := run(t, "train", "--model", model, "--data", data, "--method", "lora", "--layers", layers,
		"--out", adapter, "--steps", "30", "--lr", "1e-2", "--seq", "48", "--device", "cpu", "--quiet")
	require.NoError(t, err)
	require.Less(t, res["loss_end"].(float64), res["loss_start"].(float64))
	raw, err := os.ReadFile(filepath.Join(adapter, "adapter_config.json"))
	require.NoError(t, err)
	require.Contains(t, string(raw), `"model.layers.1.mlp.gate_proj": 16`)
	require.Contains(t, string(raw), `"model.layers.0.self_attn.q_proj": 4`)

	url, stop := startServe(t, "--model", model, "--adapter", "g="+adapter, "--port", "0", "--device", "cpu")
	served := withAdapterText(t, url, "g")
	base := withAdapterText(t, url, "model")
	stop()
	require.NotEqual(t, base, served, "the adapter changes the answer")
	_, _, err = run(t, "merge", "--model", model, "--adapter", adapter, "--out", filepath.Join(dir, "merged"))
	require.NoError(t, err)
	url, stop = startServe(t, "--model", filepath.Join(dir, "merged"), "--port", "0", "--device", "cpu")
	require.Equal(t, served, withAdapterText(t, url, "merged"))
	stop()

	require.NoError(t, os.WriteFile(layers, []byte(`[{"layers": "0", "method": "ia3"}, {"layers": "1"}]`), 0o644))
	_, _, err = run(t, "train", "--model", model, "--data", data, "--method", "lora", "--layers", layers,
		"--out", filepath.Join(dir, "mixed"), "--steps", "2", "--seq", "48", "--device", "cpu", "--quiet")
	require.ErrorContains(t, err, "PeftMixedModel")
}
