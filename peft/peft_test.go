package peft

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/quant"
)

func tinyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1})
	require.NoError(t, err)
	return dir
}

func loadModel(t *testing.T, dir, quantize string) *model.Model {
	t.Helper()
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: quantize})
	require.NoError(t, err)
	t.Cleanup(m.Release)
	return m
}

func loraConfig(targets ...string) Config {
	c := LoRAConfig()
	c.R, c.LoraAlpha = 8, 16
	c.TargetModules = Names(targets...)
	return c
}

// randomize makes every parameter non-trivial (B ≠ 0 so LoRA does something; IA3 ≠ 1).
func randomize(t *testing.T, a *Adapter, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for i := range v {
			switch {
			case strings.HasSuffix(p.Key, "lora_B.weight"):
				v[i] = float32(r.NormFloat64() * 0.2)
			case strings.HasSuffix(p.Key, "ia3_l"):
				v[i] = float32(1 + 0.5*r.NormFloat64())
			}
		}
		require.NoError(t, p.Tensor.SetFloat32(v))
	}
}

var testIDs = []int32{1, 17, 200, 5, 99, 3, 42, 383, 0, 7}

// logits runs the whole model (2 sequences of 5 tokens) with the adapter (nil: none). A non-nil
// seed records training-mode dropout.
func logits(t *testing.T, m *model.Model, a *Adapter, seed *int32) []float32 {
	t.Helper()
	g := engine.NewGraph()
	mg := m.Declare(g)
	n := len(testIDs)
	idn := g.Input("ids", engine.I32, engine.Shape{n})
	posn := g.Input("pos", engine.I32, engine.Shape{n})
	var seedNode *engine.Node
	if seed != nil {
		seedNode = g.Input("dropout_seed", engine.I32, engine.Shape{1})
	}
	var lin model.LinearFunc
	if a != nil {
		lin = a.LinearFunc(g, seedNode)
	}
	out := mg.Forward(idn, posn, 2, n/2, lin)
	p, err := engine.Compile(g, m.Backend, []*engine.Node{out}, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	require.NoError(t, m.Bind(p))
	if a != nil {
		require.NoError(t, a.Bind(p))
	}
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(i % (n / 2))
	}
	inputs := map[*engine.Node][]int32{idn: testIDs, posn: pos}
	if seed != nil {
		inputs[seedNode] = []int32{*seed}
	}
	for node, v := range inputs {
		tt, err := engine.FromInt32(m.Backend, node.Shape(), v)
		require.NoError(t, err)
		defer tt.Release()
		require.NoError(t, p.Bind(node, tt))
	}
	require.NoError(t, p.Run())
	v, err := p.Float32(out)
	require.NoError(t, err)
	return v
}

