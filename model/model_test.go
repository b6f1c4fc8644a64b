package model_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/reflm"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/quant"
)

// weights64 reads every float tensor of a folder as float64 (what the reference consumes).
func weights64(t *testing.T, dir string) map[string][]float64 {
	w, err := reflm.Weights(dir)
	require.NoError(t, err)
	return w
}

// logits runs the model in dir on backend b.
func logits(t *testing.T, b engine.Backend, dir string, o model.LoadOptions, ids []int32, batch, seq int) []float32 {
	m, err := model.Load(dir, b, o)
	require.NoError(t, err)
	defer m.Release()
	require.Len(t, ids, batch*seq)
	y, err := m.Logits(ids, batch, nil)
	require.NoError(t, err)
	return y
}

func requireLogitsClose(t *testing.T, want []float64, got []float32, tol float64) {
	t.Helper()
	require.Len(t, got, len(want))
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		require.InDelta(t, want[i], float64(got[i]), tol*scale, "logit %d", i)
	}
}

func testIDs(vocab, n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % vocab)
	}
	return ids
}

// editFolder rewrites a synth folder: cfg edits config.json, tensors may add or change tensors.
func editFolder(t *testing.T, dir string, cfgEdit func(map[string]any), tensorEdit func(map[string]checkpoint.Tensor)) {
	cfg, err := checkpoint.ReadConfig(dir)
	require.NoError(t, err)
	cfgEdit(cfg)
	require.NoError(t, checkpoint.WriteConfig(filepath.Join(dir, "config.json"), cfg))
	if tensorEdit == nil {
		return
	}
	ck, err := checkpoint.Open(dir)
	require.NoError(t, err)
	ts := map[string]checkpoint.Tensor{}
	for _, n := range ck.Names() {
		tt, _ := ck.Tensor(n)
		ts[n] = checkpoint.Tensor{DType: tt.DType, Shape: tt.Shape, Data: append([]byte(nil), tt.Data...)}
	}
	require.NoError(t, ck.Close())
	tensorEdit(ts)
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}))
}

func randTensor(shape []int, seed int) checkpoint.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Sin(float64(i*31+seed))) * 0.1
	}
	return checkpoint.FromFloat32(v, shape)
}

// tinyModel writes the tiny synthetic model with seed into a temporary folder.
func tinyModel(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: seed})
	require.NoError(t, err)
	return dir
}

// compareWithReference checks the CPU backend's logits of the model in dir against reflm.Logits.
func compareWithReference(t *testing.T, dir string, batch, seq int) {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	ids := testIDs(cfg.VocabSize, batch*seq)
	requireLogitsClose(t, reflm.Logits(cfg, rawConfig(t, dir), weights64(t, dir), ids, batch, seq), logits(t, cpu.New(), dir, model.LoadOptions{}, ids, batch, seq), 1e-4)
}

func TestLogitsMatchTheHuggingFaceEquations(t *testing.T) {
	b := cpu.New()
	const batch, seq = 2, 7
	t.Run("llama", func(t *testing.T) {
		dir := t.TempDir()
		_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 5})
		require.NoError(t, err)
		cfg, err := model.LoadConfig(dir)
		require.NoError(t, err)
		ids := testIDs(cfg.VocabSize, batch*seq)
		requireLogitsClose(t, reflm.Logits(cfg, rawConfig(t, dir), weights64(t, dir), ids, batch, seq), logits(t, b, dir, model.LoadOptions{}, ids, batch, seq), 1e-4)
	})
	t.Run("llama-attention-bias", func(t *testing.T) {
		dir := t.TempDir()
		_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 9, Bias: true})
		require.NoError(t, err)
		cfg, err := model.LoadConfig(dir)
		require.NoError(t, err)
		require.True(t, cfg.AttentionBias)
		ids := testIDs(cfg.VocabSize, batch*seq)
		requireLogitsClose(t, reflm.Logits(cfg, rawConfig(t, dir), weights64(t, dir), ids, batch, seq), logits(t, b, dir, model.LoadOptions{}, ids, batch, seq), 1e-4)
	})
	t.Run("qwen2-tied-llama3-rope-bf16", func(t *testing.T) {
		dir := t.TempDir()
		p := synth.Presets["tiny"]
		_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 6, DType: "BF16"})
		require.NoError(t, err)
		hd := p.Hidden / p.Heads
		editFolder(t, dir, func(c map[string]any) {
			c["architectures"] = []string{"Qwen2ForCausalLM"}
			c["model_type"] = "qwen2"
			c["tie_word_embeddings"] = true
			c["rope_theta"] = 500000.0
			c["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
		}, func(ts map[string]checkpoint.Tensor) {
			delete(ts, "lm_head.weight")
			for l := 0; l < p.Layers; l++ {
				pre := fmt.Sprintf("model.layers.%d.self_attn.", l)
				ts[pre+"q_proj.bias"] = randTensor([]int{p.Heads * hd}, l)
				ts[pre+"k_proj.bias"] = randTensor([]int{p.KVHeads * hd}, l+1)
				ts[pre+"v_proj.bias"] = randTensor([]int{p.KVHeads * hd}, l+2)
			}
		})
		cfg, err := model.LoadConfig(dir)
		require.NoError(t, err)
		require.True(t, cfg.IsQwen2())
		ids := testIDs(cfg.VocabSize, batch*seq)
		requireLogitsClose(t, reflm.Logits(cfg, rawConfig(t, dir), weights64(t, dir), ids, batch, seq), logits(t, b, dir, model.LoadOptions{}, ids, batch, seq), 1e-4)
	})
}

