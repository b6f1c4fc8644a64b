// Package peft holds lathe's adapter methods (LoRA, QLoRA, IA3): their configs, their parameters
// and how they wrap the base model's linear layers, and the Hugging Face PEFT file format
// (adapter_config.json and adapter_model.safetensors) so that PeftModel.from_pretrained loads what
// lathe saves, and lathe loads what PEFT saves.
package peft

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// PEFT's adapter types, as adapter_config.json's peft_type spells them.
const (
	TypeLoRA = "LORA"
	TypeIA3  = "IA3"
)

// PEFTVersion is the PEFT release whose adapter_config.json field set Save writes.
const PEFTVersion = "0.19.1"

// AllLinear is target_modules' shorthand for every linear layer but the output layer.
const AllLinear = "all-linear"

// Modules is PEFT's target_modules or feedforward_modules: a list of module names, each matching
// a module whose path equals it or ends in "." + it, or one string: a regular expression that must
// match the whole module path (as PEFT's re.fullmatch), or "all-linear".
type Modules struct {
	Names []string
	// Pattern is the string form; when set, Names is unused.
	Pattern string
}

// Names returns a Modules listing names.
func Names(names ...string) Modules { return Modules{Names: names} }

// IsZero reports whether nothing is given (JSON null).
func (m Modules) IsZero() bool { return m.Names == nil && m.Pattern == "" }

// MarshalJSON writes a list, a string or null, as PEFT does.
func (m Modules) MarshalJSON() ([]byte, error) {
	if m.Pattern != "" {
		return json.Marshal(m.Pattern)
	}
	if m.Names == nil {
		return []byte("null"), nil
	}
	return json.Marshal(m.Names)
}

// UnmarshalJSON reads a list, a string or null.
func (m *Modules) UnmarshalJSON(b []byte) error {
	*m = Modules{}
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &m.Pattern)
	}
	if err := json.Unmarshal(b, &m.Names); err != nil {
		return err
	}
	if m.Names == nil {
		m.Names = []string{}
	}
	return nil
}

// Config is a PEFT adapter_config.json for LoRA or IA3, with PEFT's field names and defaults. Fields
// lathe does not interpret are kept in Extra so that a loaded config saves back unchanged.
type Config struct {
	// PeftType is TypeLoRA or TypeIA3.
	PeftType            string   `json:"peft_type"`
	TaskType            string   `json:"task_type"`
	BaseModelNameOrPath string   `json:"base_model_name_or_path"`
	Revision            *string  `json:"revision"`
	InferenceMode       bool     `json:"inference_mode"`
	TargetModules       Modules  `json:"target_modules"`
	FanInFanOut         bool     `json:"fan_in_fan_out"`
	ModulesToSave       []string `json:"modules_to_save"`

	// LoRA.
	R           int     `json:"r"`
	LoraAlpha   float64 `json:"lora_alpha"`
	LoraDropout float64 `json:"lora_dropout"`
	// UseRSLoRA scales by lora_alpha/sqrt(r) instead of lora_alpha/r.
	UseRSLoRA bool   `json:"use_rslora"`
	Bias      string `json:"bias"`
	// InitLoraWeights is true (A kaiming-uniform, B zero), false (both random, as nn.Linear) or
	// "gaussian" (A normal with std 1/r, B zero).
	InitLoraWeights   any            `json:"init_lora_weights"`
	LayersToTransform any            `json:"layers_to_transform"`
	LayersPattern     any            `json:"layers_pattern"`
	RankPattern       map[string]any `json:"rank_pattern"`
	AlphaPattern      map[string]any `json:"alpha_pattern"`
	UseDoRA           bool           `json:"use_dora"`

	// IA3.
	FeedforwardModules Modules `json:"feedforward_modules"`
	InitIA3Weights     bool    `json:"init_ia3_weights"`

	PeftVersion string `json:"peft_version"`
	// rankOrder and alphaOrder are rank_pattern's and alpha_pattern's keys in the file's order,
	// the order PEFT tries them in.
	rankOrder, alphaOrder []string
	// Extra holds the fields read from a file that lathe does not interpret, raw.
	Extra map[string]json.RawMessage `json:"-"`
}

// LoRAConfig returns PEFT's LoraConfig defaults (r 8, lora_alpha 8, no dropout) for a causal LM.
func LoRAConfig() Config {
	return Config{PeftType: TypeLoRA, TaskType: "CAUSAL_LM", R: 8, LoraAlpha: 8, Bias: "none",
		InitLoraWeights: true, RankPattern: map[string]any{}, AlphaPattern: map[string]any{}, PeftVersion: PEFTVersion}
}

