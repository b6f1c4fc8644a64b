// Package model is the Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama) built on
// engine graphs, and the loading of its Hugging Face checkpoints.
package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/model/checkpoint"
)

// Config is the part of a Hugging Face config.json that defines a Llama-family decoder.
type Config struct {
	Architectures         []string     `json:"architectures"`
	ModelType             string       `json:"model_type"`
	VocabSize             int          `json:"vocab_size"`
	HiddenSize            int          `json:"hidden_size"`
	IntermediateSize      int          `json:"intermediate_size"`
	NumLayers             int          `json:"num_hidden_layers"`
	NumHeads              int          `json:"num_attention_heads"`
	NumKVHeads            int          `json:"num_key_value_heads"`
	HeadDim               int          `json:"head_dim"`
	RMSNormEps            float64      `json:"rms_norm_eps"`
	RopeTheta             float64      `json:"rope_theta"`
	RopeScaling           *RopeScaling `json:"rope_scaling"`
	MaxPositionEmbeddings int          `json:"max_position_embeddings"`
	TieWordEmbeddings     bool         `json:"tie_word_embeddings"`
	// AttentionBias gives q, k, v and o projections biases (Llama's attention_bias); Qwen2 always
	// has q, k and v biases.
	AttentionBias bool   `json:"attention_bias"`
	MLPBias       bool   `json:"mlp_bias"`
	HiddenAct     string `json:"hidden_act"`
	TorchDType    string `json:"torch_dtype"`
	BOSTokenID    *int   `json:"bos_token_id"`
	EOSTokenID    any    `json:"eos_token_id"` // an int or a list of ints
	SlidingWindow *int   `json:"sliding_window"`
	// RopeFreqFactors, when set, divide the RoPE frequencies one by one (head_dim/2 of them),
	// after rope_scaling: llama.cpp's per-dimension freq_factors, which a GGUF carries as
	// rope_freqs.weight in place of Llama 3.1's rope_scaling. No config.json has them.
	RopeFreqFactors []float64 `json:"-"`
}

// RopeScaling is config.json's rope_scaling: the context-extension variants of these models.
type RopeScaling struct {
	Type                          string  `json:"type"`
	RopeType                      string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
	AttentionFactor               float64 `json:"attention_factor"`
	BetaFast                      float64 `json:"beta_fast"`
	BetaSlow                      float64 `json:"beta_slow"`
}

// Kind is the scaling variant: "default", "linear", "dynamic", "llama3" or "yarn".
func (r *RopeScaling) Kind() string {
	if r == nil {
		return "default"
	}
	if r.RopeType != "" {
		return r.RopeType
	}
	if r.Type != "" {
		return r.Type
	}
	return "default"
}

var supportedArchitectures = map[string]bool{
	"LlamaForCausalLM": true, "MistralForCausalLM": true, "Qwen2ForCausalLM": true,
}

// LoadConfig reads and checks dir/config.json.
// A path ending in .gguf reads the configuration from that GGUF file's metadata.
func LoadConfig(dir string) (*Config, error) {
	if isGGUF(dir) {
		gf, err := openGGUF(dir)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		defer gf.Close()
		raw, err := json.Marshal(gf.Config())
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		c, err := ParseConfig(raw)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", dir, err)
		}
		c.RopeFreqFactors = gf.RopeFreqFactors()
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("load %s: %w", dir, err)
		}
		return c, nil
	}
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes a config.json, fills Hugging Face's defaults and checks the architecture.
func ParseConfig(raw []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	arch := ""
	if len(c.Architectures) > 0 {
		arch = c.Architectures[0]
	}
	if !supportedArchitectures[arch] {
		return nil, fmt.Errorf("unknown architecture %q (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)", arch)
	}
	if c.NumKVHeads == 0 {
		c.NumKVHeads = c.NumHeads
	}
	if c.HeadDim == 0 && c.NumHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-6
	}
	if c.HiddenAct == "" {
		c.HiddenAct = "silu"
	}
	if arch == "Qwen2ForCausalLM" {
		c.AttentionBias = true
	}
	return c, c.Validate()
}

// IsQwen2 reports whether the model is Qwen2 (q, k, v biases; no o_proj bias).
func (c *Config) IsQwen2() bool {
	return len(c.Architectures) > 0 && c.Architectures[0] == "Qwen2ForCausalLM"
}

// Bounds on config.json's counts: far above any released Llama-family model, far below what
// would exhaust memory while the graph is built. A count beyond its bound is refused before
// anything is allocated.
const (
	MaxVocab        = 1 << 22 // 4M tokens (Llama 3: 128256)
	MaxHidden       = 1 << 16 // hidden_size (Llama 3.1 405B: 16384)
	MaxIntermediate = 1 << 18 // intermediate_size (405B: 53248)
	MaxLayers       = 1024    // num_hidden_layers (405B: 126)
	MaxHeads        = 1024    // num_attention_heads and num_key_value_heads (405B: 128)
	MaxHeadDim      = 1024    // head_dim (usually 64 or 128)
	MaxContext      = 1 << 24 // max_position_embeddings (16M; the longest released: 10M)
)

