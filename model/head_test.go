package model_test

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/internal/reflm"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/quant"
)

// stepAll runs ids through a fresh cache of m from position 0 and returns every token's logits.
func stepAll(t *testing.T, m *model.Model, ids []int32) []float32 {
	t.Helper()
	c, err := m.NewCache(1, len(ids))
	require.NoError(t, err)
	defer c.Release()
	y, err := c.StepAll([]model.Seq{{Slot: 0, IDs: ids}})
	require.NoError(t, err)
	return y
}

// The generation head (LoadOptions.Head) is a copy of lm_head or of the tied embedding that only
// generation steps read: their logits are the float64 reference's with that matrix replaced by
// its bf16 (the default beside a 4-bit base), NF4 or FP4 round trip, while Logits (the graph training and eval use) keeps the loaded
// f32 matrix. Tied and untied, the base itself in NF4 as QLoRA loads it.
func TestGenerationHeadIsARoundTripOfTheOutputMatrix(t *testing.T) {
	for _, tied := range []bool{false, true} {
		for _, head := range []string{model.HeadAuto, "nf4", "fp4"} {
			t.Run(fmt.Sprintf("tied=%v/%s", tied, head), func(t *testing.T) {
				p := synth.Presets["tiny"]
				p.Tied = tied
				dir := t.TempDir()
				_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 5})
				require.NoError(t, err)
				cfg, err := model.LoadConfig(dir)
				require.NoError(t, err)
				const seq = 11
				ids := testIDs(cfg.VocabSize, seq)

				w := weights64(t, dir)
				ck, err := checkpoint.Open(dir)
				require.NoError(t, err)
				round := func(name string, typ quant.Type, dq bool) []float64 {
					v, shape, err := ck.Float32(name)
					require.NoError(t, err)
					q, err := quant.Quantize(v, shape, typ, 64, dq)
					require.NoError(t, err)
					d, err := q.Dequantize()
					require.NoError(t, err)
					out := make([]float64, len(d))
					for i, x := range d {
						out[i] = float64(x)
					}
					return out
				}
				for _, n := range ck.Names() {
					tt, _ := ck.Tensor(n)
					if checkpoint.ShouldQuantize(n, tt) {
						w[n] = round(n, quant.NF4, true)
					}
				}
				src := "lm_head.weight"
				if tied {
					src = "model.embed_tokens.weight"
				}
				raw := rawConfig(t, dir)
				wantLoaded := reflm.Logits(cfg, raw, w, ids, 1, seq)
				// The reference with an untied head holding the round trip (the tied embedding's
				// lookup keeps the loaded values).
				if head == model.HeadAuto { // bf16 beside a 4-bit base
					r := make([]float64, len(w[src]))
					for i, x := range w[src] {
						r[i] = float64(half.BF16ToFloat32(half.BF16(float32(x))))
					}
					w["lm_head.weight"] = r
				} else {
					typ, err := quant.ParseType(head)
					require.NoError(t, err)
					w["lm_head.weight"] = round(src, typ, false)
				}
				require.NoError(t, ck.Close())
				untied := *cfg
				untied.TieWordEmbeddings = false
				want := reflm.Logits(&untied, raw, w, ids, 1, seq)

				m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4", DoubleQuant: true, Head: head})
				require.NoError(t, err)
				defer m.Release()
				requireLogitsClose(t, want, stepAll(t, m, ids), 1e-4)
				got, err := m.Logits(ids, 1, nil)
				require.NoError(t, err)
				requireLogitsClose(t, wantLoaded, got, 1e-4)
				// The copy changed the logits: the check above is not of the loaded head.
				diff := 0.0
				for i := range want {
					diff = math.Max(diff, math.Abs(want[i]-wantLoaded[i]))
				}
				require.Greater(t, diff, 1e-3)
			})
		}
	}
}

