package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommandsReleaseTheMainThread: before any command runs, every registered release hook (the
// studio's GLFW lock and, with -tags mpi, dist's) is given the command's path, so that commands
// other than the one that needs the main thread run unlocked (bench's 1B decode went from 24-35 to
// 40 tokens/s unlocked).
func TestCommandsReleaseTheMainThread(t *testing.T) {
	require.NotEmpty(t, mainThreadReleases, "train's hook is always registered")
	saved := mainThreadReleases
	defer func() { mainThreadReleases = saved }()
	var got []string
	mainThreadReleases = []func(string){func(path string) { got = append(got, path) }}
	_, _, err := run(t, "init-data", "--out", filepath.Join(t.TempDir(), "d.jsonl"), "--kind", "facts")
	require.NoError(t, err)
	require.Equal(t, []string{"lathe init-data"}, got)
}
