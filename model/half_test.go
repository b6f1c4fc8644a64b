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

// opLog records the ops of every launch a backend runs or prepares.
type opLog struct {
	engine.Backend
	ops map[string]int
}

func (o *opLog) log(ls []engine.Launch) {
	for _, l := range ls {
		o.ops[l.Op.Name()]++
	}
}

func (o *opLog) Run(ls []engine.Launch) error { o.log(ls); return o.Backend.Run(ls) }

func (o *opLog) Prepare(ls []engine.Launch) (engine.Executable, error) {
	o.log(ls)
	return engine.Prepare(o.Backend, ls)
}

// A 16-bit checkpoint's matrices stay 16-bit on the device (half the bytes of f32; norms stay f32),
// and its logits are those of the same weights widened to f32 at load, on the CPU, WebGPU and
// Vulkan (their 16-bit kernels: no Cast is launched) and the core-only backend (through the
// decomposition: a Cast, then the f32 op).
func TestHalfWeightsStayHalf(t *testing.T) {
	gpu, vk := testdevice.WebGPU(t), testdevice.Vulkan(t)
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
			defer wide.Release()

			ids := testIDs(cfg.VocabSize, batch*seq)
			ref := logits(t, cpu.New(), dir, model.LoadOptions{Widen: true}, ids, batch, seq)
			r64 := make([]float64, len(ref))
			for i, v := range ref {
				r64[i] = float64(v)
			}
			for name, b := range map[string]engine.Backend{"cpu": cpu.New(), "core": enginetest.CoreOnly(cpu.New()), "webgpu": gpu, "vulkan": vk} {
				t.Run(name, func(t *testing.T) {
					rec := &opLog{Backend: b, ops: map[string]int{}}
					requireLogitsClose(t, r64, logits(t, rec, dir, model.LoadOptions{}, ids, batch, seq), 1e-5)
					if name == "core" {
						require.Positive(t, rec.ops["cast_f32"], "the core-only backend casts the 16-bit weights")
						return
					}
					g, err := model.Load(dir, b, model.LoadOptions{})
					require.NoError(t, err)
					require.Equal(t, want, g.Tensors["model.layers.1.mlp.down_proj.weight"].DType())
					require.Equal(t, wide.WeightBytes()-norms, 2*(g.WeightBytes()-norms), "the device holds the 16-bit weights as stored")
					g.Release()
					require.Zero(t, rec.ops["cast_f32"], "a 16-bit weight was cast: %v", rec.ops)
					require.Positive(t, rec.ops["matmul16"], "%v", rec.ops)
					require.Positive(t, rec.ops["embedding16"], "%v", rec.ops)
				})
			}
		})
	}
}
