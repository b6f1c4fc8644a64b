package bench

import (
	"context"
	"path/filepath"
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
	bases16 := map[string]string{}
	for _, dt := range []string{"BF16", "F16"} {
		bases16[dt] = filepath.Join(t.TempDir(), dt)
		_, err := synth.Write(bases16[dt], synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: dt})
		require.NoError(t, err)
	}
	for name, be := range map[string]engine.Backend{"cpu": cpu.New(), "webgpu": testdevice.WebGPU(t)} {
		for _, method := range []string{"lora", "qlora"} {
			m, err := TrainStep(context.Background(), be, TrainRequest{Method: method, ModelDir: dir, Batch: 1, Seq: 16, Rank: 4, Warmup: 1, Steps: 2, Bases16: bases16})
			require.NoError(t, err, "%s %s", name, method)
			require.Equal(t, 1.0, m.Submissions, "%s %s: submissions a step", name, method)
			require.Equal(t, 1.0, m.Reads, "%s %s: host reads a step", name, method)
			require.Greater(t, m.Launches, 20.0, "%s %s", name, method)
			require.Len(t, m.StepSeconds, 2)
			t.Logf("%s %s: %g launches a step", name, method, m.Launches)
			// The memory table: AdamW, 8-bit, and both paged; 8-bit holds about a quarter of
			// the state; paged on a GPU holds two layers' (all of the tiny model's 2), on the CPU
			// all. LoRA adds AdamW over a bf16 and an f16 base: half the weights (the norms stay
			// f32), the same adapter and state.
			base := map[string]string{"lora": "f32", "qlora": "nf4"}[method]
			if method == "lora" {
				require.Len(t, m.Memory, 6)
				for _, r := range m.Memory[4:] {
					f := m.Memory[0]
					require.Equal(t, "adamw", r.Optimizer)
					require.Greater(t, r.Weights, f.Weights/2, r.Base)
					require.Less(t, r.Weights, f.Weights*51/100, r.Base)
					require.Equal(t, f.Adapters, r.Adapters, r.Base)
					require.Equal(t, f.State, r.State, r.Base)
					require.Equal(t, r.Weights+r.Adapters+r.State+r.Gradients+r.Activations, r.Floor, r.Base)
				}
				require.Equal(t, []string{"bf16", "f16"}, []string{m.Memory[4].Base, m.Memory[5].Base})
				m.Memory = m.Memory[:4]
			}
			require.Len(t, m.Memory, 4)
			f32, q8, paged, paged8 := m.Memory[0], m.Memory[1], m.Memory[2], m.Memory[3]
			for _, r := range m.Memory {
				require.Equal(t, base, r.Base)
			}
			for _, r := range m.Memory {
				require.Equal(t, r.Weights+r.Adapters+r.State+r.Gradients+r.Activations, r.Floor, r.Optimizer)
				require.GreaterOrEqual(t, r.Peak, r.Floor, r.Optimizer)
			}
			require.Equal(t, 2*f32.Adapters, f32.State)
			require.InDelta(t, 0.25, float64(q8.State)/float64(f32.State), 0.05)
			if name == "cpu" {
				require.Equal(t, f32, MemoryRow{Base: base, Optimizer: f32.Optimizer, Weights: paged.Weights, Adapters: paged.Adapters, State: paged.State,
					Gradients: paged.Gradients, Activations: paged.Activations, Floor: paged.Floor, Peak: paged.Peak})
			} else {
				require.Equal(t, f32.State, paged.HostState)
				require.Equal(t, f32.State, paged.State, "two layers' staging: all of the tiny model's")
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

// The markdown report's memory table names each row's base and optimizer.
func TestMemoryTableMarkdown(t *testing.T) {
	r := fakeReport()
	r.Backends[0].Train = []TrainResult{{Method: "lora", Batch: 1, Seq: 16, Rank: 4, StepTime: Stats{Median: 1}, Memory: []MemoryRow{
		{Base: "f32", Optimizer: "adamw", Weights: 4 << 20, Adapters: 1 << 20, State: 2 << 20, Gradients: 1 << 20, Activations: 2 << 20, Floor: 10 << 20, Peak: 11 << 20},
		{Base: "bf16", Optimizer: "adamw", Weights: 2 << 20, Adapters: 1 << 20, State: 2 << 20, Gradients: 1 << 20, Activations: 2 << 20, Floor: 8 << 20, Peak: 9 << 20},
	}}}
	md := r.Markdown()
	require.Contains(t, md, "| base | optimizer | weights |")
	require.Contains(t, md, "| f32 | adamw | 4.00 | 1.00 | 2.00 | 1.00 | 2.00 | 10.00 | 11.00 | 1.10× |")
	require.Contains(t, md, "| bf16 | adamw | 2.00 | 1.00 | 2.00 | 1.00 | 2.00 | 8.00 | 9.00 | 1.12× |")
}
