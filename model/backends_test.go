package model_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
)

// The whole decoder, dense and 4-bit, prefill and cached decoding, gives the CPU's logits on WebGPU.
func TestWebGPULogitsEqualCPU(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 11})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	const batch, seq = 2, 9
	ids := testIDs(cfg.VocabSize, batch*seq)
	for _, o := range []model.LoadOptions{{}, {Quantize: "nf4", DoubleQuant: true}} {
		want := logits(t, cpu.New(), dir, o, ids, batch, seq)
		got := logits(t, gpu, dir, o, ids, batch, seq)
		w64 := make([]float64, len(want))
		for i, v := range want {
			w64[i] = float64(v)
		}
		requireLogitsClose(t, w64, got, 1e-4)
	}

	// Prefill of 5 tokens, then two decode steps, through the KV cache.
	var outs [2][][]float32
	for bi, b := range []engine.Backend{cpu.New(), gpu} {
		m, err := model.Load(dir, b, model.LoadOptions{Quantize: "nf4"})
		require.NoError(t, err)
		c, err := m.NewCache(2, 16)
		require.NoError(t, err)
		pos := 0
		for _, chunk := range [][]int32{ids[:5], ids[5:6], ids[6:7]} {
			l, err := c.StepAll([]model.Seq{{Slot: 1, Pos: pos, IDs: chunk}})
			require.NoError(t, err)
			outs[bi] = append(outs[bi], l)
			pos += len(chunk)
		}
		c.Release()
		m.Release()
	}
	for i := range outs[0] {
		w64 := make([]float64, len(outs[0][i]))
		for j, v := range outs[0][i] {
			w64[j] = float64(v)
		}
		requireLogitsClose(t, w64, outs[1][i], 1e-4)
	}
}

// Serving on a backend with only the core ops (SwiGLU and the fused LoRA rewritten into core ops
// by the compiler): prefill and cached decoding give the CPU's logits, dense and 4-bit.
func TestCoreOnlyBackendServesLikeTheCPU(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 13})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	ids := testIDs(cfg.VocabSize, 8)
	for _, o := range []model.LoadOptions{{}, {Quantize: "nf4"}} {
		var outs [2][][]float32
		for bi, b := range []engine.Backend{cpu.New(), enginetest.CoreOnly(cpu.New())} {
			m, err := model.Load(dir, b, o)
			require.NoError(t, err)
			c, err := m.NewCache(2, 16)
			require.NoError(t, err)
			pos := 0
			for _, chunk := range [][]int32{ids[:6], ids[6:7], ids[7:8]} {
				l, err := c.StepAll([]model.Seq{{Slot: 1, Pos: pos, IDs: chunk}})
				require.NoError(t, err)
				outs[bi] = append(outs[bi], l)
				pos += len(chunk)
			}
			c.Release()
			m.Release()
		}
		for i := range outs[0] {
			w64 := make([]float64, len(outs[0][i]))
			for j, v := range outs[0][i] {
				w64[j] = float64(v)
			}
			requireLogitsClose(t, w64, outs[1][i], 1e-5)
		}
	}
}
