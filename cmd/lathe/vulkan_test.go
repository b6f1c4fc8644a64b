package main

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/testdevice"
)

// lathe eval --device vulkan on the real stories260K equals --device cpu to 1e-4.
func TestEvalVulkanEqualsCPU(t *testing.T) {
	testdevice.Vulkan(t) // skips without a device, fails under LATHE_REQUIRE_GPU=1
	dir, docs := storiesNoTokenizer(t, storyDocs)
	data := writeIDs(t, filepath.Join(t.TempDir(), "docs.jsonl"), docs)
	loss := map[string]float64{}
	for _, dev := range []string{"cpu", "vulkan"} {
		_, res, err := run(t, "eval", "--model", dir, "--data", data, "--device", dev, "--seq", "64")
		require.NoError(t, err, dev)
		loss[dev] = res["loss"].(float64)
	}
	t.Logf("stories260K eval loss: cpu %.7f, vulkan %.7f", loss["cpu"], loss["vulkan"])
	require.InDelta(t, loss["cpu"], loss["vulkan"], 1e-4)
}

// lathe train --device vulkan trains the demo's model (init-model tiny, facts, QLoRA) with the
// CPU's loss curve, step by step, to float tolerance.
func TestTrainVulkanLossCurve(t *testing.T) {
	testdevice.Vulkan(t)
	dir := t.TempDir()
	model, data := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl")
	_, _, err := run(t, "init-model", "--out", model, "--preset", "tiny", "--seed", "1")
	require.NoError(t, err)
	_, _, err = run(t, "init-data", "--out", data, "--kind", "facts", "--n", "40")
	require.NoError(t, err)
	curves := map[string][]float64{}
	for _, dev := range []string{"cpu", "vulkan"} {
		out := filepath.Join(dir, "adapter-"+dev)
		_, _, err := run(t, "train", "--model", model, "--data", data, "--method", "qlora", "--out", out,
			"--steps", "6", "--batch", "2", "--seq", "32", "--lr", "1e-2", "--warmup", "2", "--device", dev, "--quiet")
		require.NoError(t, err, dev)
		curves[dev] = lossCurve(t, filepath.Join(out, "metrics.jsonl"))
	}
	require.Len(t, curves["cpu"], 6)
	require.Len(t, curves["vulkan"], 6)
	for i, want := range curves["cpu"] {
		got := curves["vulkan"][i]
		require.LessOrEqual(t, math.Abs(got-want), 1e-3*math.Max(1, math.Abs(want)), "step %d: vulkan %v, cpu %v", i+1, got, want)
	}
	require.Less(t, curves["cpu"][5], curves["cpu"][0], "the loss falls")
	t.Logf("loss by step: cpu %v, vulkan %v", curves["cpu"], curves["vulkan"])
}

// lossCurve reads the training loss of each step from a metrics.jsonl.
func lossCurve(t *testing.T, path string) []float64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		if _, ok := m["lr"]; !ok {
			continue
		}
		if l, ok := m["loss"].(float64); ok {
			out = append(out, l)
		}
	}
	require.NoError(t, sc.Err())
	return out
}