// layerOutput runs one linear layer of the model, through the adapter, on x: [rows, in].
func layerOutput(t *testing.T, m *model.Model, a *Adapter, name string, x []float32) []float32 {
	t.Helper()
	g := engine.NewGraph()
	mg := m.Declare(g)
	var l *model.Linear
	for _, c := range mg.Linears() {
		if c.Name == name {
			l = c
		}
	}
	require.NotNil(t, l, name)
	xn := g.Input("x", engine.F32, engine.Shape{len(x) / l.In, l.In})
	y := a.LinearFunc(g, nil)(g, l, xn)
	p, err := engine.Compile(g, m.Backend, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	require.NoError(t, m.Bind(p))
	require.NoError(t, a.Bind(p))
	xt, err := engine.FromFloat32(m.Backend, xn.Shape(), x)
	require.NoError(t, err)
	defer xt.Release()
	require.NoError(t, p.Bind(xn, xt))
	require.NoError(t, p.Run())
	v, err := p.Float32(y)
	require.NoError(t, err)
	return v
}

// denseWeight reads a layer's weight as f32, dequantizing a 4-bit one by bitsandbytes' layout.
func denseWeight(t *testing.T, m *model.Model, name string) []float32 {
	t.Helper()
	q := m.Quant[name]
	if q == nil {
		v, err := m.Tensors[name+".weight"].Float32()
		require.NoError(t, err)
		return v
	}
	packed, err := m.Tensors[name+".weight"].Bytes()
	require.NoError(t, err)
	absmax, err := m.Tensors[name+".weight.absmax"].Float32()
	require.NoError(t, err)
	w := make([]float32, q.N*q.K)
	for e := range w {
		b := packed[e/2]
		nib := b >> 4
		if e%2 == 1 {
			nib = b & 15
		}
		w[e] = q.Code()[nib] * absmax[e/q.Blocksize]
	}
	return w
}

func randVec(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func tensor(t *testing.T, a *Adapter, key string) []float32 {
	t.Helper()
	tt, ok := a.Tensor(key)
	require.True(t, ok, key)
	v, err := tt.Float32()
	require.NoError(t, err)
	return v
}

func requireClose(t *testing.T, want, got []float32, tol float64, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		require.InDelta(t, want[i], got[i], tol*(1+math.Abs(float64(want[i]))), "%s: element %d", what, i)
	}
}

func TestLoRALayerMatchesReference(t *testing.T) {
	dir := tinyDir(t)
	for _, q := range []string{"", "nf4"} {
		m := loadModel(t, dir, q)
		for _, rs := range []bool{false, true} {
			c := loraConfig("q_proj", "v_proj")
			c.UseRSLoRA = rs
			a, err := New(c, m.Cfg, m.Backend, 3)
			require.NoError(t, err)
			randomize(t, a, 4)
			name := "model.layers.0.self_attn.q_proj"
			const rows = 3
			in, out, r := 64, 64, 8
			x := randVec(rows*in, 5)
			got := layerOutput(t, m, a, name, x)
			w := denseWeight(t, m, name)
			A := tensor(t, a, keyPrefix+name+".lora_A.weight")
			B := tensor(t, a, keyPrefix+name+".lora_B.weight")
			s := 16.0 / 8
			if rs {
				s = 16 / math.Sqrt(8)
			}
			require.InDelta(t, s, float64(a.Modules()[0].Scale), 1e-6)
			want := make([]float32, rows*out)
			for row := 0; row < rows; row++ {
				xa := make([]float64, r)
				for k := range xa {
					for i := 0; i < in; i++ {
						xa[k] += float64(x[row*in+i]) * float64(A[k*in+i])
					}
				}
				for o := 0; o < out; o++ {
					y := 0.0
					for i := 0; i < in; i++ {
						y += float64(x[row*in+i]) * float64(w[o*in+i])
					}
					for k := range xa {
						y += s * xa[k] * float64(B[o*r+k])
					}
					want[row*out+o] = float32(y)
				}
			}
			requireClose(t, want, got, 1e-4, "quant="+q)
			a.Release()
		}
	}
}

func TestIA3LayerMatchesReference(t *testing.T) {
	dir := tinyDir(t)
	for _, q := range []string{"", "nf4"} {
		m := loadModel(t, dir, q)
		a, err := New(IA3Config(), m.Cfg, m.Backend, 1)
		require.NoError(t, err)
		randomize(t, a, 2)
		require.Equal(t, []string{"k_proj", "v_proj", "down_proj"}, a.Config.TargetModules.Names)
		require.Equal(t, []string{"down_proj"}, a.Config.FeedforwardModules.Names)
		for _, name := range []string{"model.layers.1.self_attn.k_proj", "model.layers.0.mlp.down_proj"} {
			ff := strings.HasSuffix(name, "down_proj")
			in, out := 64, 32
			if ff {
				in, out = 176, 64
			}
			const rows = 2
			x := randVec(rows*in, 7)
			got := layerOutput(t, m, a, name, x)
			w := denseWeight(t, m, name)
			l := tensor(t, a, keyPrefix+name+".ia3_l")
			want := make([]float32, rows*out)
			for row := 0; row < rows; row++ {
				for o := 0; o < out; o++ {
					y := 0.0
					for i := 0; i < in; i++ {
						xi := float64(x[row*in+i])
						if ff {
							xi *= float64(l[i])
						}
						y += xi * float64(w[o*in+i])
					}
					if !ff {
						y *= float64(l[o])
					}
					want[row*out+o] = float32(y)
				}
			}
			requireClose(t, want, got, 1e-4, name+" quant="+q)
		}
		a.Release()
	}
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal(raw, &v))
	return v
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := tinyDir(t)
	for _, q := range []string{"", "nf4"} {
		m := loadModel(t, dir, q)
		for _, c := range []Config{loraConfig("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"), IA3Config()} {
			a, err := New(c, m.Cfg, m.Backend, 11)
			require.NoError(t, err)
			randomize(t, a, 12)
			before := logits(t, m, a, nil)
			plain := logits(t, m, nil, nil)
			require.NotEqual(t, plain, before, "the adapter changes the logits")
			out := filepath.Join(t.TempDir(), "adapter")
			require.NoError(t, a.Save(out))
			b, err := Load(out, m.Cfg, m.Backend)
			require.NoError(t, err)
			require.Equal(t, before, logits(t, m, b, nil), "reloaded logits are bit for bit the same")
			require.Equal(t, a.NumParams(), b.NumParams())

			cfg := readJSON(t, filepath.Join(out, ConfigFile))
			require.Equal(t, c.PeftType, cfg["peft_type"])
			require.Equal(t, "CAUSAL_LM", cfg["task_type"])
			require.Equal(t, true, cfg["inference_mode"])
			require.Equal(t, PEFTVersion, cfg["peft_version"])
			require.Contains(t, cfg, "base_model_name_or_path")
			require.Contains(t, cfg, "revision")
			require.Nil(t, cfg["modules_to_save"])
			require.Equal(t, false, cfg["fan_in_fan_out"])
			f, err := checkpoint.OpenSafetensors(filepath.Join(out, WeightsFile))
			require.NoError(t, err)
			require.Equal(t, map[string]string{"format": "pt"}, f.Metadata)
			if c.PeftType == TypeLoRA {
				require.EqualValues(t, 8, cfg["r"])
				require.EqualValues(t, 16, cfg["lora_alpha"])
				require.EqualValues(t, 0, cfg["lora_dropout"])
				raw, err := os.ReadFile(filepath.Join(out, ConfigFile))
				require.NoError(t, err)
				require.Contains(t, string(raw), `"lora_dropout": 0.0,`)
				require.Equal(t, "none", cfg["bias"])
				require.Equal(t, false, cfg["use_rslora"])
				require.Equal(t, false, cfg["use_dora"])
				require.Equal(t, true, cfg["init_lora_weights"])
				require.Equal(t, map[string]any{}, cfg["rank_pattern"])
				require.Equal(t, map[string]any{}, cfg["alpha_pattern"])
				require.Contains(t, cfg, "layers_to_transform")
				require.Contains(t, cfg, "megatron_config")
				require.Equal(t, []any{"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"}, cfg["target_modules"])
				require.Len(t, f.Names(), 2*5*2)
				tA, ok := f.Tensor("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight")
				require.True(t, ok)
				require.Equal(t, []int{8, 64}, tA.Shape)
				require.Equal(t, "F32", tA.DType)
				tB, ok := f.Tensor("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight")
				require.True(t, ok)
				require.Equal(t, []int{64, 8}, tB.Shape)
			} else {
				require.Equal(t, []any{"k_proj", "v_proj", "down_proj"}, cfg["target_modules"])
				require.Equal(t, []any{"down_proj"}, cfg["feedforward_modules"])
				require.Equal(t, true, cfg["init_ia3_weights"])
				require.NotContains(t, cfg, "r")
				require.Len(t, f.Names(), 2*3)
				tk, ok := f.Tensor("base_model.model.model.layers.0.self_attn.k_proj.ia3_l")
				require.True(t, ok)
				require.Equal(t, []int{32, 1}, tk.Shape)
				td, ok := f.Tensor("base_model.model.model.layers.1.mlp.down_proj.ia3_l")
				require.True(t, ok)
				require.Equal(t, []int{1, 176}, td.Shape)
			}
			require.NoError(t, f.Close())
			a.Release()
			b.Release()
		}
	}
}

