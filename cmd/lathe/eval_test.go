package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/reflm"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// storyDocs are three TinyStories-like documents of different lengths, tokenized by stories260K's
// tokenizer with BOS (as llama2c trained it), no EOS.
var storyDocs = []string{
	"Once upon a time, there was a little girl named Lily. She loved to play outside.",
	"Tom had a red ball. He threw it high and his dog ran to get it. They were happy.",
	"The sun was warm.",
}

// storiesNoTokenizer converts stories260K into a Hugging Face folder, tokenizes docs with its
// tokenizer and then deletes tokenizer.json: the folder has weights and config only.
func storiesNoTokenizer(t *testing.T, docs []string) (string, [][]int32) {
	t.Helper()
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	var ids [][]int32
	for _, d := range docs {
		enc, err := tok.Encode(d, true)
		require.NoError(t, err)
		require.NotEqual(t, tok.EOS(), enc[len(enc)-1])
		row := make([]int32, len(enc))
		for i, v := range enc {
			row[i] = int32(v)
		}
		ids = append(ids, row)
	}
	require.NoError(t, os.Remove(filepath.Join(dir, "tokenizer.json")))
	return dir, ids
}

// writeIDs writes pre-tokenized documents as {"input_ids"} lines.
func writeIDs(t *testing.T, path string, docs [][]int32) string {
	t.Helper()
	var b strings.Builder
	for _, d := range docs {
		line, err := json.Marshal(map[string]any{"input_ids": d})
		require.NoError(t, err)
		b.Write(line)
		b.WriteByte('\n')
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path
}

// refDocLoss is the float64 reference's summed loss and token count of one document alone.
func refDocLoss(t *testing.T, cfg *model.Config, raw map[string]any, w map[string][]float64, doc []int32) (float64, int) {
	logits := reflm.Logits(cfg, raw, w, doc, 1, len(doc))
	return reflm.Loss(logits, doc, cfg.VocabSize)
}

func evalLoss(t *testing.T, dir, data string, seq int) (float64, int) {
	t.Helper()
	_, res, err := run(t, "eval", "--model", dir, "--data", data, "--device", "cpu", "--seq", fmt.Sprint(seq))
	require.NoError(t, err)
	return res["loss"].(float64), int(res["tokens"].(float64))
}

// Pre-tokenized data is taken as given (no EOS appended) and needs no tokenizer.json: the loss of
// one document equals the float64 reference's on exactly its ids.
func TestEvalPreTokenizedWithoutTokenizer(t *testing.T) {
	dir, docs := storiesNoTokenizer(t, storyDocs[:1])
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	w, err := reflm.Weights(dir)
	require.NoError(t, err)
	raw, err := reflm.Config(dir)
	require.NoError(t, err)
	sum, n := refDocLoss(t, cfg, raw, w, docs[0])
	loss, tokens := evalLoss(t, dir, writeIDs(t, filepath.Join(t.TempDir(), "one.jsonl"), docs), 64)
	require.Equal(t, len(docs[0])-1, tokens, "every token after the first, no EOS")
	require.Equal(t, n, tokens)
	require.InDelta(t, sum/float64(n), loss, 1e-5)
	t.Logf("stories260K, %d pre-tokenized tokens: loss %.6f (float64 reference %.6f)", len(docs[0]), loss, sum/float64(n))
	require.Less(t, loss, 2.0, "a TinyStories sentence is easy for stories260K")

	// Data that is not pre-tokenized needs the tokenizer, and says so.
	text := filepath.Join(t.TempDir(), "text.jsonl")
	require.NoError(t, os.WriteFile(text, []byte(`{"text": "Once upon a time"}`+"\n"), 0o644))
	_, _, err = run(t, "eval", "--model", dir, "--data", text, "--device", "cpu")
	require.ErrorContains(t, err, "tokenizer.json")

	// Training on it needs no tokenizer either.
	_, res, err := run(t, "train", "--model", dir, "--data", writeIDs(t, filepath.Join(t.TempDir(), "d.jsonl"), docs),
		"--out", filepath.Join(t.TempDir(), "a"), "--steps", "2", "--seq", "16", "--device", "cpu", "--quiet")
	require.NoError(t, err)
	require.Equal(t, 2.0, res["steps"], "%v", res)
}

// Packed documents are isolated: eval of a file is the token-weighted mean of each document
// evaluated alone, at any --seq; where every document fits a row, that is the float64 reference's
// loss of each document alone, the same at every --seq.
func TestEvalIsolatesPackedDocuments(t *testing.T) {
	dir, docs := storiesNoTokenizer(t, storyDocs)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	w, err := reflm.Weights(dir)
	require.NoError(t, err)
	raw, err := reflm.Config(dir)
	require.NoError(t, err)
	var sum float64
	var n int
	for _, d := range docs {
		s, k := refDocLoss(t, cfg, raw, w, d)
		sum, n = sum+s, n+k
	}
	file := writeIDs(t, filepath.Join(t.TempDir(), "three.jsonl"), docs)
	for _, seq := range []int{len(docs[1]), 64, 200, 512} {
		loss, tokens := evalLoss(t, dir, file, seq)
		require.Equal(t, n, tokens)
		require.InDelta(t, sum/float64(n), loss, 1e-5, "--seq %d", seq)
	}
	// Rows shorter than the documents: each is cut into rows as it would be alone.
	for _, seq := range []int{7, 16} {
		var alone float64
		var tokens int
		for i, d := range docs {
			l, k := evalLoss(t, dir, writeIDs(t, filepath.Join(t.TempDir(), fmt.Sprintf("doc%d.jsonl", i)), [][]int32{d}), seq)
			alone, tokens = alone+l*float64(k), tokens+k
		}
		loss, k := evalLoss(t, dir, file, seq)
		require.Equal(t, tokens, k)
		require.InDelta(t, alone/float64(tokens), loss, 1e-6, "--seq %d", seq)
	}
}

// A --seq above the model's context is refused, a huge one before anything is allocated.
func TestSeqAboveContextRefused(t *testing.T) {
	dir, docs := storiesNoTokenizer(t, storyDocs[:1])
	data := writeIDs(t, filepath.Join(t.TempDir(), "d.jsonl"), docs)
	for _, seq := range []string{"513", "100000", "100000000"} {
		start := time.Now()
		_, _, err := run(t, "train", "--model", dir, "--data", data, "--out", filepath.Join(t.TempDir(), "a"), "--seq", seq, "--steps", "1", "--device", "cpu", "--quiet")
		require.Error(t, err)
		require.Contains(t, err.Error(), "seq "+seq)
		require.Less(t, time.Since(start), time.Second)
		_, _, err = run(t, "eval", "--model", dir, "--data", data, "--seq", seq, "--device", "cpu")
		require.ErrorContains(t, err, "seq "+seq+" is above the model's context of 512 tokens")
	}
	_, _, err := run(t, "train", "--model", dir, "--data", data, "--out", filepath.Join(t.TempDir(), "a"), "--seq", "512", "--batch", "4096", "--steps", "1", "--device", "cpu", "--quiet")
	require.ErrorContains(t, err, "batch 4096 × seq 512 is above 1048576 tokens")
}
