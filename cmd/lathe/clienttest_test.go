package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The official OpenAI Node SDK (openai 7.55, serve/clienttest) against lathe serve on loopback:
// the request forms and checks of issue 19's items 8-13. It needs node and npm; without them it
// skips, or fails under LATHE_REQUIRE_NPM=1 (CI).
func TestOpenAINodeClient(t *testing.T) {
	node, npm := nodeAndNPM(t)
	dir, err := filepath.Abs(filepath.Join("..", "..", "serve", "clienttest"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		// The version package-lock.json pins, from the npm registry.
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--engine-strict=false")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "npm ci in %s:\n%s", dir, out)
	}

	tmp := t.TempDir()
	model := filepath.Join(tmp, "model")
	_, _, err = run(t, "init-model", "--out", model)
	require.NoError(t, err)
	url, stop := startServe(t, "--model", model, "--name", "tiny", "--port", "0", "--device", "cpu", "--max-concurrent", "4", "--context", "128")
	defer stop()

	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "openai.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LATHE_URL="+url+"/v1", "LATHE_MODEL=tiny", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	require.NoError(t, err, "the OpenAI client's checks failed")
}

// nodeAndNPM finds node and npm for the tests that run npm packages; without them the test skips,
// or fails under LATHE_REQUIRE_NPM=1 (CI).
func nodeAndNPM(t *testing.T) (node, npm string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("LATHE_REQUIRE_NPM") == "1" {
			t.Fatal("LATHE_REQUIRE_NPM=1: node and npm are needed (scripts/test sets them up)")
		}
		t.Skip("node or npm is missing (LATHE_REQUIRE_NPM=1 makes this a failure)")
	}
	return node, npm
}
