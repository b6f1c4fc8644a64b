package train

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
)

// precisionCurves trains cfg at f32, f16 and bf16 on b and returns each run's per-step losses and
// the activation bytes of its step (train.Memory).
func precisionCurves(t *testing.T, cfg Config, b engine.Backend) (map[string][]float64, map[string]int64) {
	curves, acts := map[string][]float64{}, map[string]int64{}
	for _, p := range []string{"f32", "f16", "bf16"} {
		c := cfg
		c.Precision, c.Out = p, filepath.Join(t.TempDir(), p)
		res := train(t, c, b)
		steps, _, err := ReadMetrics(filepath.Join(c.Out, "metrics.jsonl"))
		require.NoError(t, err)
		require.Len(t, steps, cfg.Steps)
		for _, s := range steps {
			require.False(t, s.Skipped, "%s: step %d skipped (loss scale overflow)", p, s.Step)
			curves[p] = append(curves[p], s.Loss)
		}
		tr, err := New(c, b)
		require.NoError(t, err)
		acts[p] = tr.Memory().Activations
		tr.Close()
		t.Logf("%s on %s: loss %.4f → %.4f, activations %d bytes", p, res.Device, res.LossStart, res.LossEnd, acts[p])
	}
	return curves, acts
}

// requireFollows checks that a 16-bit run's loss curve follows f32's: every step within tol of
// f32's loss, relative. The forward pass is f32 in both (only the activations kept for the
// backward pass are rounded), so the curves part only through the gradients' rounding.
func requireFollows(t *testing.T, curves map[string][]float64, p string, tol float64) {
	worst := 0.0
	for i, want := range curves["f32"] {
		d := math.Abs(curves[p][i]-want) / want
		worst = math.Max(worst, d)
		require.LessOrEqual(t, d, tol, "%s: step %d loss %.5f, f32 %.5f", p, i+1, curves[p][i], want)
	}
	t.Logf("%s: largest relative step-loss difference to f32 %.2g (bound %g)", p, worst, tol)
}

// --precision f16 and bf16 on the demo task (QLoRA on the facts data) on the CPU: the loss curves
// follow f32's, and the step's activations take less memory.
func TestPrecisionFollowsF32OnCPU(t *testing.T) {
	cfg := fixture(t, "qlora")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.EvalFraction = 30, 4, 48, 5, 0
	curves, acts := precisionCurves(t, cfg, cpu.New())
	requireFollows(t, curves, "f16", 2e-3)
	requireFollows(t, curves, "bf16", 1e-2)
	require.Less(t, curves["f16"][len(curves["f16"])-1], 0.7*curves["f16"][0], "f16 trains")
	for _, p := range []string{"f16", "bf16"} {
		require.Less(t, float64(acts[p]), 0.8*float64(acts["f32"]), "%s activations against f32's", p)
	}
}

// The same on WebGPU (lavapipe: shader-f16, so f16 also runs the f16-arithmetic matmul).
func TestPrecisionFollowsF32OnWebGPU(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	cfg := fixture(t, "qlora")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.EvalFraction = 12, 2, 32, 3, 0
	curves, acts := precisionCurves(t, cfg, gpu)
	requireFollows(t, curves, "f16", 2e-3)
	requireFollows(t, curves, "bf16", 1e-2)
	for _, p := range []string{"f16", "bf16"} {
		require.Less(t, float64(acts[p]), 0.8*float64(acts["f32"]), "%s activations against f32's", p)
	}
}
