//go:build !lathe_lite

package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/bench"
	"github.com/lathe-ml/lathe/engine/cpu"
)

// --e2e-* resize the end-to-end checkpoint over the CPU's defaults (quick's decode length kept
// unless given), and --e2e-only leaves nothing else but batch-1 generation to measure.
func TestBenchE2ESizes(t *testing.T) {
	be := cpu.New()
	d, caps := be.Device(), be.Caps()
	s := e2eSizes(false, 16, 0, 70, 0)(d, caps, true)
	require.Equal(t, 16, s.E2E.Layers)
	require.Equal(t, 70, s.E2E.PromptTokens)
	require.Equal(t, 8192, s.E2E.Preset.Vocab, "quick's vocabulary kept")
	require.Equal(t, bench.Defaults(d, caps, true).E2E.DecodeTokens, s.E2E.DecodeTokens, "quick's decode length kept")
	require.Empty(t, s.Kernels)
	require.Positive(t, s.Qwen3Train.Layers)

	s = e2eSizes(true, 0, 32000, 0, 20)(d, caps, false)
	require.Equal(t, 2, s.E2E.Layers)
	require.Equal(t, 32000, s.E2E.Preset.Vocab)
	require.Equal(t, 20, s.E2E.DecodeTokens)
	require.Equal(t, []int{1}, s.E2E.Batches)
	require.Zero(t, s.E2E.Adapters)
	require.Equal(t, []string{"none"}, s.Kernels)
	require.Zero(t, s.Qwen3Train.Layers)
	require.Equal(t, []string{"f32", "nf4", "nf4/bf16", "nf4/head-nf4", "nf4/head-nf4/bf16", "nf4/head-nf4/i8"}, s.E2E.Weights)
}
