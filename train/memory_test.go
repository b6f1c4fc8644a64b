package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/quant"
)

// llama1B2 is Llama-3.2-1B's shape (hidden 2048, MLP 8192, 32 heads over 8 KV heads of 64,
// 128256 tokens, tied embeddings) with 2 decoder layers.
func llama1B2() *model.Config {
	return &model.Config{Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama", VocabSize: 128256,
		HiddenSize: 2048, IntermediateSize: 8192, NumLayers: 2, NumHeads: 32, NumKVHeads: 8, HeadDim: 64,
		RMSNormEps: 1e-5, RopeTheta: 500000, MaxPositionEmbeddings: 131072, TieWordEmbeddings: true, HiddenAct: "silu"}
}

// planQLoRA compiles (without running or allocating) a QLoRA training step of a model of cfg's
// shape: NF4 linear layers, a rank-16 LoRA on every linear layer, the optimizer in the step.
func planQLoRA(t *testing.T, cfg *model.Config, rows, seq int, recompute bool, ocfg AdamWConfig) Memory {
	b := cpu.New()
	m := &model.Model{Cfg: cfg, Backend: b, Quant: map[string]*engine.QuantSpec{}}
	var weights int64
	for _, l := range model.NewGraph(cfg, engine.NewGraph(), func(string, int, int) *engine.QuantSpec { return nil }).Linears() {
		q := &engine.QuantSpec{Type: quant.NF4, Blocksize: 64, N: l.Out, K: l.In}
		m.Quant[l.Name] = q
		weights += int64(l.Out*l.In/2) + int64(l.Out*l.In/64) // codes and f32 scales (no double quantization)
	}
	weights += int64(cfg.VocabSize*cfg.HiddenSize*4) + int64((2*cfg.NumLayers+1)*cfg.HiddenSize*4) // embedding, norms
	lc := peft.LoRAConfig()
	lc.R, lc.LoraAlpha, lc.LoraDropout, lc.TargetModules = 16, 32, 0.05, peft.Modules{Pattern: peft.AllLinear}
	a, err := peft.New(lc, cfg, b, 1)
	require.NoError(t, err)
	defer a.Release()
	opt, err := NewAdamW(b, AdapterParams(a), ocfg)
	require.NoError(t, err)
	defer opt.Close()
	s, err := NewTrainStep(m, a, rows, seq, recompute, opt)
	require.NoError(t, err)
	defer s.Close()
	return s.Memory(weights)
}

// The executor's buffer plan for a 2-layer Llama-3.2-1B-shaped QLoRA step stays within 1.2× the
// floor, for the whole step and for the planned buffers alone (activations and gradients against
// their ideal reuse), with and without gradient checkpointing.
func TestQLoRAStepPlanNearTheFloor(t *testing.T) {
	for _, recompute := range []bool{false, true} {
		mem := planQLoRA(t, llama1B2(), 1, 512, recompute, DefaultAdamW())
		t.Logf("recompute %v: %s", recompute, mem)
		planned := mem.Peak - mem.Weights - mem.Adapters - mem.Optimizer
		floor := mem.Gradients + mem.Activations
		t.Logf("planned buffers %s against their floor %s: %.3f×", byteSize(planned), byteSize(floor), float64(planned)/float64(floor))
		require.LessOrEqual(t, mem.Ratio(), 1.2)
		require.LessOrEqual(t, float64(planned)/float64(floor), 1.2)
		require.Greater(t, mem.Activations, mem.Gradients, "the activations are accounted")
	}
}

// A run reports its memory: the parts add up to the floor, the optimizer part is the optimizer's
// state (a quarter with 8 bits, about), and with gradient accumulation the sums count as
// gradients.
func TestRunReportsMemory(t *testing.T) {
	for _, c := range []struct {
		optim string
		accum int
	}{{OptimAdamW, 1}, {OptimAdamW8bit, 1}, {OptimAdamW, 2}} {
		cfg := fixture(t, "qlora")
		cfg.Steps, cfg.Optim, cfg.GradAccum = 2, c.optim, c.accum
		res := train(t, cfg, cpu.New())
		m := res.Memory
		t.Logf("%s, accumulating %d: %s", c.optim, c.accum, m)
		require.Equal(t, m.Weights+m.Adapters+m.Optimizer+m.Gradients+m.Activations, m.Floor)
		require.Equal(t, res.WeightBytes, m.Weights)
		require.Positive(t, m.Activations)
		require.GreaterOrEqual(t, m.Peak, m.Floor)
		require.LessOrEqual(t, m.Ratio(), 1.2)
		want := int64(8 * res.Params)
		if c.optim == OptimAdamW8bit {
			require.InDelta(t, 0.25, float64(m.Optimizer)/float64(want), 0.03)
		} else {
			require.Equal(t, want, m.Optimizer)
		}
		require.Equal(t, int64(4*res.Params*int64(c.accum)), m.Gradients, "gradients, and their sums when accumulating")
	}
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"4GiB": 4 << 30, "512MB": 512e6, "1.5 kib": 1536, "100": 100, "2tb": 2e12, "7B": 7} {
		got, err := ParseBytes(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	for _, s := range []string{"", "GiB", "-1GiB", "0", "4 parsecs", "NaN", "1e30TB"} {
		_, err := ParseBytes(s)
		require.Error(t, err, s)
	}
}

// --max-memory picks gradient checkpointing and a smaller micro-batch until the step fits, and
// trains with them; a bound below the weights fails before the first step with the bytes needed.
func TestMaxMemoryFitsTheStep(t *testing.T) {
	cfg := fixture(t, "qlora")
	cfg.Steps, cfg.Batch, cfg.Seq = 20, 4, 48
	tr, err := New(cfg, cpu.New())
	require.NoError(t, err)
	full := tr.Memory()
	tr.Close()

	// Just below the whole batch's plan: a cheaper one is chosen, same rows a step.
	c := cfg
	c.MaxMemory = fmt.Sprint(full.Peak - 1)
	c.Out = filepath.Join(t.TempDir(), "fit")
	tr, err = New(c, cpu.New())
	require.NoError(t, err)
	defer tr.Close()
	mem := tr.Memory()
	t.Logf("whole batch: %s; under %d bytes: micro-batch %d × %d, checkpointing %v: %s", full, full.Peak-1,
		tr.Cfg.Batch, tr.Cfg.GradAccum, tr.Cfg.Recompute, mem)
	require.LessOrEqual(t, mem.Peak, full.Peak-1)
	require.Equal(t, cfg.Batch*cfg.GradAccum, tr.Cfg.Batch*tr.Cfg.GradAccum, "the rows of a step are kept")
	require.True(t, tr.Cfg.Recompute || tr.Cfg.Batch < cfg.Batch)
	res, err := tr.Run(context.Background(), nil)
	require.NoError(t, err)
	require.Less(t, res.LossEnd, 0.8*res.LossStart, "the loss falls")
	require.LessOrEqual(t, res.Memory.Peak, full.Peak-1)

	// Below the weights nothing fits.
	c.MaxMemory, c.Out = fmt.Sprint(full.Weights), filepath.Join(t.TempDir(), "none")
	_, err = New(c, cpu.New())
	require.ErrorContains(t, err, fmt.Sprintf("max_memory %d (%d bytes) is too small: the smallest plan (micro-batch 1, gradient checkpointing) needs", full.Weights, full.Weights))
	_, statErr := os.Stat(filepath.Join(c.Out, "metrics.jsonl"))
	require.True(t, os.IsNotExist(statErr), "no step ran")
}
