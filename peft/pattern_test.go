package peft

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/checkpoint"
)

// TestPatternsLoadWithPEFTSemantics writes an adapter as PEFT saves one trained with rank_pattern,
// alpha_pattern and layers_to_transform, and checks that it loads to the logits of a float64
// reference: the base with ΔW = (alpha/r)·B·A added, for the modules and the r and alpha that
// PEFT's rules give, written out here by hand per module (not computed by lathe's matcher).
func TestPatternsLoadWithPEFTSemantics(t *testing.T) {
	dir := tinyDir(t)
	m := loadModel(t, dir, "")
	// The config as PEFT writes it. Patterns are tried in the file's order, each as (.*\.)?(KEY)$;
	// a key equal to the path wins. layers_to_transform [1] with layers_pattern "layers" keeps
	// layer 1 only.
	config := `{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
	 "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"], "bias": "none", "use_rslora": false,
	 "rank_pattern": {"v_proj": 2, "model.layers.1.mlp.up_proj": 6, "layers\\.1\\.mlp\\.down_proj": 3},
	 "alpha_pattern": {"self_attn\\.v_proj": 5, "q_proj": 12},
	 "layers_to_transform": [1], "layers_pattern": "layers", "init_lora_weights": true, "use_dora": false}`
	// What PEFT makes of it: module → (r, alpha).
	want := map[string][2]float64{
		"model.layers.1.self_attn.q_proj": {4, 12},
		"model.layers.1.self_attn.v_proj": {2, 5},
		"model.layers.1.mlp.up_proj":      {6, 8},
		"model.layers.1.mlp.down_proj":    {3, 8},
	}
	out := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(out, ConfigFile), []byte(config), 0o644))
	tensors := map[string]checkpoint.Tensor{}
	deltas := map[string][]float64{}
	seed := uint64(40)
	for name, ra := range want {
		r := int(ra[0])
		var in, outDim int
		for _, l := range linears(m.Cfg) {
			if l.Name == name {
				in, outDim = l.In, l.Out
			}
		}
		require.NotZero(t, in, name)
		seed++
		A, B := randVec(r*in, seed), randVec(outDim*r, seed+100)
		for i := range B {
			B[i] *= 0.1
		}
		tensors["base_model.model."+name+".lora_A.weight"] = checkpoint.FromFloat32(A, []int{r, in})
		tensors["base_model.model."+name+".lora_B.weight"] = checkpoint.FromFloat32(B, []int{outDim, r})
		s := ra[1] / ra[0]
		d := make([]float64, outDim*in)
		for o := 0; o < outDim; o++ {
			for i := 0; i < in; i++ {
				for k := 0; k < r; k++ {
					d[o*in+i] += s * float64(B[o*r+k]) * float64(A[k*in+i])
				}
			}
		}
		deltas[name] = d
	}
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(out, WeightsFile), tensors, map[string]string{"format": "pt"}))

	a, err := Load(out, m.Cfg, m.Backend)
	require.NoError(t, err)
	defer a.Release()
	require.Len(t, a.Modules(), len(want))
	for _, md := range a.Modules() {
		ra := want[md.Name]
		require.Equal(t, int(ra[0]), md.R, md.Name)
		require.InDelta(t, ra[1]/ra[0], float64(md.Scale), 1e-6, md.Name)
	}
	got := logits(t, m, a, nil)

	// The reference: merge in float64, run the plain model.
	for name, d := range deltas {
		w, err := m.Tensors[name+".weight"].Float32()
		require.NoError(t, err)
		for i := range w {
			w[i] = float32(float64(w[i]) + d[i])
		}
		require.NoError(t, m.Tensors[name+".weight"].SetFloat32(w))
	}
	ref := logits(t, m, nil, nil)
	requireClose(t, ref, got, 1e-4, "patterns")

	// Saved again, it loads to the same modules, ranks and scales.
	again := t.TempDir()
	require.NoError(t, a.Save(again))
	b, err := Load(again, m.Cfg, m.Backend)
	require.NoError(t, err)
	defer b.Release()
	require.Equal(t, a.Modules(), b.Modules())
}

// PEFT's layer rules: layers_to_transform as an int, layers_pattern absent (any ".name.N."), a
// target given as a whole path escapes the layer filter, and bad values are refused.
func TestLayersToTransform(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	names := func(c Config) []string {
		mods, err := resolve(&c, m.Cfg)
		require.NoError(t, err)
		var n []string
		for _, md := range mods {
			n = append(n, md.Name)
		}
		return n
	}
	c := loraConfig("q_proj", "model.layers.1.self_attn.v_proj")
	c.LayersToTransform = float64(0)
	require.Equal(t, []string{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}, names(c))
	c.LayersToTransform = []any{float64(1)}
	c.LayersPattern = []any{"blocks", "layers"}
	require.Equal(t, []string{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}, names(c))
	for _, bad := range []struct {
		set  func(c *Config)
		want string
	}{
		{func(c *Config) { c.LayersToTransform = 1.5 }, "not an integer"},
		{func(c *Config) { c.LayersToTransform = "x" }, "layers_to_transform"},
		{func(c *Config) { c.RankPattern = map[string]any{"q_proj": 0.0} }, "rank_pattern"},
		{func(c *Config) { c.AlphaPattern = map[string]any{"q_proj": "big"} }, "alpha_pattern"},
		{func(c *Config) { c.RankPattern = map[string]any{"(?<=x)": 2.0} }, "regular expression"},
		{func(c *Config) { c.TargetModules = Modules{Pattern: ".*q_proj"}; c.LayersToTransform = 1.0 }, "cannot be used"},
	} {
		c := loraConfig("q_proj")
		bad.set(&c)
		_, err := resolve(&c, m.Cfg)
		require.ErrorContains(t, err, bad.want, fmt.Sprint(c.RankPattern, c.AlphaPattern, c.LayersToTransform))
	}
}
