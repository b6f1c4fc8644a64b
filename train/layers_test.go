package train

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// Layer groups give each layer its own rank and modules; the run saves one PEFT LoRA (target_modules
// a regex, rank_pattern and alpha_pattern per module) that loads back with those shapes and scales,
// and merges to the same loss (cmd/lathe's TestTrainLayerGroups serves it).
func TestLayerGroupsSaveOnePEFTAdapter(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Steps = 20
	cfg.LayerGroups = []LayerGroup{{Layers: "0", Targets: []string{"q_proj"}, Rank: 2, Alpha: 4},
		{Layers: "1", Targets: []string{"v_proj", "down_proj"}, Rank: 6, Alpha: 3}}
	res := train(t, cfg, cpu.New())
	require.Less(t, res.LossEnd, res.LossStart)
	pc, err := peft.LoadConfig(cfg.Out)
	require.NoError(t, err)
	require.NotEmpty(t, pc.TargetModules.Pattern)
	re := regexp.MustCompile(`^(?:` + pc.TargetModules.Pattern + `)$`)
	require.True(t, re.MatchString("model.layers.1.mlp.down_proj"))
	require.False(t, re.MatchString("model.layers.1.self_attn.q_proj"))
	require.False(t, re.MatchString("model.layers.0.mlp.down_proj"))
	b := cpu.New()
	m, err := model.Load(cfg.Model, b, model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	a, err := peft.Load(cfg.Out, m.Cfg, b)
	require.NoError(t, err)
	defer a.Release()
	got := map[string][2]float64{}
	for _, md := range a.Modules() {
		got[md.Name] = [2]float64{float64(md.R), float64(md.Scale)}
	}
	require.Equal(t, map[string][2]float64{
		"model.layers.0.self_attn.q_proj": {2, 2},
		"model.layers.1.self_attn.v_proj": {6, 0.5},
		"model.layers.1.mlp.down_proj":    {6, 0.5},
	}, got)

	ex, err := LoadDataset(cfg.Data, cfg.Model, m.Cfg.VocabSize)
	require.NoError(t, err)
	sg, err := NewStepGraph(m, a, 1, 32, false, false)
	require.NoError(t, err)
	want, _, err := Evaluate(sg, ex, 1, 32)
	sg.Close()
	require.NoError(t, err)

	merged := filepath.Join(t.TempDir(), "merged")
	_, err = peft.MergeFolder(cfg.Model, merged, a)
	require.NoError(t, err)
	mm, err := model.Load(merged, b, model.LoadOptions{})
	require.NoError(t, err)
	defer mm.Release()
	sg, err = NewStepGraph(mm, nil, 1, 32, false, false)
	require.NoError(t, err)
	defer sg.Close()
	ml, _, err := Evaluate(sg, ex, 1, 32)
	require.NoError(t, err)
	require.InDelta(t, want, ml, 1e-4)
}

// IA3 on some layers and LoRA on others has no PEFT format, and DoRA beside LoRA would be two
// adapters: both refused, naming why; so are overlapping, missing and malformed layers and targets.
func TestLayerGroupsRefuseMixedTypes(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.LayerGroups = []LayerGroup{{Layers: "0", Method: "ia3"}, {Layers: "1", Rank: 16}}
	_, err := New(cfg, cpu.New())
	require.ErrorContains(t, err, "PeftMixedModel")
	cfg.LayerGroups = []LayerGroup{{Layers: "0", Method: "dora"}, {Layers: "1"}}
	_, err = New(cfg, cpu.New())
	require.ErrorContains(t, err, "two LoRA adapters")
	for _, g := range [][]LayerGroup{{{Layers: "0-1"}, {Layers: "1"}}, {{Layers: "5"}}, {{Layers: "x"}}, {{Layers: "0", Targets: []string{"q_proj)|.*"}}}} {
		cfg.LayerGroups = g
		_, err := New(cfg, cpu.New())
		require.Error(t, err, "%+v", g)
	}
}