func TestQuantizedLoadsMatchDequantizedReference(t *testing.T) {
	b := cpu.New()
	const batch, seq = 1, 9
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	_, err := synth.Write(src, synth.Options{Preset: synth.Presets["tiny"], Seed: 8})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(src)
	require.NoError(t, err)
	ids := testIDs(cfg.VocabSize, batch*seq)

	// Reference: every linear weight replaced by its NF4 (double-quantized) round trip.
	w := weights64(t, src)
	ck, err := checkpoint.Open(src)
	require.NoError(t, err)
	for _, n := range ck.Names() {
		tt, _ := ck.Tensor(n)
		if !checkpoint.ShouldQuantize(n, tt) {
			continue
		}
		v, shape, err := ck.Float32(n)
		require.NoError(t, err)
		q, err := quant.Quantize(v, shape, quant.NF4, 64, true)
		require.NoError(t, err)
		dq, err := q.Dequantize()
		require.NoError(t, err)
		for i, x := range dq {
			w[n][i] = float64(x)
		}
	}
	require.NoError(t, ck.Close())
	want := reflm.Logits(cfg, rawConfig(t, src), w, ids, batch, seq)

	atLoad := logits(t, b, src, model.LoadOptions{Quantize: "nf4", DoubleQuant: true}, ids, batch, seq)
	requireLogitsClose(t, want, atLoad, 1e-4)

	pre := filepath.Join(dir, "nf4")
	_, err = checkpoint.QuantizeFolder(src, pre, checkpoint.QuantizeOptions{Type: quant.NF4, DoubleQuant: true})
	require.NoError(t, err)
	require.Equal(t, atLoad, logits(t, b, pre, model.LoadOptions{}, ids, batch, seq), "a bitsandbytes folder loads to the same weights as quantizing at load")
}

func TestLoadErrorsNameTheFileAndTensor(t *testing.T) {
	b := cpu.New()
	fresh := func(t *testing.T) string {
		dir := t.TempDir()
		_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 2})
		require.NoError(t, err)
		return dir
	}
	t.Run("missing tensor", func(t *testing.T) {
		dir := fresh(t)
		editFolder(t, dir, func(map[string]any) {}, func(ts map[string]checkpoint.Tensor) { delete(ts, "model.layers.1.mlp.up_proj.weight") })
		_, err := model.Load(dir, b, model.LoadOptions{})
		require.ErrorContains(t, err, "model.safetensors: missing tensor model.layers.1.mlp.up_proj.weight")
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir := fresh(t)
		editFolder(t, dir, func(map[string]any) {}, func(ts map[string]checkpoint.Tensor) {
			ts["model.norm.weight"] = randTensor([]int{63}, 1)
		})
		_, err := model.Load(dir, b, model.LoadOptions{})
		require.ErrorContains(t, err, "tensor model.norm.weight has shape [63], the config needs [64]")
	})
	t.Run("unknown architecture", func(t *testing.T) {
		dir := fresh(t)
		editFolder(t, dir, func(c map[string]any) { c["architectures"] = []string{"GPT2LMHeadModel"} }, nil)
		_, err := model.Load(dir, b, model.LoadOptions{})
		require.ErrorContains(t, err, "config.json: unknown architecture \"GPT2LMHeadModel\"")
	})
	t.Run("corrupt safetensors header", func(t *testing.T) {
		dir := fresh(t)
		path := filepath.Join(dir, "model.safetensors")
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		copy(raw[8:], []byte(`[[[[`))
		require.NoError(t, os.WriteFile(path, raw, 0o644))
		_, err = model.Load(dir, b, model.LoadOptions{})
		require.ErrorContains(t, err, "model.safetensors: corrupt header")
	})
	t.Run("bad quantization", func(t *testing.T) {
		_, err := model.Load(fresh(t), b, model.LoadOptions{Quantize: "int3"})
		require.ErrorContains(t, err, "int3")
	})
	// Counts from config.json are checked against bounds and the tensors present before
	// anything is built: a million layers is refused at once, in little memory.
	for _, c := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"a million layers", func(c map[string]any) { c["num_hidden_layers"] = 1000000 }, "num_hidden_layers 1000000 is outside [1, 1024]"},
		{"more layers than present", func(c map[string]any) { c["num_hidden_layers"] = 900 }, "config.json's num_hidden_layers is 900, the checkpoint has 2 layers"},
		{"fewer layers than present", func(c map[string]any) { c["num_hidden_layers"] = 1 }, "the checkpoint has 2 layers"},
		{"huge vocabulary", func(c map[string]any) { c["vocab_size"] = 1 << 40 }, "vocab_size 1099511627776 is outside [1, 4194304]"},
		{"vocabulary not the embedding's", func(c map[string]any) { c["vocab_size"] = 1000 }, "vocab_size 1000 and hidden_size 64 need [1000 64]"},
		{"negative heads", func(c map[string]any) { c["num_key_value_heads"] = -2 }, "num_key_value_heads -2 is outside [1, 1024]"},
		{"huge context", func(c map[string]any) { c["max_position_embeddings"] = 1 << 30 }, "max_position_embeddings 1073741824 is outside [0, 16777216]"},
		{"huge head dim", func(c map[string]any) { c["head_dim"] = 1 << 20 }, "head_dim 1048576 is outside [1, 1024]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fresh(t)
			editFolder(t, dir, c.edit, nil)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := model.Load(dir, b, model.LoadOptions{})
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			require.ErrorContains(t, err, c.want)
			t.Logf("refused in %v after allocating %d KiB: %v", took, (after.TotalAlloc-before.TotalAlloc)>>10, err)
			require.Less(t, took, time.Second)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(100<<20), "allocated before refusing")
		})
	}
}