func TestNewInitialisesAsPEFT(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	a, err := New(loraConfig("q_proj"), m.Cfg, m.Backend, 7)
	require.NoError(t, err)
	defer a.Release()
	// B = 0: the fresh adapter leaves the model's output unchanged.
	require.Equal(t, logits(t, m, nil, nil), logits(t, m, a, nil))
	A := tensor(t, a, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
	bound := 1 / math.Sqrt(64)
	var maxAbs float64
	for _, x := range A {
		maxAbs = math.Max(maxAbs, math.Abs(float64(x)))
	}
	require.LessOrEqual(t, maxAbs, bound)
	require.Greater(t, maxAbs, 0.8*bound, "A spans U(-1/√in, 1/√in)")
	b, err := New(loraConfig("q_proj"), m.Cfg, m.Backend, 7)
	require.NoError(t, err)
	defer b.Release()
	require.Equal(t, A, tensor(t, b, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), "deterministic from the seed")
	require.EqualValues(t, 2*(8*64+64*8), a.NumParams())
	keys := a.Keys()
	require.Equal(t, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", keys[0])
	require.Equal(t, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", keys[1])
	for _, p := range a.Params() {
		require.NotNil(t, p.Node, "LinearFunc declared %s", p.Key)
		require.True(t, p.Node.Trainable())
	}

	ia, err := New(IA3Config(), m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer ia.Release()
	for _, k := range ia.Keys() {
		for _, x := range tensor(t, ia, k) {
			require.Equal(t, float32(1), x)
		}
	}
}

func TestAllLinear(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	c := LoRAConfig()
	c.TargetModules = Modules{Pattern: AllLinear}
	a, err := New(c, m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer a.Release()
	require.Equal(t, []string{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}, a.Config.TargetModules.Names)
	require.Len(t, a.Modules(), 7*2)
	for _, md := range a.Modules() {
		require.NotEqual(t, "lm_head", md.Name)
	}
	// The list form ["all-linear"] means the same.
	c.TargetModules = Names(AllLinear)
	b, err := New(c, m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer b.Release()
	require.Equal(t, a.Keys(), b.Keys())
	out := t.TempDir()
	require.NoError(t, a.Save(out))
	cfg := readJSON(t, filepath.Join(out, ConfigFile))
	require.Len(t, cfg["target_modules"], 7)
	// A regular expression selects by full path.
	c.TargetModules = Modules{Pattern: `model\.layers\.1\.self_attn\.(q|v)_proj`}
	r, err := New(c, m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer r.Release()
	require.Len(t, r.Modules(), 2)
	require.Equal(t, "model.layers.1.self_attn.q_proj", r.Modules()[0].Name)
}

func TestMergeEqualsAdapter(t *testing.T) {
	dir := tinyDir(t)
	for _, c := range []Config{loraConfig("q_proj", "v_proj", "up_proj", "down_proj"), IA3Config()} {
		m := loadModel(t, dir, "")
		c.LoraDropout = 0.1 // dropout is off at evaluation, so it does not matter to the merge
		a, err := New(c, m.Cfg, m.Backend, 5)
		require.NoError(t, err)
		randomize(t, a, 6)
		want := logits(t, m, a, nil)
		require.NoError(t, Merge(m, a))
		requireClose(t, want, logits(t, m, nil, nil), 1e-4, c.PeftType)
		a.Release()
	}
	q := loadModel(t, dir, "nf4")
	a, err := New(loraConfig("q_proj"), q.Cfg, q.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	require.ErrorContains(t, Merge(q, a), "4-bit")
}

// MergeFolder writes a checkpoint whose plain model computes what the base with the adapter
// computes, in the base's dtype; a 4-bit base is refused.
func TestMergeFolderEqualsAdapter(t *testing.T) {
	for _, dtype := range []string{"F32", "BF16"} {
		dir := t.TempDir()
		_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, DType: dtype})
		require.NoError(t, err)
		m := loadModel(t, dir, "")
		for _, c := range []Config{loraConfig("q_proj", "v_proj", "up_proj", "down_proj"), IA3Config()} {
			a, err := New(c, m.Cfg, m.Backend, 5)
			require.NoError(t, err)
			randomize(t, a, 6)
			out := filepath.Join(t.TempDir(), "merged")
			rep, err := MergeFolder(dir, out, a)
			require.NoError(t, err)
			require.Positive(t, rep.Changed)
			merged := loadModel(t, out, "")
			tol := 1e-4
			if dtype == "BF16" {
				tol = 3e-2 // the merged weights are rounded to bf16 again
			}
			requireClose(t, logits(t, m, a, nil), logits(t, merged, nil, nil), tol, dtype+" "+c.PeftType)
			ck, err := checkpoint.Open(out)
			require.NoError(t, err)
			w, _ := ck.Tensor("model.layers.0.self_attn.q_proj.weight")
			require.Equal(t, dtype, w.DType)
			ck.Close()
			a.Release()
		}
	}
	dir := tinyDir(t)
	q := filepath.Join(t.TempDir(), "nf4")
	_, err := checkpoint.QuantizeFolder(dir, q, checkpoint.QuantizeOptions{Type: quant.NF4, Blocksize: 64})
	require.NoError(t, err)
	m := loadModel(t, dir, "")
	a, err := New(loraConfig("q_proj"), m.Cfg, m.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	_, err = MergeFolder(q, filepath.Join(t.TempDir(), "out"), a)
	require.ErrorContains(t, err, "dequantize the model first")
}

func TestDropout(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	c := loraConfig("q_proj", "v_proj", "gate_proj")
	c.LoraDropout = 0.3
	a, err := New(c, m.Cfg, m.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 6)
	eval := logits(t, m, a, nil)
	s1, s2 := int32(1), int32(2)
	train1 := logits(t, m, a, &s1)
	require.NotEqual(t, eval, train1, "dropout changes the training-mode output")
	require.NotEqual(t, train1, logits(t, m, a, &s2), "another seed, another mask")
	require.Equal(t, train1, logits(t, m, a, &s1), "the mask is a function of the seed")
	a.Config.LoraDropout = 0
	require.Equal(t, eval, logits(t, m, a, &s1), "evaluation is dropout-free")
	a.Config.LoraDropout = 0.3

	// QLoRA: the same on a 4-bit base.
	q := loadModel(t, tinyDir(t), "nf4")
	qa, err := New(c, q.Cfg, q.Backend, 5)
	require.NoError(t, err)
	defer qa.Release()
	randomize(t, qa, 6)
	qeval := logits(t, q, qa, nil)
	require.NotEqual(t, qeval, logits(t, q, qa, &s1))
	qa.Config.LoraDropout = 0
	require.Equal(t, qeval, logits(t, q, qa, &s1))
	qa.Config.LoraDropout = 0.3

	// The training path is differentiable in A and B.
	g := engine.NewGraph()
	mg := m.Declare(g)
	idn := g.Input("ids", engine.I32, engine.Shape{4})
	posn := g.Input("pos", engine.I32, engine.Shape{4})
	tgt := g.Input("targets", engine.I32, engine.Shape{4})
	seed := g.Input("seed", engine.I32, engine.Shape{1})
	loss := g.CrossEntropy(mg.Forward(idn, posn, 1, 4, a.LinearFunc(g, seed)), tgt, -100)
	grads, err := g.Backward(loss)
	require.NoError(t, err)
	var outs []*engine.Node
	for _, p := range a.Params() {
		require.Contains(t, grads, p.Node, p.Key)
		outs = append(outs, grads[p.Node])
	}
	p, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	require.NoError(t, m.Bind(p))
	require.NoError(t, a.Bind(p))
	for node, v := range map[*engine.Node][]int32{idn: {1, 2, 3, 4}, posn: {0, 1, 2, 3}, tgt: {2, 3, 4, 5}, seed: {9}} {
		tt, err := engine.FromInt32(m.Backend, node.Shape(), v)
		require.NoError(t, err)
		defer tt.Release()
		require.NoError(t, p.Bind(node, tt))
	}
	require.NoError(t, p.Run())
	dA, err := p.Float32(outs[0])
	require.NoError(t, err)
	nonzero := false
	for _, x := range dA {
		nonzero = nonzero || x != 0
	}
	require.True(t, nonzero, "A receives gradient through dropout")
}

func TestConfigKeepsUnknownFields(t *testing.T) {
	raw := `{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM",
		"some_future_field": {"x": [1, 2]}, "megatron_core": "megatron.core", "loftq_config": {}}`
	c, err := ParseConfig([]byte(raw))
	require.NoError(t, err)
	require.Equal(t, 4, c.R)
	out, err := c.MarshalJSON()
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal(out, &v))
	require.Equal(t, map[string]any{"x": []any{1.0, 2.0}}, v["some_future_field"])
	require.Equal(t, "none", v["bias"], "PEFT's defaults fill what the file left out")
	require.True(t, strings.HasPrefix(string(out), "{\n  \"alora_invocation_tokens\": null,\n"), "indented, sorted keys")
	again, err := ParseConfig(out)
	require.NoError(t, err)
	out2, err := again.MarshalJSON()
	require.NoError(t, err)
	require.Equal(t, string(out), string(out2))
}

// writeAdapter saves a LoRA adapter with random A and B (not the identity a fresh one is) and
// returns its folder and tensors.
func writeAdapter(t *testing.T, m *model.Model) (string, map[string]checkpoint.Tensor) {
	t.Helper()
	a, err := New(loraConfig("q_proj"), m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 4)
	dir := t.TempDir()
	require.NoError(t, a.Save(dir))
	f, err := checkpoint.OpenSafetensors(filepath.Join(dir, WeightsFile))
	require.NoError(t, err)
	defer f.Close()
	ts := map[string]checkpoint.Tensor{}
	for _, n := range f.Names() {
		tt, _ := f.Tensor(n)
		tt.Data = append([]byte(nil), tt.Data...)
		ts[n] = tt
	}
	return dir, ts
}

func TestLoadAcceptsAdapterNameInKeys(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	dir, ts := writeAdapter(t, m)
	renamed := map[string]checkpoint.Tensor{}
	for k, v := range ts {
		renamed[strings.Replace(k, ".weight", ".default.weight", 1)] = v
	}
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(dir, WeightsFile), renamed, map[string]string{"format": "pt"}))
	a, err := Load(dir, m.Cfg, m.Backend)
	require.NoError(t, err)
	defer a.Release()
	require.Len(t, a.Keys(), len(ts))
	for k, tt := range ts {
		want, err := checkpoint.ToFloat32(tt)
		require.NoError(t, err)
		require.Equal(t, want, tensor(t, a, k), "%s loads from its .default. key", k)
	}
	// The loaded adapter (non-zero lora_B) changes the layer's output.
	fresh, err := New(loraConfig("q_proj"), m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer fresh.Release()
	const name = "model.layers.0.self_attn.q_proj"
	x := randVec(3*m.Cfg.HiddenSize, 5)
	base, got := layerOutput(t, m, fresh, name, x), layerOutput(t, m, a, name, x)
	diff := 0.0
	for i := range base {
		diff = math.Max(diff, math.Abs(float64(got[i]-base[i])))
	}
	require.Greater(t, diff, 1e-2, "the adapter changes q_proj's output")
}

func TestBadInputs(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	const key = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"
	edit := func(t *testing.T, fn func(ts map[string]checkpoint.Tensor)) string {
		dir, ts := writeAdapter(t, m)
		fn(ts)
		require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(dir, WeightsFile), ts, map[string]string{"format": "pt"}))
		return dir
	}
	loadErr := func(dir string) error {
		a, err := Load(dir, m.Cfg, m.Backend)
		if err == nil {
			a.Release()
		}
		return err
	}
	t.Run("missing key", func(t *testing.T) {
		err := loadErr(edit(t, func(ts map[string]checkpoint.Tensor) { delete(ts, key) }))
		require.ErrorContains(t, err, "missing tensor "+key)
		require.ErrorContains(t, err, WeightsFile)
	})
	t.Run("unexpected key", func(t *testing.T) {
		err := loadErr(edit(t, func(ts map[string]checkpoint.Tensor) {
			ts["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = checkpoint.FromFloat32(make([]float32, 8*64), []int{8, 64})
		}))
		require.ErrorContains(t, err, "unexpected tensors base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight")
	})
	t.Run("wrong shape", func(t *testing.T) {
		err := loadErr(edit(t, func(ts map[string]checkpoint.Tensor) {
			ts[key] = checkpoint.FromFloat32(make([]float32, 64*4), []int{64, 4})
		}))
		require.ErrorContains(t, err, key+" has shape [64 4]")
	})
	t.Run("NaN", func(t *testing.T) {
		err := loadErr(edit(t, func(ts map[string]checkpoint.Tensor) {
			v := make([]float32, 64*8)
			v[3] = float32(math.NaN())
			ts[key] = checkpoint.FromFloat32(v, []int{64, 8})
		}))
		require.ErrorContains(t, err, key+" holds a non-finite value")
	})
	t.Run("corrupt safetensors", func(t *testing.T) {
		dir, _ := writeAdapter(t, m)
		path := filepath.Join(dir, WeightsFile)
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, raw[:20], 0o644))
		require.ErrorContains(t, loadErr(dir), WeightsFile)
	})
	t.Run("corrupt config", func(t *testing.T) {
		dir, _ := writeAdapter(t, m)
		require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte("{"), 0o644))
		require.ErrorContains(t, loadErr(dir), ConfigFile)
	})
	t.Run("unsupported option in file", func(t *testing.T) {
		dir, _ := writeAdapter(t, m)
		path := filepath.Join(dir, ConfigFile)
		cfg := readJSON(t, path)
		cfg["use_qalora"] = true
		raw, _ := json.Marshal(cfg)
		require.NoError(t, os.WriteFile(path, raw, 0o644))
		require.ErrorContains(t, loadErr(dir), "use_qalora true is not supported")
	})
	bad := []struct {
		name string
		edit func(c *Config)
		msg  string
	}{
		{"r zero", func(c *Config) { c.R = 0 }, "r 0 is outside [1, 16384]"},
		{"r huge", func(c *Config) { c.R = 1 << 30 }, "r 1073741824 is outside [1, 16384]"},
		{"unknown target", func(c *Config) { c.TargetModules = Names("q_proj", "qkv_proj") }, `"qkv_proj" matches no module of the model (its linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj)`},
		{"regex matching nothing", func(c *Config) { c.TargetModules = Modules{Pattern: "nothing"} }, "matches no module"},
		{"dora without the base", func(c *Config) { c.UseDoRA = true }, "create it with NewFor"},
		{"bias", func(c *Config) { c.Bias = "all" }, `bias "all"`},
		{"modules_to_save", func(c *Config) { c.ModulesToSave = []string{"lm_head"} }, "modules_to_save"},
		{"rank_pattern", func(c *Config) { c.RankPattern = map[string]any{"q_proj": 4} }, "rank_pattern"},
		{"dropout", func(c *Config) { c.LoraDropout = 1 }, "lora_dropout"},
		{"pissa", func(c *Config) { c.InitLoraWeights = "pissa" }, "init_lora_weights"},
		{"feedforward not a target", func(c *Config) {
			*c = IA3Config()
			c.TargetModules = Names("k_proj", "v_proj")
			c.FeedforwardModules = Names("down_proj")
		}, "feedforward_modules must be a subset of target_modules"},
		{"peft type", func(c *Config) { c.PeftType = "ADALORA" }, "ADALORA"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := loraConfig("q_proj")
			tc.edit(&c)
			_, err := New(c, m.Cfg, m.Backend, 1)
			require.ErrorContains(t, err, tc.msg)
		})
	}
}
