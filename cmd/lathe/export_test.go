package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model/llama2c"
)

// A model exported to GGUF generates, trains (QLoRA) and evaluates through --model FILE.gguf;
// an F32 export greedily generates exactly what its folder generates.
func TestExportGGUFAndUseIt(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "stories.gguf")
	_, res, err := run(t, "export", "--model", dir, "--type", "F32", "--out", path)
	require.NoError(t, err)
	require.Equal(t, "F32", res["type"])
	gen := func(m string) string {
		_, r, err := run(t, "generate", "--model", m, "--device", "cpu", "--max-tokens", "24", "--json")
		require.NoError(t, err)
		return r["text"].(string)
	}
	want := gen(dir)
	require.Contains(t, want, "Lily")
	require.Equal(t, want, gen(path))

	data := filepath.Join(t.TempDir(), "d.jsonl")
	writeIDs(t, data, [][]int32{{1, 403, 407, 261, 378, 24, 324}, {1, 67, 403, 261, 378, 24}})
	out := filepath.Join(t.TempDir(), "ad")
	_, r, err := run(t, "train", "--model", path, "--data", data, "--method", "qlora", "--steps", "2", "--device", "cpu", "--out", out)
	require.NoError(t, err)
	require.Equal(t, "qlora", r["method"])
	_, r, err = run(t, "eval", "--model", path, "--adapter", out, "--data", data, "--quantize", "nf4", "--device", "cpu")
	require.NoError(t, err)
	require.Greater(t, r["loss"].(float64), 0.0)

	_, _, err = run(t, "export", "--model", dir, "--type", "IQ2_XS", "--out", path)
	require.ErrorContains(t, err, "IQ2_XS")
}