func TestRopeScalingVariants(t *testing.T) {
	base := `{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":16,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":32,"rope_theta":10000%s}`
	load := func(extra string) *model.Config {
		c, err := model.ParseConfig([]byte(fmt.Sprintf(base, extra)))
		require.NoError(t, err)
		return c
	}
	plain, _ := load("").Rope(8)
	require.InDelta(t, 1.0, plain[0], 1e-7)
	require.InDelta(t, math.Pow(10000, -2.0/8), float64(plain[1]), 1e-7)
	lin, _ := load(`,"rope_scaling":{"type":"linear","factor":4}`).Rope(8)
	require.InDelta(t, float64(plain[3])/4, float64(lin[3]), 1e-9)
	dyn, _ := load(`,"rope_scaling":{"type":"dynamic","factor":2}`).Rope(8)
	require.Equal(t, plain, dyn, "dynamic NTK leaves short sequences alone")
	dynLong, _ := load(`,"rope_scaling":{"type":"dynamic","factor":2}`).Rope(64)
	require.Less(t, dynLong[3], plain[3], "and stretches long ones")
	yarn, scale := load(`,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":8}`).Rope(8)
	require.InDelta(t, 0.1*math.Log(4)+1, float64(scale), 1e-6)
	require.InDelta(t, float64(plain[0]), float64(yarn[0]), 1e-9, "high frequencies are extrapolated")
	require.InDelta(t, float64(plain[3])/4, float64(yarn[3]), 1e-9, "low frequencies are interpolated")
	_, err := model.ParseConfig([]byte(fmt.Sprintf(base, `,"rope_scaling":{"type":"longrope","factor":2}`)))
	require.ErrorContains(t, err, `rope_scaling type "longrope" is not supported`)
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(fmt.Sprintf(base, "")), &raw))
}

// The synthetic model's norms are not interchangeable: swapping input_layernorm and
// post_attention_layernorm in the checkpoint changes the logits well beyond the reference test's
// tolerance, so the same swap in the code cannot pass TestLogitsMatchTheHuggingFaceEquations.
func TestSynthNormsAreDistinguishable(t *testing.T) {
	const seq = 7
	dir := tinyModel(t, 5)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	ids := testIDs(cfg.VocabSize, seq)
	before := logits(t, cpu.New(), dir, model.LoadOptions{}, ids, 1, seq)
	editFolder(t, dir, func(map[string]any) {}, func(ts map[string]checkpoint.Tensor) {
		for l := 0; l < cfg.NumLayers; l++ {
			a, b := fmt.Sprintf("model.layers.%d.input_layernorm.weight", l), fmt.Sprintf("model.layers.%d.post_attention_layernorm.weight", l)
			ts[a], ts[b] = ts[b], ts[a]
		}
	})
	after := logits(t, cpu.New(), dir, model.LoadOptions{}, ids, 1, seq)
	scale, diff := 0.0, 0.0
	for i := range before {
		scale = math.Max(scale, math.Abs(float64(before[i])))
		diff = math.Max(diff, math.Abs(float64(after[i]-before[i])))
	}
	require.Greater(t, diff, 100*1e-4*scale, "the swap moves the logits by %g (largest logit %g)", diff, scale)
}
