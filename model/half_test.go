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

// A 16-bit checkpoint's matrices stay 16-bit on the device (half the bytes of f32; norms stay f32),
// and its logits are those of the same weights widened to f32 at load, on the CPU (16-bit kernels),
// the core-only backend and WebGPU (both through the decomposition: a Cast, then the f32 op).
func TestHalfWeightsStayHalf(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	const batch, seq = 2, 7
	for _, dt := range []string{"F16", "BF16"} {
		t.Run(dt, func(t *testing.T) {
			dir := t.TempDir()
			_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 21, DType: dt})
			require.NoError(t, err)
			cfg, err := model.LoadConfig(dir)
			require.NoError(t, err)

			m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
			require.NoError(t, err)
			wide, err := model.Load(dir, cpu.New(), model.LoadOptions{Widen: true})
			require.NoError(t, err)
			want := map[string]engine.DType{"F16": engine.F16, "BF16": engine.BF16}[dt]
			for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight"} {
				require.Equal(t, want, m.Tensors[name].DType(), name)
				require.Equal(t, engine.F32, wide.Tensors[name].DType(), name)
			}
			require.Equal(t, engine.F32, m.Tensors["model.layers.0.input_layernorm.weight"].DType())
			norms := int64(4 * cfg.HiddenSize * (2*cfg.NumLayers + 1))
			require.Equal(t, wide.WeightBytes()-norms, 2*(m.WeightBytes()-norms))
			m.Release()
			wide.Release()

			ids := testIDs(cfg.VocabSize, batch*seq)
			ref := logits(t, cpu.New(), dir, model.LoadOptions{Widen: true}, ids, batch, seq)
			r64 := make([]float64, len(ref))
			for i, v := range ref {
				r64[i] = float64(v)
			}
			for name, b := range map[string]engine.Backend{"cpu": cpu.New(), "core": enginetest.CoreOnly(cpu.New()), "webgpu": gpu} {
				t.Run(name, func(t *testing.T) {
					requireLogitsClose(t, r64, logits(t, b, dir, model.LoadOptions{}, ids, batch, seq), 1e-5)
				})
			}
		})
	}
}