// headError compares generation logits against the loaded head's on the real stories260K model
// (tied embedding, vocabulary 512): the relative RMS error and the share of positions whose
// top token agrees.
func headError(t *testing.T, dir string, head string, ids []int32) (rel, agree float64) {
	base, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4"})
	require.NoError(t, err)
	defer base.Release()
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4", Head: head})
	require.NoError(t, err)
	defer m.Release()
	want, got := stepAll(t, base, ids), stepAll(t, m, ids)
	V := base.Cfg.VocabSize
	var num, den float64
	same := 0
	for i := 0; i < len(ids); i++ {
		w, g := want[i*V:(i+1)*V], got[i*V:(i+1)*V]
		for j := range w {
			d := float64(g[j] - w[j])
			num += d * d
			den += float64(w[j]) * float64(w[j])
		}
		if argmax32(w) == argmax32(g) {
			same++
		}
	}
	return math.Sqrt(num / den), float64(same) / float64(len(ids))
}

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// On a real pretrained model the generation head in NF4 keeps the logits within a stated distance
// of the loaded f32 head's, and bf16 (the default beside a 4-bit base) within a far smaller one.
func TestGenerationHeadAccuracyOnStories260K(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	// The text: the model's own greedy continuation of BOS (natural text, where the top token
	// matters), and arbitrary tokens (flat distributions, where it flips most easily).
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	c, err := m.NewCache(1, 64)
	require.NoError(t, err)
	story := []int32{1}
	for len(story) < 64 {
		y, err := c.Step([]model.Seq{{Slot: 0, Pos: len(story) - 1, IDs: story[len(story)-1:]}})
		require.NoError(t, err)
		story = append(story, int32(argmax32(y)))
	}
	c.Release()
	m.Release()
	for _, c := range []struct {
		head                       string
		maxRel, minStory, minOther float64
	}{{"nf4", 0.06, 0.85, 0.7}, {model.HeadAuto, 0.005, 1, 0.95}} {
		for _, text := range []string{"story", "arbitrary"} {
			ids, minTop := story, c.minStory
			if text == "arbitrary" {
				ids, minTop = testIDs(512, 64), c.minOther
			}
			rel, agree := headError(t, dir, c.head, ids)
			t.Logf("head %s, %s tokens: logits' relative RMS error %.4f, top-1 agreement %.3f", c.head, text, rel, agree)
			require.Less(t, rel, c.maxRel, c.head)
			require.Greater(t, rel, 0.0, c.head)
			require.GreaterOrEqual(t, agree, minTop, c.head)
		}
	}
}

func TestLoadRefusesAnUnknownHead(t *testing.T) {
	_, err := model.Load(tinyModel(t, 1), cpu.New(), model.LoadOptions{Head: "int8"})
	require.ErrorContains(t, err, `head "int8"`)
}

// An adapter on lm_head applies on the generation head's copy: its change of the logits (LoRA on
// lm_head: s·B·A·h, whatever the head's weights) is the same with an NF4 copy as with the loaded
// head, through the fused layers (one adapter for the step) and the row-wise pool (each sequence
// its own).
func TestGenerationHeadTakesAnAdapter(t *testing.T) {
	dir := tinyModel(t, 9)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	ids := testIDs(cfg.VocabSize, 7)
	delta := func(head string, rowwise bool) []float32 {
		m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4", Head: head})
		require.NoError(t, err)
		defer m.Release()
		lc := peft.LoRAConfig()
		lc.R, lc.LoraAlpha, lc.TargetModules, lc.InitLoraWeights = 4, 8, peft.Names("lm_head"), false
		a, err := peft.New(lc, m.Cfg, m.Backend, 3)
		require.NoError(t, err)
		defer a.Release()
		c, err := m.NewCache(2, len(ids))
		require.NoError(t, err)
		defer c.Release()
		second := model.Adapter(a) // the same adapter on every row: its fused layers
		if rowwise {
			second = nil // a row without it: the row-wise pool
		}
		with, err := c.StepAll([]model.Seq{{Slot: 0, IDs: ids, Adapter: a}, {Slot: 1, IDs: ids, Adapter: second}})
		require.NoError(t, err)
		without, err := c.StepAll([]model.Seq{{Slot: 0, IDs: ids}, {Slot: 1, IDs: ids}})
		require.NoError(t, err)
		n := len(ids) * cfg.VocabSize
		d := make([]float32, n)
		for i := range d {
			d[i] = with[i] - without[i]
		}
		return d
	}
	for _, rowwise := range []bool{false, true} {
		want, got := delta(model.HeadBase, rowwise), delta("nf4", rowwise)
		scale := 0.0
		for _, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
		}
		require.Greater(t, scale, 1e-3, "the adapter changes the logits")
		for i := range want {
			require.InDelta(t, want[i], got[i], 1e-5*scale, "rowwise=%v [%d]", rowwise, i)
		}
	}
}
