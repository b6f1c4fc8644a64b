package llama2c_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

const story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " +
	"One day, she saw a big red ball. She wanted to play with it. Lily's mom said, \"Be careful!\""

func convert(t *testing.T) string {
	dir := testdata.Path(t, "stories260K")
	out := t.TempDir()
	res, err := llama2c.Convert(filepath.Join(dir, "stories260K.bin"), filepath.Join(dir, "tok512.bin"), out)
	require.NoError(t, err)
	require.Equal(t, 512, res.Vocab)
	require.Equal(t, int64(260032), res.Params, "the README's parameter count")
	return out
}

// forward returns the logits of ids (one sequence).
func forward(t *testing.T, m *model.Model, ids []int32) []float32 {
	y, err := m.Logits(ids, 1, nil)
	require.NoError(t, err)
	return y
}

func TestConvertedStories260KIsATrainedModel(t *testing.T) {
	dir := convert(t)
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()

	ids, err := tok.Encode(story, true)
	require.NoError(t, err)
	require.Equal(t, 1, ids[0], "BOS first")
	in := make([]int32, len(ids))
	for i, id := range ids {
		in[i] = int32(id)
	}
	logits := forward(t, m, in)
	vocab := m.Cfg.VocabSize
	loss := 0.0
	for i := 0; i+1 < len(in); i++ {
		row := logits[i*vocab : (i+1)*vocab]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		z := 0.0
		for _, v := range row {
			z += math.Exp(float64(v) - mx)
		}
		loss += mx + math.Log(z) - float64(row[in[i+1]])
	}
	loss /= float64(len(in) - 1)
	t.Logf("stories260K loss on a TinyStories text: %.3f (a random model: ln 512 = %.3f)", loss, math.Log(512))
	require.Less(t, loss, 2.5, "a trained model predicts TinyStories text far better than chance")

	// Greedy decoding from BOS reproduces the text the model's author published: the strongest
	// check that the RoPE permutation and every tensor landed where transformers expects them.
	seq := []int32{1}
	for len(seq) < 30 {
		logits := forward(t, m, seq)
		last := logits[(len(seq)-1)*vocab:]
		best := 0
		for j := range last[:vocab] {
			if last[j] > last[best] {
				best = j
			}
		}
		seq = append(seq, int32(best))
	}
	// The same greedy decoding with the KV cache: one token per step.
	cache, err := m.NewCache(1, 64)
	require.NoError(t, err)
	defer cache.Release()
	cached := []int32{1}
	for len(cached) < len(seq) {
		logits, err := cache.Step([]model.Seq{{Pos: len(cached) - 1, IDs: cached[len(cached)-1:]}})
		require.NoError(t, err)
		full := forward(t, m, cached)
		last := full[(len(cached)-1)*vocab:]
		for j := range logits {
			require.InDelta(t, last[j], logits[j], 1e-4, "cached logits equal full-sequence logits at step %d", len(cached))
		}
		best := 0
		for j := range logits {
			if logits[j] > logits[best] {
				best = j
			}
		}
		cached = append(cached, int32(best))
	}
	require.Equal(t, seq, cached, "greedy decoding with the cache equals decoding without it")
	out := make([]int, len(seq))
	for i, id := range seq {
		out[i] = int(id)
	}
	text, err := tok.Decode(out, true)
	require.NoError(t, err)
	t.Logf("greedy: %q", text)
	require.True(t, strings.HasPrefix(text, "Once upon a time, there was a little girl named Lily. She loved to play"), "greedy text: %q", text)
}

func TestReadRejectsBadCheckpoints(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.bin")
	require.NoError(t, os.WriteFile(short, []byte{1, 2, 3}, 0o644))
	_, _, err := llama2c.Read(short)
	require.ErrorContains(t, err, "short.bin: header")

	src := testdata.Path(t, "stories260K/stories260K.bin")
	raw, err := os.ReadFile(src)
	require.NoError(t, err)
	trunc := filepath.Join(dir, "trunc.bin")
	require.NoError(t, os.WriteFile(trunc, raw[:len(raw)-100], 0o644))
	_, _, err = llama2c.Read(trunc)
	require.ErrorContains(t, err, "truncated")

	bad := append([]byte(nil), raw...)
	bad[0] = 0 // dim 64 → 0
	badPath := filepath.Join(dir, "bad.bin")
	require.NoError(t, os.WriteFile(badPath, bad, 0o644))
	_, _, err = llama2c.Read(badPath)
	require.ErrorContains(t, err, "implausible header")
}
