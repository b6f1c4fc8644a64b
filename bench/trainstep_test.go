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
			// The memory table: AdamW, 8-bit, and both paged; 8-bit holds about a quarter of
			// the state; paged on a GPU holds one layer's (the tiny model has 2), on the CPU all.
			require.Len(t, m.Memory, 4)
			f32, q8, paged, paged8 := m.Memory[0], m.Memory[1], m.Memory[2], m.Memory[3]
			for _, r := range m.Memory {
				require.Equal(t, r.Weights+r.Adapters+r.State+r.Gradients+r.Activations, r.Floor, r.Optimizer)
				require.GreaterOrEqual(t, r.Peak, r.Floor, r.Optimizer)
			}
			require.Equal(t, 2*f32.Adapters, f32.State)
			require.InDelta(t, 0.25, float64(q8.State)/float64(f32.State), 0.05)
			if name == "cpu" {
				require.Equal(t, f32, MemoryRow{Optimizer: f32.Optimizer, Weights: paged.Weights, Adapters: paged.Adapters, State: paged.State,
					Gradients: paged.Gradients, Activations: paged.Activations, Floor: paged.Floor, Peak: paged.Peak})
			} else {
				require.Equal(t, f32.State, paged.HostState)
				require.Equal(t, f32.State/2, paged.State)
				require.Equal(t, 2*paged.HostState, paged.Moved)
				require.Equal(t, 2*paged8.HostState, paged8.Moved)
			}
		}
	}
}

// The reference's training step lands beside lathe's: same shapes (the case id), ratio of the
// step times, tokens/s, and how torch ran; the markdown report says it.
func TestTrainReferenceRatio(t *testing.T) {
	r := fakeReport()
	shape := TrainShape{Hidden: 2048, Intermediate: 8192, Heads: 32, KVHeads: 8, Layers: 2, Vocab: 8192}
	r.Backends[0].Train = []TrainResult{
		{Method: "lora", Batch: 1, Seq: 256, Rank: 16, Shape: shape, StepTime: Stats{Median: 2}, TokensPerSec: 128},
		{Method: "qlora", Batch: 1, Seq: 256, Rank: 16, Shape: shape, StepTime: Stats{Median: 2}, TokensPerSec: 128},
	}
	lora := r.Backends[0].Train[0]
	r.Reference = &ReferenceReport{Python: "python3", Runs: []ReferenceRun{{Device: "cpu", Cases: map[string]RefCase{
		trainRefID(lora): {Median: 3, Impl: "LoRA by hand over a dense oneDNN float32 base"}}}}}
	applyReference(r)
	got := r.Backends[0].Train
	require.InDelta(t, 1.5, got[0].RefRatio, 1e-12)
	require.InDelta(t, 256.0/3, got[0].RefTokensPerSec, 1e-9)
	require.Equal(t, "LoRA by hand over a dense oneDNN float32 base", got[0].RefImpl)
	require.Zero(t, got[1].RefRatio, "qlora was not measured by the reference")
	require.NotEqual(t, trainRefID(got[0]), trainRefID(got[1]))
	md := r.Markdown()
	require.Contains(t, md, "lora training step beside PyTorch")
	require.Contains(t, md, "ratio 1.50×")
}
