package bench

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model/synth"
)

// lathe bench's training step is one submission and one host read on every backend, whatever the
// number of its launches.
func TestTrainStepSubmissions(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1})
	require.NoError(t, err)
	for name, be := range map[string]engine.Backend{"cpu": cpu.New(), "webgpu": testdevice.WebGPU(t)} {
		for _, method := range []string{"lora", "qlora"} {
			m, err := TrainStep(context.Background(), be, TrainRequest{Method: method, ModelDir: dir, Batch: 1, Seq: 16, Rank: 4, Warmup: 1, Steps: 2})
			require.NoError(t, err, "%s %s", name, method)
			require.Equal(t, 1.0, m.Submissions, "%s %s: submissions a step", name, method)
			require.Equal(t, 1.0, m.Reads, "%s %s: host reads a step", name, method)
			require.Greater(t, m.Launches, 20.0, "%s %s", name, method)
			require.Len(t, m.StepSeconds, 2)
			t.Logf("%s %s: %g launches a step", name, method, m.Launches)
		}
	}
}
