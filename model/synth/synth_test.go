package synth_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

func TestWriteIsALoadableDeterministicLlama(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	p := synth.Presets["tiny"]
	_, err := synth.Write(a, synth.Options{Preset: p, Seed: 3})
	require.NoError(t, err)
	_, err = synth.Write(b, synth.Options{Preset: p, Seed: 3})
	require.NoError(t, err)
	res, err := synth.Write(c, synth.Options{Preset: p, Seed: 4, DType: "BF16"})
	require.NoError(t, err)

	wa, err := os.ReadFile(filepath.Join(a, "model.safetensors"))
	require.NoError(t, err)
	wb, err := os.ReadFile(filepath.Join(b, "model.safetensors"))
	require.NoError(t, err)
	require.Equal(t, wa, wb, "the same seed gives the same weights")

	cfg, err := model.LoadConfig(c)
	require.NoError(t, err)
	require.Equal(t, p.Hidden, cfg.HiddenSize)
	require.Equal(t, p.KVHeads, cfg.NumKVHeads)

	ck, err := checkpoint.Open(c)
	require.NoError(t, err)
	defer ck.Close()
	q, ok := ck.Tensor("model.layers.1.self_attn.q_proj.weight")
	require.True(t, ok)
	require.Equal(t, "BF16", q.DType)
	require.Equal(t, []int{p.Hidden, p.Hidden}, q.Shape)
	v, _, err := ck.Float32("model.layers.1.self_attn.q_proj.weight")
	require.NoError(t, err)
	var sum2 float64
	for _, x := range v {
		sum2 += float64(x) * float64(x)
	}
	std := sum2 / float64(len(v))
	require.InDelta(t, 0.02*0.02, std, 0.0001, "weights are drawn from N(0, 0.02²)")
	// Norm weights are neither 1 nor alike, so that using one norm in another's place changes the
	// output (model's reference tests catch an input_layernorm / post_attention_layernorm swap).
	cka, err := checkpoint.Open(a)
	require.NoError(t, err)
	defer cka.Close()
	seen := map[float32]bool{}
	for _, name := range []string{"model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.layers.1.input_layernorm.weight"} {
		norm, _, err := cka.Float32(name)
		require.NoError(t, err)
		require.Len(t, norm, p.Hidden)
		var mean float64
		for _, x := range norm {
			require.GreaterOrEqual(t, x, float32(0.74), name)
			require.LessOrEqual(t, x, float32(1.26), name)
			seen[x] = true
			mean += float64(x) / float64(len(norm))
		}
		require.InDelta(t, 1, mean, 0.1, "%s: uniform on [0.75, 1.25]", name)
	}
	require.Greater(t, len(seen), 3*p.Hidden, "every norm weight is drawn, none repeats another's")
	var count int64
	for _, n := range ck.Names() {
		tt, _ := ck.Tensor(n)
		count += tt.Numel()
	}
	require.Equal(t, res.Params, count)

	_, err = synth.Write(filepath.Join(dir, "d"), synth.Options{Preset: p, DType: "F64"})
	require.ErrorContains(t, err, `dtype "F64"`)
}

func TestTokenizerAndDatasets(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1})
	require.NoError(t, err)
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	require.LessOrEqual(t, tok.VocabSize(), synth.Presets["tiny"].Vocab)
	require.Equal(t, 0, tok.BOS())
	require.Equal(t, 1, tok.EOS())
	text := "What does the cow say? The cow says moo."
	ids, err := tok.Encode(text, true)
	require.NoError(t, err)
	require.Equal(t, 0, ids[0])
	require.Less(t, len(ids), len(text)*2/3, "merges learned from the corpus compress it")
	back, err := tok.Decode(ids, true)
	require.NoError(t, err)
	require.Equal(t, text, back)
	chat, err := tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "hi"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", chat)

	for _, kind := range []string{synth.Facts, synth.Stories, synth.Chat} {
		path := filepath.Join(dir, kind+".jsonl")
		require.NoError(t, synth.WriteDataset(path, kind, 3, 20))
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		require.Len(t, lines, 20)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[0]), &v))
	}
	require.ErrorContains(t, synth.WriteDataset(filepath.Join(dir, "x"), "poems", 1, 2), `unknown kind "poems"`)
}

func TestBiasesAreDrawn(t *testing.T) {
	dir := t.TempDir()
	p := synth.Presets["tiny"]
	_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 2, Bias: true})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	require.True(t, cfg.AttentionBias)
	ck, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	for _, proj := range []string{"q", "k", "v", "o"} {
		b, shape, err := ck.Float32("model.layers.1.self_attn." + proj + "_proj.bias")
		require.NoError(t, err, proj)
		require.Len(t, shape, 1)
		var sum2 float64
		for _, x := range b {
			require.NotZero(t, x)
			sum2 += float64(x) * float64(x)
		}
		require.InDelta(t, 0.02, math.Sqrt(sum2/float64(len(b))), 0.008, "%s_proj.bias from N(0, 0.02²)", proj)
	}
}
