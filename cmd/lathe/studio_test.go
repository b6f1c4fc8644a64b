//go:build !nostudio && !lathe_lite

package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The window's own tests (package studio) run it under X; here: lathe studio without a display,
// or without the settings a run needs, is an error, never a panic or a window.
func TestStudioCommandErrors(t *testing.T) {
	t.Setenv("DISPLAY", "")
	_, _, err := run(t, "studio", "--model", t.TempDir(), "--data", "facts.jsonl", "--device", "cpu")
	require.ErrorContains(t, err, "no X display")
	_, _, err = run(t, "studio", "--config", "missing.json")
	require.ErrorContains(t, err, "studio: open missing.json")
}
