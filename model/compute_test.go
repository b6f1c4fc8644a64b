package model_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
)

// LoadOptions.Compute "bf16" marks every 4-bit layer (the generation head's copy too) as allowed
// bfloat16 products, and a decoding step's logits then stay within bfloat16's rounding of the exact
// ones: on a CPU with AVX512_BF16 they differ (the allowance is taken), elsewhere they are the
// same bits. A value other than f32 or bf16 is refused.
func TestComputeBF16Decodes(t *testing.T) {
	dir := t.TempDir()
	// Widths that are multiples of 128, as the CPU's bfloat16 GEMV takes them.
	p := synth.Preset{Name: "bf16", Vocab: 384, Hidden: 128, Intermediate: 256, Layers: 2, Heads: 4, KVHeads: 2, MaxPos: 256}
	_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 9})
	require.NoError(t, err)

	_, err = model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4", Compute: "fp8"})
	require.ErrorContains(t, err, `compute "fp8": want f32 or bf16`)

	decode := func(compute string) []float32 {
		m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4", Head: "nf4", Compute: compute})
		require.NoError(t, err)
		defer m.Release()
		want := engine.F32
		if compute == "bf16" {
			want = engine.BF16
		}
		require.NotEmpty(t, m.Quant)
		for name, q := range m.Quant {
			require.Equal(t, want, q.Compute, name)
		}
		c, err := m.NewCache(1, 16)
		require.NoError(t, err)
		defer c.Release()
		var all []float32
		for pos, id := range []int32{1, 17, 250, 3, 99, 42, 7, 300} {
			y, err := c.Step([]model.Seq{{Slot: 0, Pos: pos, IDs: []int32{id}}})
			require.NoError(t, err)
			all = append(all, y...)
		}
		return all
	}
	exact, bf := decode("f32"), decode("bf16")
	var num, den float64
	for i := range exact {
		d := float64(bf[i] - exact[i])
		num += d * d
		den += float64(exact[i]) * float64(exact[i])
	}
	rel := math.Sqrt(num / den)
	if gemm.HasBF16() {
		require.Greater(t, rel, 0.0, "bf16 compute changed nothing on a CPU with AVX512_BF16")
		require.Less(t, rel, 1e-2)
	} else {
		require.Zero(t, rel, "without AVX512_BF16 the allowance must leave the f32 path")
	}
	t.Logf("relative RMS difference of the logits, bf16 against f32 products: %.2g (bf16 kernel: %v)", rel, gemm.HasBF16())
}
