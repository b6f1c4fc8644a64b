package model_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/quant"
)

// Loading with Quantize widens each linear weight into one reused buffer: every layer's codes and
// scales are still exactly quant.Quantize's of that weight alone, whatever came before it (f32
// and bf16 checkpoints, layers of different sizes).
func TestQuantizedLoadMatchesQuantize(t *testing.T) {
	for _, dtype := range []string{"F32", "BF16"} {
		t.Run(dtype, func(t *testing.T) {
			dir := t.TempDir()
			_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 3, DType: dtype})
			require.NoError(t, err)
			m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "fp4"})
			require.NoError(t, err)
			defer m.Release()
			ck, err := checkpoint.Open(dir)
			require.NoError(t, err)
			defer ck.Close()
			n := 0
			for name, spec := range m.Quant {
				v, shape, err := ck.Float32(name + ".weight")
				require.NoError(t, err)
				want, err := quant.Quantize(v, shape, quant.FP4, spec.Blocksize, false)
				require.NoError(t, err)
				packed, err := m.Tensors[name+".weight"].Bytes()
				require.NoError(t, err)
				require.Equal(t, want.Packed, packed, name)
				absmax, err := m.Tensors[name+".weight.absmax"].Float32()
				require.NoError(t, err)
				require.Equal(t, want.Absmax, absmax, name)
				n++
			}
			require.Equal(t, 2*7, n, "linear layers checked")
		})
	}
}