// Validate checks that the dimensions are consistent and within the bounds above.
func (c *Config) Validate() error {
	for _, b := range []struct {
		name       string
		v, lo, max int
	}{
		{"vocab_size", c.VocabSize, 1, MaxVocab},
		{"hidden_size", c.HiddenSize, 1, MaxHidden},
		{"intermediate_size", c.IntermediateSize, 1, MaxIntermediate},
		{"num_hidden_layers", c.NumLayers, 1, MaxLayers},
		{"num_attention_heads", c.NumHeads, 1, MaxHeads},
		{"num_key_value_heads", c.NumKVHeads, 1, MaxHeads},
		{"head_dim", c.HeadDim, 1, MaxHeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings, 0, MaxContext},
	} {
		if b.v < b.lo || b.v > b.max {
			return fmt.Errorf("config: %s %d is outside [%d, %d]", b.name, b.v, b.lo, b.max)
		}
	}
	switch {
	case c.VocabSize <= 0 || c.HiddenSize <= 0 || c.IntermediateSize <= 0 || c.NumLayers <= 0 || c.NumHeads <= 0:
		return fmt.Errorf("config: vocab_size, hidden_size, intermediate_size, num_hidden_layers and num_attention_heads must be positive")
	case c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0:
		return fmt.Errorf("config: num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	case c.HeadDim <= 0 || c.HeadDim%2 != 0:
		return fmt.Errorf("config: head_dim %d must be positive and even", c.HeadDim)
	case c.HiddenAct != "silu":
		return fmt.Errorf("config: hidden_act %q is not supported (silu only)", c.HiddenAct)
	}
	switch k := c.RopeScaling.Kind(); k {
	case "default", "linear", "dynamic", "llama3", "yarn":
	default:
		return fmt.Errorf("config: rope_scaling type %q is not supported", k)
	}
	if f := c.RopeFreqFactors; f != nil {
		if len(f) != c.HeadDim/2 {
			return fmt.Errorf("config: %d RoPE frequency factors for head_dim %d (want %d)", len(f), c.HeadDim, c.HeadDim/2)
		}
		for i, v := range f {
			if !(v > 0) || math.IsInf(v, 0) {
				return fmt.Errorf("config: RoPE frequency factor %d is %v, want a positive finite number", i, v)
			}
		}
	}
	return nil
}

// Rope returns the inverse frequencies (head_dim/2 of them) and the attention scale of the rotary
// embedding for sequences of up to seqLen tokens, following transformers' modeling_rope_utils.
func (c *Config) Rope(seqLen int) (invFreq []float32, attnScale float32) {
	d := c.HeadDim
	base := c.RopeTheta
	rs := c.RopeScaling
	kind := rs.Kind()
	if kind == "dynamic" && c.MaxPositionEmbeddings > 0 && seqLen > c.MaxPositionEmbeddings {
		// Dynamic NTK: grow the base with the sequence beyond the trained context.
		f := rs.Factor*float64(seqLen)/float64(c.MaxPositionEmbeddings) - (rs.Factor - 1)
		base *= math.Pow(f, float64(d)/float64(d-2))
	}
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(base, float64(2*i)/float64(d))
	}
	attn := 1.0
	switch kind {
	case "linear":
		for i := range inv {
			inv[i] /= rs.Factor
		}
	case "llama3":
		ff := checkpoint.Llama3RopeFactors(base, d, rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositionEmbeddings)
		for i := range inv {
			inv[i] /= ff[i]
		}
	case "yarn":
		orig := float64(rs.OriginalMaxPositionEmbeddings)
		if orig == 0 {
			orig = float64(c.MaxPositionEmbeddings)
		}
		betaFast, betaSlow := rs.BetaFast, rs.BetaSlow
		if betaFast == 0 {
			betaFast = 32
		}
		if betaSlow == 0 {
			betaSlow = 1
		}
		corr := func(rot float64) float64 {
			return float64(d) * math.Log(orig/(rot*2*math.Pi)) / (2 * math.Log(c.RopeTheta))
		}
		low := math.Max(math.Floor(corr(betaFast)), 0)
		high := math.Min(math.Ceil(corr(betaSlow)), float64(d-1))
		if low == high {
			high += 0.001
		}
		for i, f := range inv {
			ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
			extrapolation := 1 - ramp
			inv[i] = (f/rs.Factor)*(1-extrapolation) + f*extrapolation
		}
		attn = rs.AttentionFactor
		if attn == 0 {
			attn = 0.1*math.Log(rs.Factor) + 1
		}
	}
	// A GGUF's rope_freqs divide after the scaling, as ggml's rope applies freq_factors.
	for i, f := range c.RopeFreqFactors {
		inv[i] /= f
	}
	invFreq = make([]float32, len(inv))
	for i, f := range inv {
		invFreq[i] = float32(f)
	}
	return invFreq, float32(attn)
}
