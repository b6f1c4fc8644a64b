package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/synth"
)

// Quantization-aware gradient scaling (issue 15): do the per-layer gradient norms of a LoRA
// adapter on the NF4 base differ from those on the dense base at the start of training? On
// stories260K (a real pretrained model, hidden size 64), with the same adapter (A as initialised,
// B drawn so that A's gradients are not zero) and the same batches, NF4's norms are larger, most
// in the first layers (measured: ×1.13–1.19 in layers 0–1, ×1.01–1.08 in layers 2–4). They are not
// scaled back: AdamW divides each gradient by its own running RMS, so a per-layer constant factor
// changes its updates only through ε, and clipping scales every layer alike. The test logs the
// ratios and holds them to [0.75, 1.25], so that a change in how NF4 perturbs the gradients shows.
func TestNF4GradientNormsMatchDense(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), filepath.Join(dir, "model"))
	require.NoError(t, err)
	require.NoError(t, synth.WriteDataset(filepath.Join(dir, "data.jsonl"), synth.Stories, 7, 64))
	norms := map[string]map[string]float64{}
	for _, method := range []string{"lora", "qlora"} {
		cfg := DefaultConfig()
		cfg.Model, cfg.Data, cfg.Out, cfg.Method = filepath.Join(dir, "model"), filepath.Join(dir, "data.jsonl"), filepath.Join(dir, method), method
		cfg.Batch, cfg.Seq, cfg.GradAccum, cfg.Dropout, cfg.EvalFraction = 4, 96, 2, 0, 0
		tr, err := New(cfg, cpu.New())
		require.NoError(t, err)
		r := rand.New(rand.NewPCG(1, 2))
		for _, p := range tr.Adapter.Params() {
			v, err := p.Tensor.Float32()
			require.NoError(t, err)
			if regexp.MustCompile(`lora_B`).MatchString(p.Key) {
				for i := range v {
					v[i] = float32(r.NormFloat64() * 0.02)
				}
			}
			require.NoError(t, p.Tensor.SetFloat32(v))
		}
		sums := map[string]float64{}
		for range 3 {
			b := tr.batcher.Next()
			_, err := tr.step.Run(b, 0)
			require.NoError(t, err)
			for i, g := range tr.step.Grads {
				v, err := tr.step.Program.Float32(g)
				require.NoError(t, err)
				key := layerKey(tr.step.Params[i].Name)
				for _, x := range v {
					sums[key] += float64(x) * float64(x)
				}
			}
		}
		norms[method] = sums
		tr.Close()
	}
	keys := make([]string, 0, len(norms["lora"]))
	for k := range norms["lora"] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d, q := math.Sqrt(norms["lora"][k]), math.Sqrt(norms["qlora"][k])
		t.Logf("%-10s ‖∇‖ dense %.4g  nf4 %.4g  ratio %.3f", k, d, q, q/d)
		require.InDelta(t, 1, q/d, 0.25, fmt.Sprintf("%s: nf4 %.4g dense %.4g", k, q, d))
	}
}

// layerKey groups an adapter parameter by decoder layer and factor: "L3 lora_A".
func layerKey(name string) string {
	l := regexp.MustCompile(`layers\.(\d+)\.`).FindStringSubmatch(name)
	f := regexp.MustCompile(`lora_[AB]`).FindString(name)
	if l == nil {
		return "other " + f
	}
	return "L" + l[1] + " " + f
}
