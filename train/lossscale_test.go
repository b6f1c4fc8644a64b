package train

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/peft"
)

func TestLossScaleUpdate(t *testing.T) {
	ls, err := NewLossScale(3000, 2)
	require.NoError(t, err)
	require.Equal(t, 2048.0, ls.Scale, "rounded down to a power of two")
	ls.Update(false)
	require.Equal(t, 2048.0, ls.Scale)
	ls.Update(false)
	require.Equal(t, 4096.0, ls.Scale, "doubled after 2 clean steps")
	ls.Update(false)
	ls.Update(true)
	require.Equal(t, 2048.0, ls.Scale, "halved on overflow")
	require.Equal(t, 0, ls.Clean, "an overflow restarts the count")
	for range 100 {
		ls.Update(true)
	}
	require.Equal(t, minLossScale, ls.Scale)
	for _, bad := range []float64{0, 0.5, math.Inf(1), math.NaN()} {
		_, err := NewLossScale(bad, 10)
		require.Error(t, err, "%v", bad)
	}
	_, err = NewLossScale(8, 0)
	require.Error(t, err)
}

// adapterWeights trains cfg to the end, or loads the adapter saved in dir, and returns its weights.
func adapterWeights(t *testing.T, cfg Config, dir string) map[string][]float32 {
	t.Helper()
	tr, err := New(cfg, cpu.New())
	require.NoError(t, err)
	defer tr.Close()
	a, err := peft.Load(dir, tr.Model.Cfg, tr.Backend)
	require.NoError(t, err)
	out := map[string][]float32{}
	for _, p := range a.Params() {
		out[p.Key], err = p.Tensor.Float32()
		require.NoError(t, err)
	}
	return out
}

// Scales are powers of two: where nothing overflows, a loss-scaled run computes the unscaled run's
// adapter bit for bit, in one submission a step and with accumulated micro-batches, while its
// scale grows; and a run interrupted at a checkpoint resumes with its scale to the same weights.
func TestLossScalingIsExactAndResumes(t *testing.T) {
	for _, accum := range []int{1, 2} {
		cfg := fixture(t, "lora")
		cfg.Steps, cfg.GradAccum, cfg.Dropout, cfg.EvalFraction = 7, accum, 0.1, 0
		plain := cfg
		plain.Out = filepath.Join(t.TempDir(), "plain")
		train(t, plain, cpu.New())

		cfg.LossScale, cfg.LossScaleGrowth = 1024, 2
		straight := cfg
		straight.Out = filepath.Join(t.TempDir(), "straight")
		res := train(t, straight, cpu.New())
		require.Equal(t, 0, res.SkippedSteps)
		require.Equal(t, 1024.0*8, res.LossScale, "doubled every 2 clean steps: 3 times in 7")

		tr, err := New(cfg, cpu.New())
		require.NoError(t, err)
		for range 3 {
			_, err := tr.Step()
			require.NoError(t, err)
		}
		require.NoError(t, tr.checkpoint())
		tr.Close()
		ck, err := LoadCheckpoint(CheckpointDir(cfg.Out, 3))
		require.NoError(t, err)
		require.Equal(t, &LossScale{Scale: 2048, GrowthInterval: 2, Clean: 1}, ck.State.LossScale)
		cfg.Resume = true
		res = train(t, cfg, cpu.New())
		require.Equal(t, 3, res.ResumedFrom)
		require.Equal(t, 1024.0*8, res.LossScale)

		want := adapterWeights(t, cfg, plain.Out)
		require.Equal(t, want, adapterWeights(t, cfg, straight.Out), "grad_accum %d: scaled = unscaled", accum)
		require.Equal(t, want, adapterWeights(t, cfg, cfg.Out), "grad_accum %d: resumed = straight", accum)
	}
}

// A scale so large that the gradients overflow skips the step (the weights untouched) and halves
// the scale until they fit; then training goes on and the loss falls.
func TestLossScaleOverflowSkipsAndHalves(t *testing.T) {
	for _, accum := range []int{1, 2} {
		cfg := fixture(t, "lora")
		cfg.EvalFraction, cfg.GradAccum = 0, accum
		cfg.LossScale, cfg.LossScaleGrowth = math.Ldexp(1, 100), 1000
		tr, err := New(cfg, cpu.New())
		require.NoError(t, err)
		before := map[string][]float32{}
		for _, p := range tr.Adapter.Params() {
			before[p.Key], _ = p.Tensor.Float32()
		}
		m, err := tr.Step()
		require.NoError(t, err)
		require.True(t, m.Skipped, "Σg² of gradients scaled by 2¹⁰⁰ overflows f32")
		require.Equal(t, math.Ldexp(1, 99), tr.state.LossScale.Scale)
		for _, p := range tr.Adapter.Params() {
			after, _ := p.Tensor.Float32()
			require.Equal(t, before[p.Key], after, "%s untouched by the skipped step", p.Key)
		}
		skipped, first, last := 1, math.NaN(), math.NaN()
		for range 59 {
			m, err := tr.Step()
			require.NoError(t, err)
			if m.Skipped {
				skipped++
				continue
			}
			if math.IsNaN(first) {
				first = m.Loss
			}
			last = m.Loss
		}
		tr.Close()
		require.Less(t, skipped, 50)
		require.Less(t, tr.state.LossScale.Scale, math.Ldexp(1, 100))
		require.Less(t, last, 0.7*first, "grad_accum %d: trains once the scale fits (%d skipped)", accum, skipped)
	}
}

func TestPrecisionChecked(t *testing.T) {
	cfg := fixture(t, "lora")
	for _, c := range []struct {
		precision string
		paged     bool
		want      string
	}{{"f8", false, `precision "f8" is not f32, f16 or bf16`}, {"f16", true, "precision f16 needs loss scaling"}} {
		c2 := cfg
		c2.Precision, c2.PagedOptim = c.precision, c.paged
		_, err := New(c2, cpu.New())
		require.ErrorContains(t, err, c.want)
	}
	// f16 turns dynamic loss scaling on; bf16 (f32's range) does not.
	for p, scaled := range map[string]bool{"f16": true, "bf16": false} {
		c := cfg
		c.Precision = p
		tr, err := New(c, cpu.New())
		require.NoError(t, err)
		require.Equal(t, scaled, tr.state.LossScale != nil, p)
		tr.Close()
	}
	cfg.Precision = "f32"
	cfg.LossScale = 0.5
	_, err := New(cfg, cpu.New())
	require.ErrorContains(t, err, "loss_scale 0.5 must be 0 (off) or at least 1")
}
