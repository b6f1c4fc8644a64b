package bench

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
)

// needLlamaCpp makes sure node-llama-cpp is installed in model/gguf/llamacpptest (installing the
// versions package.json pins, as cmd/lathe's llama.cpp test does); without node and npm it skips,
// or fails under LATHE_REQUIRE_NPM=1 (CI).
func needLlamaCpp(t *testing.T) {
	t.Helper()
	_, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("LATHE_REQUIRE_NPM") == "1" {
			t.Fatal("LATHE_REQUIRE_NPM=1: node and npm are needed (scripts/test sets them up)")
		}
		t.Skip("node or npm is missing (LATHE_REQUIRE_NPM=1 makes this a failure)")
	}
	if _, err := llamaCppModule(); err == nil {
		return
	}
	dir, err := filepath.Abs(filepath.Join("..", "model", "gguf", "llamacpptest"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--omit=optional", "--no-save", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm install in %s:\n%s", dir, out)
	_, err = llamaCppModule()
	require.NoError(t, err)
}

// The llama.cpp reference runs on the end-to-end checkpoint exported to GGUF (Q4_0 and F16) and
// gives decode and prefill ratios against lathe's NF4 (its decoding head NF4 too) and f32 runs of
// the same run.
func TestLlamaCppSideBySide(t *testing.T) {
	needLlamaCpp(t)
	s := E2ETiny()
	s.Weights, s.Batches, s.Adapters, s.Repeats, s.DecodeTokens = []string{"f32", nf4Head4}, []int{1}, 0, 1, 4
	var got []LlamaCppResult
	res := runE2E(cpu.New(), s, io.Discard, func(dir string, res []E2EResult) {
		got = runLlamaCpp(context.Background(), dir, s, res, io.Discard)
	})
	require.Len(t, res, 2)
	require.Len(t, got, 2)
	for i, want := range [][2]string{{"Q4_0", nf4Head4}, {"F16", "f32"}} {
		r := got[i]
		require.Empty(t, r.Err, r.Type)
		require.Equal(t, want[0], r.Type)
		require.Equal(t, want[1], r.Lathe)
		require.Positive(t, r.Bytes)
		require.Positive(t, r.TokensPerSec)
		require.Equal(t, s.DecodeTokens, r.TokenTime.N, "one sample a decoded token (one repeat)")
		require.Positive(t, r.TTFT.Median)
		require.Positive(t, r.DecodeRatio)
		require.Positive(t, r.PrefillRatio)
	}
}
