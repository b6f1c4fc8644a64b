package model_test

import (
	"fmt"
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
// and bf16 checkpoints, double quantization, layers of different sizes).
func TestQuantizedLoadMatchesQuantize(t *testing.T) {
	for _, c := range []struct {
		dtype string
		dq    bool
	}{{"F32", false}, {"BF16", false}, {"BF16", true}} {
		dtype := c.dtype
		t.Run(fmt.Sprintf("%s/double=%v", dtype, c.dq), func(t *testing.T) {
			dir := t.TempDir()
			_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 3, DType: dtype})
			require.NoError(t, err)
			m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "fp4", DoubleQuant: c.dq})
			require.NoError(t, err)
			defer m.Release()
			ck, err := checkpoint.Open(dir)
			require.NoError(t, err)
			defer ck.Close()
			n := 0
			for name, spec := range m.Quant {
				v, shape, err := ck.Float32(name + ".weight")
				require.NoError(t, err)
				want, err := quant.Quantize(v, shape, quant.FP4, spec.Blocksize, c.dq)
				require.NoError(t, err)
				wantAbsmax, err := want.BlockAbsmax()
				require.NoError(t, err)
				packed, err := m.Tensors[name+".weight"].Bytes()
				require.NoError(t, err)
				require.Equal(t, want.Packed, packed, name)
				absmax, err := m.Tensors[name+".weight.absmax"].Float32()
				require.NoError(t, err)
				require.Equal(t, wantAbsmax, absmax, name)
				n++
			}
			require.Equal(t, 2*7, n, "linear layers checked")
		})
	}
}