// IA3Config returns PEFT's IA3Config defaults for a causal LM; target and feedforward modules
// default to Llama's (k_proj, v_proj, down_proj; down_proj) when New resolves them.
func IA3Config() Config {
	return Config{PeftType: TypeIA3, TaskType: "CAUSAL_LM", InitIA3Weights: true, PeftVersion: PEFTVersion}
}

// loraDefaults are the fields PEFT's LoraConfig writes that lathe does not interpret, with their
// default values. A non-default value of an option that changes the computation is refused.
var loraDefaults = map[string]any{
	"alora_invocation_tokens": nil, "arrow_config": nil, "auto_mapping": nil, "corda_config": nil,
	"ensure_weight_tying": false, "eva_config": nil, "exclude_modules": nil, "layer_replication": nil,
	"loftq_config": map[string]any{}, "lora_bias": false, "lora_ga_config": nil, "megatron_config": nil,
	"megatron_core": "megatron.core", "qalora_group_size": 16, "target_parameters": nil,
	"trainable_token_indices": nil, "use_bdlora": nil, "use_qalora": false,
}

var ia3Defaults = map[string]any{"auto_mapping": nil, "exclude_modules": nil}

// semantic lists the uninterpreted options whose non-default values would change what the adapter
// computes or which parameters it has.
var semantic = []string{"alora_invocation_tokens", "arrow_config", "exclude_modules", "layer_replication",
	"lora_bias", "lora_ga_config", "megatron_config", "target_parameters", "trainable_token_indices",
	"use_bdlora", "use_qalora", "corda_config", "eva_config"}

