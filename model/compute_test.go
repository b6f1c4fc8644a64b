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
	t.Run("nf4", func(t *testing.T) { checkComputeBF16(t, "F32", "nf4") })
	t.Run("bf16", func(t *testing.T) { checkComputeBF16(t, "BF16", "") })
}

// checkComputeBF16 writes a checkpoint in dtype, loads it with quantize (and the head "nf4" when
// quantized) in f32 and bf16 compute, and compares a prompt's logits (the GEMM paths) and each
// decoding step's (the GEMVs).
func checkComputeBF16(t *testing.T, dtype, quantize string) {
	dir := t.TempDir()
	// Widths that are multiples of 128, as the CPU's bfloat16 GEMV takes them.
	p := synth.Preset{Name: "bf16", Vocab: 384, Hidden: 128, Intermediate: 256, Layers: 2, Heads: 4, KVHeads: 2, MaxPos: 256}
	_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 9, DType: dtype})
	require.NoError(t, err)

	_, err = model.Load(dir, cpu.New(), model.LoadOptions{Quantize: quantize, Compute: "fp8"})
	require.ErrorContains(t, err, `compute "fp8": want f32 or bf16`)

	head := model.HeadBase
	if quantize != "" {
		head = "nf4"
	}
	ids := []int32{1, 17, 250, 3, 99, 42, 7, 300}
	decode := func(compute string) []float32 {
		m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: quantize, Head: head, Compute: compute})
		require.NoError(t, err)
		defer m.Release()
		want := engine.F32
		if compute == "bf16" {
			want = engine.BF16
		}
		for name, q := range m.Quant {
			require.Equal(t, want, q.Compute, name)
		}
		if quantize == "" {
			require.Empty(t, m.Quant)
			for _, l := range m.Declare(engine.NewGraph()).Layers {
				require.Equal(t, engine.BF16, l.Q.W.DType())
				require.Equal(t, want, l.Q.Compute)
			}
		}
		all := stepAll(t, m, ids) // the prompt: GEMMs
		c, err := m.NewCache(1, 16)
		require.NoError(t, err)
		defer c.Release()
		for pos, id := range ids { // decoding: GEMVs
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
