package train

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/peft"
)

// LayerGroup gives a method, rank and modules to some decoder layers (Config.LayerGroups, the
// "layers" field of a config file or `lathe train --layers FILE`).
type LayerGroup struct {
	// Layers lists layer indices: "3", "0-7", "0,2,4-6".
	Layers string `json:"layers"`
	// Method is "lora", "dora" or "ia3" ("": the run's method).
	Method string `json:"method,omitempty"`
	// Rank and Alpha of a LoRA group (0: the run's).
	Rank  int     `json:"rank,omitempty"`
	Alpha float64 `json:"alpha,omitempty"`
	// Targets are module names (q_proj, ...) or "all-linear" (empty: the run's targets).
	Targets []string `json:"targets,omitempty"`
}

// llamaLinears are the decoder's linear layers that "all-linear" names (the output layer is
// never a target of it, as in PEFT).
var llamaLinears = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// ReadLayerGroups reads a JSON file holding a list of LayerGroup.
func ReadLayerGroups(path string) ([]LayerGroup, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("train: layers: %w", err)
	}
	var gs []LayerGroup
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&gs); err != nil {
		return nil, fmt.Errorf("train: layers %s: %w", path, err)
	}
	return gs, nil
}

func parseLayers(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("layers %q: %q is not a layer index or a range a-b", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("layers %q: %q is not a range a-b with a ≤ b", s, part)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// layerGroupsConfig turns the run's layer groups into one PEFT adapter config: target_modules a
// regular expression naming exactly each group's modules in its layers, and each module's rank and
// alpha in rank_pattern and alpha_pattern (keyed by its whole path), so that PEFT's LoraConfig (or
// IA3Config) loads it as one adapter. A group whose method differs from the run's is refused: IA3
// beside LoRA has no PEFT format at all (PeftMixedModel takes no IA3); DoRA beside plain LoRA would
// be two LoRA adapters, which one run does not train.
func (c *Config) layerGroupsConfig(numLayers int) (peft.Config, error) {
	method := func(g LayerGroup) string {
		if g.Method == "" {
			return c.Method
		}
		return g.Method
	}
	kind := map[string]string{"lora": "lora", "qlora": "lora", "dora": "dora", "qdora": "dora", "ia3": "ia3"}
	first := kind[c.Method]
	seen := map[int]int{}
	var alts []string
	rankP, alphaP := map[string]any{}, map[string]any{}
	for gi, g := range c.LayerGroups {
		k, ok := kind[method(g)]
		if !ok {
			return peft.Config{}, fmt.Errorf("train: layer group %d: method %q is not lora, dora or ia3", gi, g.Method)
		}
		if k != first && (k == "ia3" || first == "ia3") {
			return peft.Config{}, fmt.Errorf("train: layer groups mix %s and %s: PEFT has no format for that (a PeftModel holds adapters of one type, and PeftMixedModel takes LoRA, LoHa, LoKr, AdaLoRA and OFT, not IA3)", first, k)
		}
		if k != first {
			return peft.Config{}, fmt.Errorf("train: layer groups mix %s and %s: use_dora is one setting of a LoRA adapter; PEFT would load them as two LoRA adapters (two folders, both active), which lathe does not train in one run yet: train each group as its own adapter", first, k)
		}
		layers, err := parseLayers(g.Layers)
		if err != nil {
			return peft.Config{}, fmt.Errorf("train: layer group %d: %w", gi, err)
		}
		targets := g.Targets
		if len(targets) == 0 {
			targets = c.Targets
		}
		if len(targets) == 1 && targets[0] == peft.AllLinear {
			targets = llamaLinears
		}
		for _, t := range targets {
			if !regexp.MustCompile(`^[A-Za-z0-9_]+$`).MatchString(t) {
				return peft.Config{}, fmt.Errorf("train: layer group %d: target %q is not a module name", gi, t)
			}
		}
		r, alpha := g.Rank, g.Alpha
		if r == 0 {
			r = c.Rank
		}
		if alpha == 0 {
			alpha = c.Alpha
		}
		if k != "ia3" && r <= 0 {
			return peft.Config{}, fmt.Errorf("train: layer group %d: rank %d must be positive", gi, r)
		}
		var idx []string
		for _, l := range layers {
			if l >= numLayers {
				return peft.Config{}, fmt.Errorf("train: layer group %d: layer %d is past the model's %d layers", gi, l, numLayers)
			}
			if prev, dup := seen[l]; dup {
				return peft.Config{}, fmt.Errorf("train: layer %d is in layer groups %d and %d", l, prev, gi)
			}
			seen[l] = gi
			idx = append(idx, strconv.Itoa(l))
			for _, t := range targets {
				sub := "self_attn"
				if t == "gate_proj" || t == "up_proj" || t == "down_proj" {
					sub = "mlp"
				}
				path := fmt.Sprintf("model.layers.%d.%s.%s", l, sub, t)
				rankP[path], alphaP[path] = float64(r), alpha
			}
		}
		alts = append(alts, `model\.layers\.(?:`+strings.Join(idx, "|")+`)\.(?:self_attn|mlp)\.(?:`+strings.Join(targets, "|")+`)`)
	}
	pattern := strings.Join(alts, "|")
	if first == "ia3" {
		pc := peft.IA3Config()
		pc.TargetModules = peft.Modules{Pattern: pattern}
		pc.BaseModelNameOrPath = c.Model
		return pc, nil
	}
	pc := peft.LoRAConfig()
	pc.R, pc.LoraAlpha, pc.LoraDropout, pc.UseRSLoRA = c.Rank, c.Alpha, c.Dropout, c.RSLoRA
	pc.UseDoRA = first == "dora"
	if c.Init != "" {
		pc.InitLoraWeights = c.Init
	}
	pc.TargetModules = peft.Modules{Pattern: pattern}
	pc.RankPattern, pc.AlphaPattern = rankP, alphaP
	pc.BaseModelNameOrPath = c.Model
	return pc, nil
}