// ParseConfig decodes an adapter_config.json. Fields it does not know are kept in Extra.
func ParseConfig(raw []byte) (Config, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Config{}, fmt.Errorf("parse adapter config: %w", err)
	}
	var head struct {
		PeftType string `json:"peft_type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Config{}, fmt.Errorf("parse adapter config: %w", err)
	}
	var c Config
	switch head.PeftType {
	case TypeLoRA:
		c = LoRAConfig()
	case TypeIA3:
		c = IA3Config()
	default:
		return Config{}, fmt.Errorf("parse adapter config: peft_type %q is not supported (LORA or IA3)", head.PeftType)
	}
	c.PeftVersion = ""
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("parse adapter config: %w", err)
	}
	if v, ok := fields["task_type"]; ok && string(bytes.TrimSpace(v)) == "null" {
		c.TaskType = ""
	}
	c.rankOrder, c.alphaOrder = objectKeys(fields["rank_pattern"]), objectKeys(fields["alpha_pattern"])
	known := c.knownFields()
	c.Extra = map[string]json.RawMessage{}
	for k, v := range fields {
		if !known[k] {
			c.Extra[k] = v
		}
	}
	return c, nil
}

// objectKeys returns the keys of a JSON object in their order (nil for anything else).
func objectKeys(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return keys
}

// knownFields are the fields of c's type that Config interprets.
func (c *Config) knownFields() map[string]bool {
	k := map[string]bool{"peft_type": true, "task_type": true, "base_model_name_or_path": true, "revision": true,
		"inference_mode": true, "target_modules": true, "fan_in_fan_out": true, "modules_to_save": true, "peft_version": true}
	add := func(names ...string) {
		for _, n := range names {
			k[n] = true
		}
	}
	if c.PeftType == TypeIA3 {
		add("feedforward_modules", "init_ia3_weights")
	} else {
		add("r", "lora_alpha", "lora_dropout", "use_rslora", "bias", "init_lora_weights", "layers_to_transform",
			"layers_pattern", "rank_pattern", "alpha_pattern", "use_dora")
	}
	return k
}

// MarshalJSON writes the fields PEFT writes for the config's type, sorted and with PEFT's defaults
// for the options lathe does not interpret, overlaid by Extra.
func (c Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	defaults := loraDefaults
	if c.PeftType == TypeIA3 {
		defaults = ia3Defaults
	}
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range c.Extra {
		out[k] = v
	}
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	strs := func(s []string) any {
		if s == nil {
			return nil
		}
		return s
	}
	out["peft_type"] = c.PeftType
	out["task_type"] = str(c.TaskType)
	out["base_model_name_or_path"] = str(c.BaseModelNameOrPath)
	out["revision"] = c.Revision
	out["inference_mode"] = c.InferenceMode
	out["target_modules"] = c.TargetModules
	out["fan_in_fan_out"] = c.FanInFanOut
	out["modules_to_save"] = strs(c.ModulesToSave)
	out["peft_version"] = str(c.PeftVersion)
	if c.PeftType == TypeIA3 {
		out["feedforward_modules"] = c.FeedforwardModules
		out["init_ia3_weights"] = c.InitIA3Weights
	} else {
		out["r"] = c.R
		out["lora_alpha"] = c.LoraAlpha
		out["lora_dropout"] = pyFloat(c.LoraDropout)
		out["use_rslora"] = c.UseRSLoRA
		out["bias"] = c.Bias
		out["init_lora_weights"] = c.InitLoraWeights
		out["layers_to_transform"] = c.LayersToTransform
		out["layers_pattern"] = c.LayersPattern
		out["rank_pattern"] = orEmpty(c.RankPattern)
		out["alpha_pattern"] = orEmpty(c.AlphaPattern)
		out["use_dora"] = c.UseDoRA
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Python's json.dumps leaves < > & alone
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// pyFloat writes f as Python's json module writes a float (0.0, not 0), since lora_dropout is a
// float in PEFT.
func pyFloat(f float64) json.RawMessage {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return json.RawMessage(s)
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// Scale is the LoRA scaling factor: lora_alpha/r, or lora_alpha/sqrt(r) with use_rslora.
func (c *Config) Scale() float32 { return c.scaleOf(c.R, c.LoraAlpha) }

func (c *Config) scaleOf(r int, alpha float64) float32 {
	if c.UseRSLoRA {
		return float32(alpha / math.Sqrt(float64(r)))
	}
	return float32(alpha / float64(r))
}

// patternKey returns the key of a rank_pattern or alpha_pattern that selects module path, as
// PEFT's get_pattern_key: the path itself if it is a key, else the first key (in the file's order)
// that matches as (.*\.)?(KEY)$ from the path's start; "" when none does.
func patternKey(keys []string, res map[string]*regexp.Regexp, path string) string {
	if _, ok := res[path]; ok {
		return path
	}
	for _, k := range keys {
		if res[k].MatchString(path) {
			return k
		}
	}
	return ""
}

// patterns is a rank_pattern or alpha_pattern ready to match: its keys in the file's order and
// their regular expressions.
type patterns struct {
	keys []string
	res  map[string]*regexp.Regexp
	vals map[string]float64
}

func compilePatterns(field string, m map[string]any, order []string) (*patterns, error) {
	p := &patterns{res: map[string]*regexp.Regexp{}, vals: map[string]float64{}}
	if len(order) != len(m) {
		order = sortedKeys(m)
	}
	for _, k := range order {
		v, ok := m[k].(float64)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("adapter config: %s[%q] is %v, not a number", field, k, m[k])
		}
		re, err := regexp.Compile(`^(?:(.*\.)?(` + k + `))$`)
		if err != nil {
			return nil, fmt.Errorf("adapter config: %s key %q is not a regular expression Go accepts: %w", field, k, err)
		}
		p.keys = append(p.keys, k)
		p.res[k], p.vals[k] = re, v
	}
	return p, nil
}

// lookup returns the value for path and whether a key selected it.
func (p *patterns) lookup(path string) (float64, bool) {
	k := patternKey(p.keys, p.res, path)
	if k == "" {
		return 0, false
	}
	return p.vals[k], true
}

// layerIndexes reads layers_to_transform: nil (every layer), an int or a list of ints.
func (c *Config) layerIndexes() (map[int]bool, error) {
	switch v := c.LayersToTransform.(type) {
	case nil:
		return nil, nil
	case float64:
		if v != math.Trunc(v) {
			return nil, fmt.Errorf("adapter config: layers_to_transform %v is not an integer", v)
		}
		return map[int]bool{int(v): true}, nil
	case int:
		return map[int]bool{v: true}, nil
	case []int:
		m := map[int]bool{}
		for _, x := range v {
			m[x] = true
		}
		return m, nil
	case []any:
		if len(v) == 0 {
			return nil, nil // PEFT treats an empty list as no restriction
		}
		m := map[int]bool{}
		for _, x := range v {
			f, ok := x.(float64)
			if !ok || f != math.Trunc(f) {
				return nil, fmt.Errorf("adapter config: layers_to_transform holds %v, not an integer", x)
			}
			m[int(f)] = true
		}
		return m, nil
	}
	return nil, fmt.Errorf("adapter config: layers_to_transform %v is not an integer or a list of them", c.LayersToTransform)
}

// layerPatterns reads layers_pattern: nil, a string or a list of strings, as regular expressions
// that name the module list holding the layers ("layers" for Llama).
func (c *Config) layerPatterns() ([]*regexp.Regexp, error) {
	var names []string
	switch v := c.LayersPattern.(type) {
	case nil:
	case string:
		names = []string{v}
	case []string:
		names = v
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("adapter config: layers_pattern holds %v, not a string", x)
			}
			names = append(names, s)
		}
	default:
		return nil, fmt.Errorf("adapter config: layers_pattern %v is not a string or a list of them", v)
	}
	if len(names) == 0 {
		// PEFT's default: the number after any ".name." in the path.
		return []*regexp.Regexp{regexp.MustCompile(`^.*\.[^.]*\.(\d+)\.`)}, nil
	}
	var res []*regexp.Regexp
	for _, n := range names {
		re, err := regexp.Compile(`^.*\.(?:` + n + `)\.(\d+)\.`)
		if err != nil {
			return nil, fmt.Errorf("adapter config: layers_pattern %q is not a regular expression Go accepts: %w", n, err)
		}
		res = append(res, re)
	}
	return res, nil
}

// layerOf returns the layer index PEFT reads from a module path with the first layers pattern
// that matches, or false.
func layerOf(res []*regexp.Regexp, path string) (int, bool) {
	for _, re := range res {
		if m := re.FindStringSubmatch(path); m != nil {
			i, err := strconv.Atoi(m[1])
			return i, err == nil
		}
	}
	return 0, false
}

// validate checks the options that do not depend on the model.
func (c *Config) validate() error {
	unsupported := func(what string) error {
		return fmt.Errorf("adapter config: %s is not supported", what)
	}
	if c.FanInFanOut {
		return unsupported("fan_in_fan_out true (Llama's linear layers store [out, in])")
	}
	if c.ModulesToSave != nil {
		return unsupported(fmt.Sprintf("modules_to_save %v", c.ModulesToSave))
	}
	for _, k := range semantic {
		if v, ok := c.Extra[k]; ok {
			s := string(bytes.TrimSpace(v))
			if s != "null" && s != "false" {
				return unsupported(fmt.Sprintf("%s %s", k, s))
			}
		}
	}
	if c.PeftType == TypeIA3 {
		if !c.InitIA3Weights {
			return unsupported("init_ia3_weights false")
		}
		return nil
	}
	if c.PeftType != TypeLoRA {
		return fmt.Errorf("adapter config: peft_type %q is not supported (LORA or IA3)", c.PeftType)
	}
	switch {
	case c.R <= 0 || c.R > MaxRank:
		return fmt.Errorf("adapter config: r %d is outside [1, %d]", c.R, MaxRank)
	case math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0):
		return fmt.Errorf("adapter config: lora_alpha %v is not finite", c.LoraAlpha)
	case !(c.LoraDropout >= 0 && c.LoraDropout < 1):
		return fmt.Errorf("adapter config: lora_dropout %v is not in [0, 1)", c.LoraDropout)
	case c.Bias != "none" && c.Bias != "":
		return unsupported(fmt.Sprintf("bias %q (only \"none\")", c.Bias))
	}
	for k, v := range c.RankPattern {
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) || f < 1 || f > MaxRank {
			return fmt.Errorf("adapter config: rank_pattern[%q] is %v, not an integer in [1, %d]", k, v, MaxRank)
		}
	}
	if _, err := c.layerIndexes(); err != nil {
		return err
	}
	if _, err := c.layerPatterns(); err != nil {
		return err
	}
	if c.LayersToTransform != nil && c.TargetModules.Pattern != "" && c.TargetModules.Pattern != AllLinear {
		// PEFT's LoraConfig raises the same.
		return fmt.Errorf("adapter config: layers_to_transform cannot be used when target_modules is a str")
	}
	switch v := c.InitLoraWeights.(type) {
	case bool:
	case string:
		if v != "gaussian" && v != InitPiSSA {
			return unsupported(fmt.Sprintf("init_lora_weights %q (true, false, \"gaussian\" or \"pissa\")", v))
		}
	default:
		return unsupported(fmt.Sprintf("init_lora_weights %v", v))
	}
	return nil
}

// matcher tells which module paths a Modules value selects.
type matcher struct {
	names []string
	re    *regexp.Regexp
}

func newMatcher(field string, m Modules) (*matcher, error) {
	if m.Pattern != "" {
		re, err := regexp.Compile(`^(?:` + m.Pattern + `)$`)
		if err != nil {
			return nil, fmt.Errorf("adapter config: %s %q is not a regular expression Go accepts: %w", field, m.Pattern, err)
		}
		return &matcher{re: re}, nil
	}
	return &matcher{names: m.Names}, nil
}

// match reports whether path is selected, as PEFT's check_target_module_exists does.
func (m *matcher) match(path string) bool {
	if m.re != nil {
		return m.re.MatchString(path)
	}
	for _, n := range m.names {
		if matchName(path, n) {
			return true
		}
	}
	return false
}

func matchName(path, name string) bool { return path == name || strings.HasSuffix(path, "."+name) }

// sortedUnique returns the distinct strings in order.
func sortedUnique(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// MaxRank bounds a LoRA adapter's r: far above any useful rank, far below what would exhaust
// memory when an adapter of that rank is built.
const MaxRank = 1 << 14
