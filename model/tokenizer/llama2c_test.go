package tokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/testdata"
)

// testdataFile finds a file of the shared test data ($LATHE_TESTDATA, else
// ../../../shared/testdata). It skips the test when the file is absent, or fails it when
// LATHE_REQUIRE_TESTDATA=1.
func testdataFile(t *testing.T, rel string) string {
	t.Helper()
	return testdata.Path(t, rel)
}

// optionalTestdataFile returns the path of rel under the shared test data and whether it exists.
func optionalTestdataFile(rel string) (string, bool) {
	dir := os.Getenv("LATHE_TESTDATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "testdata")
	}
	path := filepath.Join(dir, rel)
	_, err := os.Stat(path)
	return path, err == nil
}

// llama2cEncode is an independent reimplementation of llama2.c's encode(): dummy-prefix " "
// token, one token per UTF-8 character with byte fallback (+3), then repeatedly merge the
// adjacent pair whose concatenation is in the vocab with the highest score (leftmost on ties).
func llama2cEncode(t *testing.T, toks []llama2cToken, text string) []int {
	t.Helper()
	lookup := map[string]int{}
	for i, tk := range toks {
		if _, ok := lookup[tk.piece]; !ok {
			lookup[tk.piece] = i
		}
	}
	var ids []int
	if text != "" {
		id, ok := lookup[" "]
		require.True(t, ok)
		ids = append(ids, id)
	}
	for _, r := range text {
		s := string(r)
		if id, ok := lookup[s]; ok {
			ids = append(ids, id)
			continue
		}
		for _, b := range []byte(s) {
			ids = append(ids, int(b)+3)
		}
	}
	for {
		best, bestID, bestIdx := float32(-1e10), -1, -1
		for i := 0; i+1 < len(ids); i++ {
			if id, ok := lookup[toks[ids[i]].piece+toks[ids[i+1]].piece]; ok && toks[id].score > best {
				best, bestID, bestIdx = toks[id].score, id, i
			}
		}
		if bestIdx < 0 {
			return ids
		}
		ids[bestIdx] = bestID
		ids = append(ids[:bestIdx+1], ids[bestIdx+2:]...)
	}
}

func TestLlama2CConversion(t *testing.T) {
	path := testdataFile(t, filepath.Join("stories260K", "tok512.bin"))
	toks, err := readLlama2C(path)
	require.NoError(t, err)
	require.Len(t, toks, 512)

	tk, err := LoadLlama2C(path)
	require.NoError(t, err)
	require.Equal(t, 512, tk.VocabSize())
	require.Equal(t, 1, tk.BOS())
	require.Equal(t, 2, tk.EOS())
	require.Equal(t, 0, tk.UNK())
	b, ok := tk.IDToToken(3 + 0x0A)
	require.True(t, ok)
	require.Equal(t, "<0x0A>", b)

	for _, s := range []string{
		"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
		"One day, Tim saw a big, red ball in the sky. He said, \"Wow! Can I have it?\"",
		"The cat was sad because it lost its toy.\nThen the dog came and they played together.",
		"  leading spaces and trailing ones  ",
		"Ünïcödé café 😀 — and ~[brackets]~",
		"a",
	} {
		want := llama2cEncode(t, toks, s)
		got, err := tk.Encode(s, false)
		require.NoError(t, err)
		require.Equal(t, want, got, "text %q", s)
		withBOS, err := tk.Encode(s, true)
		require.NoError(t, err)
		require.Equal(t, append([]int{1}, want...), withBOS)
		out, err := tk.Decode(withBOS, true)
		require.NoError(t, err)
		require.Equal(t, s, out)
	}
	empty, err := tk.Encode("", true)
	require.NoError(t, err)
	require.Equal(t, []int{1}, empty)
}

func TestLlama2CErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := FromLlama2C(filepath.Join(dir, "missing.bin"))
	require.ErrorContains(t, err, "missing.bin")

	bad := filepath.Join(dir, "bad.bin")
	require.NoError(t, os.WriteFile(bad, []byte{7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 'a'}, 0o644))
	_, err = FromLlama2C(bad)
	require.ErrorContains(t, err, "bad length")

	short := filepath.Join(dir, "short.bin")
	require.NoError(t, os.WriteFile(short, []byte{7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'a'}, 0o644))
	_, err = FromLlama2C(short)
	require.ErrorContains(t, err, "at least 259")
}
