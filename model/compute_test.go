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
// same bits. "i8" likewise with 8-bit products allowed too (a 16-bit layer takes bf16), within
// 8-bit rounding where the CPU has AVX512_VNNI or AVX512_BF16. Any other value is refused.
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
	require.ErrorContains(t, err, `compute "fp8": want f32, bf16 or i8`)

	head := model.HeadBase
	if quantize != "" {
		head = "nf4"
	}
	// 20 tokens: the prompt runs the GEMMs of more than 16 rows.
	ids := []int32{1, 17, 250, 3, 99, 42, 7, 300, 11, 260, 5, 77, 190, 2, 64, 333, 8, 120, 45, 210}
	decode := func(compute string) []float32 {
		m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: quantize, Head: head, Compute: compute})
		require.NoError(t, err)
		defer m.Release()
		want, want16 := map[string]engine.DType{"f32": engine.F32, "bf16": engine.BF16, "i8": engine.I8}[compute], engine.BF16
		if compute == "f32" {
			want16 = engine.F32
		}
		for name, q := range m.Quant {
			require.Equal(t, want, q.Compute, name)
		}
		if quantize == "" {
			require.Empty(t, m.Quant)
			for _, l := range m.Declare(engine.NewGraph()).Layers {
				require.Equal(t, engine.BF16, l.Q.W.DType())
				require.Equal(t, want16, l.Q.Compute)
			}
		}
		all := stepAll(t, m, ids) // the prompt: GEMMs
		c, err := m.NewCache(1, 32)
		require.NoError(t, err)
		defer c.Release()
		for pos, id := range ids { // decoding: GEMVs
			y, err := c.Step([]model.Seq{{Slot: 0, Pos: pos, IDs: []int32{id}}})
			require.NoError(t, err)
			all = append(all, y...)
		}
		return all
	}
	exact := decode("f32")
	for _, compute := range []string{"bf16", "i8"} {
		got := decode(compute)
		var num, den float64
		for i := range exact {
			d := float64(got[i] - exact[i])
			num += d * d
			den += float64(exact[i]) * float64(exact[i])
		}
		rel := math.Sqrt(num / den)
		taken, bound := gemm.HasBF16(), 1e-2
		if compute == "i8" {
			taken, bound = gemm.HasBF16() || (gemm.HasI8() && quantize != ""), 2e-2
		}
		if taken {
			require.Greater(t, rel, 0.0, "%s compute changed nothing on a CPU whose kernels take it", compute)
			require.Less(t, rel, bound, compute)
		} else {
			require.Zero(t, rel, "without the CPU's kernels the %s allowance must leave the f32 path", compute)
		}
		t.Logf("relative RMS difference of the logits, %s against f32 products: %.2g (taken: %v)", compute, rel, taken)
	}
}
