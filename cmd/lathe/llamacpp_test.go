package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model/llama2c"
)

// llama.cpp is the judge: node-llama-cpp 3.22.1's prebuilt linux-x64 CPU llama.cpp
// (model/gguf/llamacpptest, installed by npm install --omit=optional: about 85 MB, no other
// platform's binaries) generates greedily from a GGUF lathe exported, with and without a GGUF
// LoRA lathe exported (trained with rsLoRA on every linear layer, q and k included), the text
// lathe generate produces from the same files. It needs node and npm; without them it skips, or
// fails under LATHE_REQUIRE_NPM=1 (CI).
func TestLlamaCppJudge(t *testing.T) {
	node, npm := nodeAndNPM(t)
	dir, err := filepath.Abs(filepath.Join("..", "..", "model", "gguf", "llamacpptest"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	env := append(os.Environ(), "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true", "NO_COLOR=1")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@node-llama-cpp", "linux-x64", "package.json")); err != nil {
		// The versions package-lock.json pins; npm ci refuses a lock that lists only this
		// platform's optional binaries, so install --no-save (the lock is left as it is).
		cmd := exec.CommandContext(ctx, npm, "install", "--omit=optional", "--no-save", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "npm ci in %s:\n%s", dir, out)
	}

	src := testdata.Path(t, "stories260K")
	tmp := t.TempDir()
	folder := filepath.Join(tmp, "stories")
	_, err = llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), folder)
	require.NoError(t, err)
	data := filepath.Join(tmp, "d.jsonl")
	line := `{"text":"Once upon a time there was a purple dragon called Zed who loved pizza and rockets."}` + "\n"
	var lines []byte
	for i := 0; i < 20; i++ {
		lines = append(lines, line...)
	}
	require.NoError(t, os.WriteFile(data, lines, 0o644))

	type job struct {
		Model  string `json:"model"`
		LoRA   string `json:"lora,omitempty"`
		Tokens int    `json:"tokens"`
	}
	judge := func(jobs []job) []string {
		arg, err := json.Marshal(jobs)
		require.NoError(t, err)
		cmd := exec.CommandContext(ctx, node, "judge.mjs", string(arg))
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.Output()
		require.NoError(t, err, "node judge.mjs %s", arg)
		var rs []struct {
			IDs  []int  `json:"ids"`
			Text string `json:"text"`
		}
		require.NoError(t, json.Unmarshal(out, &rs), "%s", out)
		require.Len(t, rs, len(jobs))
		texts := make([]string, len(rs))
		for i, r := range rs {
			require.Len(t, r.IDs, jobs[i].Tokens)
			texts[i] = r.Text
		}
		return texts
	}
	lathe := func(model string, extra ...string) string {
		args := append([]string{"generate", "--model", model, "--device", "cpu", "--max-tokens", "24", "--json"}, extra...)
		_, r, err := run(t, args...)
		require.NoError(t, err)
		return r["text"].(string)
	}
	var jobs []job
	var want []string
	for _, typ := range []string{"F32", "Q8_0"} {
		path := filepath.Join(tmp, "stories-"+typ+".gguf")
		_, _, err := run(t, "export", "--model", folder, "--type", typ, "--out", path)
		require.NoError(t, err)
		w := lathe(path)
		require.Contains(t, w, "Once upon a time")
		jobs, want = append(jobs, job{Model: path, Tokens: 24}), append(want, w)
	}
	// Llama 3.1's rope_scaling, written as rope_freqs.weight: an original context of 64 puts
	// stories260K's frequencies in all three llama3 bands, so llama.cpp must divide by the factors.
	l3 := filepath.Join(tmp, "stories-llama3")
	_, err = llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), l3)
	require.NoError(t, err)
	cfgPath := filepath.Join(l3, "config.json")
	raw, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(raw, &cfg))
	cfg["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
	raw, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfgPath, raw, 0o644))
	l3gguf := filepath.Join(tmp, "stories-llama3.gguf")
	_, _, err = run(t, "export", "--model", l3, "--type", "F32", "--out", l3gguf)
	require.NoError(t, err)
	w3 := lathe(l3gguf)
	require.Equal(t, lathe(l3), w3, "the GGUF generates as its folder")
	require.NotEqual(t, want[0], w3, "the llama3 scaling changes the text")
	jobs, want = append(jobs, job{Model: l3gguf, Tokens: 24}), append(want, w3)

	base := filepath.Join(tmp, "stories-F32.gguf")
	ad := filepath.Join(tmp, "ad")
	_, _, err = run(t, "train", "--model", base, "--data", data, "--steps", "30", "--lr", "0.01", "--rslora", "--device", "cpu", "--out", ad)
	require.NoError(t, err)
	lora := filepath.Join(tmp, "ad.gguf")
	_, _, err = run(t, "export", "--model", base, "--adapter", ad, "--type", "F32", "--out", lora)
	require.NoError(t, err)
	w := lathe(base, "--adapter", ad)
	require.NotEqual(t, want[0], w, "the adapter changes the text")
	jobs, want = append(jobs, job{Model: base, LoRA: lora, Tokens: 24}), append(want, w)
	require.Equal(t, want, judge(jobs), "llama.cpp's greedy text: F32, Q8_0, llama3 RoPE (rope_freqs), F32 with lathe's GGUF LoRA")
}
