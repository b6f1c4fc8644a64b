// Package synth writes small Llama checkpoints with deterministic random weights, in the layout
// Hugging Face uses, so that tests and demos run without downloading a model.
package synth

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// Preset is a model size.
type Preset struct {
	Name                                                        string
	Vocab, Hidden, Intermediate, Layers, Heads, KVHeads, MaxPos int
	Tied                                                        bool
}

// Presets are the sizes init-model offers: "tiny" trains in seconds on a CPU; "small" is closer to
// a real model's proportions.
var Presets = map[string]Preset{
	"tiny":  {Name: "tiny", Vocab: 384, Hidden: 64, Intermediate: 176, Layers: 2, Heads: 4, KVHeads: 2, MaxPos: 512},
	"small": {Name: "small", Vocab: 2048, Hidden: 256, Intermediate: 688, Layers: 4, Heads: 8, KVHeads: 4, MaxPos: 1024},
}

// Options control Write.
type Options struct {
	Preset Preset
	Seed   uint64
	// DType is the safetensors type of the weights: "F32", "F16" or "BF16".
	DType string
	// Vocab overrides the preset's vocabulary size when positive (to match a tokenizer).
	Vocab int
	// Bias gives every attention projection a bias (config attention_bias), drawn at random.
	Bias bool
}

// Result describes what Write produced.
type Result struct {
	Dir    string `json:"dir"`
	Preset string `json:"preset"`
	Seed   uint64 `json:"seed"`
	Params int64  `json:"params"`
	DType  string `json:"dtype"`
}

// Config returns the config.json of a preset, as transformers writes it for LlamaForCausalLM.
func Config(p Preset, vocab int, dtype string) map[string]any {
	torch := map[string]string{"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
	return map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"vocab_size":              vocab,
		"hidden_size":             p.Hidden,
		"intermediate_size":       p.Intermediate,
		"num_hidden_layers":       p.Layers,
		"num_attention_heads":     p.Heads,
		"num_key_value_heads":     p.KVHeads,
		"head_dim":                p.Hidden / p.Heads,
		"hidden_act":              "silu",
		"max_position_embeddings": p.MaxPos,
		"rms_norm_eps":            1e-5,
		"rope_theta":              10000.0,
		"rope_scaling":            nil,
		"attention_bias":          false,
		"mlp_bias":                false,
		"tie_word_embeddings":     p.Tied,
		"initializer_range":       0.02,
		"bos_token_id":            0,
		"eos_token_id":            1,
		"torch_dtype":             torch,
		"transformers_version":    "4.46.0",
	}
}

// Special tokens of the synthetic tokenizer: BOS, EOS and ChatML's turn markers.
var specialTokens = []string{"<s>", "</s>", "<|im_start|>", "<|im_end|>"}

// chatML is the chat template of the synthetic tokenizer (Qwen2's and SmolLM's format).
const chatML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Write creates dir (if needed) and writes config.json and model.safetensors with linear and
// embedding weights drawn from N(0, 0.02²) as transformers initialises them, and a byte-level BPE
// tokenizer (tokenizer.json, tokenizer_config.json with a ChatML template) learned from the
// synthetic corpus. Norm weights are drawn uniformly from [0.75, 1.25] and biases from
// N(0, 0.02²), not set to 1 and 0 as transformers does: a test model whose norms are all ones
// cannot tell one norm from another, nor a bias added twice from one left out. Norms stay close
// enough to 1 that the model still trains from them.
func Write(dir string, o Options) (Result, error) {
	p := o.Preset
	if p.Hidden == 0 {
		return Result{}, fmt.Errorf("init model: no preset given")
	}
	if o.DType == "" {
		o.DType = "F32"
	}
	if o.DType != "F32" && o.DType != "F16" && o.DType != "BF16" {
		return Result{}, fmt.Errorf("init model: dtype %q is not F32, F16 or BF16", o.DType)
	}
	vocab := p.Vocab
	if o.Vocab > 0 {
		vocab = o.Vocab
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("init model: %w", err)
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	// Norms and biases come from their own stream, so that the linear weights of a seed do not
	// depend on which of them a model has.
	rs := rand.New(rand.NewPCG(o.Seed, 0x6e6f726d))
	tensors := map[string]checkpoint.Tensor{}
	var params int64
	var firstErr error
	put := func(name string, shape []int, v []float32) {
		t, err := checkpoint.FromFloat32As(v, shape, o.DType)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		tensors[name] = t
		params += int64(len(v))
	}
	// add draws a tensor from N(0, std²), or with std 0 (a norm weight) from U[0.75, 1.25].
	add := func(name string, shape []int, std float64) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			if std == 0 {
				v[i] = float32(0.75 + 0.5*rs.Float64())
			} else {
				v[i] = float32(r.NormFloat64() * std)
			}
		}
		put(name, shape, v)
	}
	addBias := func(name string, n int) {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rs.NormFloat64() * 0.02)
		}
		put(name, []int{n}, v)
	}
	hd := p.Hidden / p.Heads
	add("model.embed_tokens.weight", []int{vocab, p.Hidden}, 0.02)
	for l := 0; l < p.Layers; l++ {
		pre := fmt.Sprintf("model.layers.%d.", l)
		add(pre+"input_layernorm.weight", []int{p.Hidden}, 0)
		add(pre+"self_attn.q_proj.weight", []int{p.Heads * hd, p.Hidden}, 0.02)
		add(pre+"self_attn.k_proj.weight", []int{p.KVHeads * hd, p.Hidden}, 0.02)
		add(pre+"self_attn.v_proj.weight", []int{p.KVHeads * hd, p.Hidden}, 0.02)
		add(pre+"self_attn.o_proj.weight", []int{p.Hidden, p.Heads * hd}, 0.02)
		if o.Bias {
			addBias(pre+"self_attn.q_proj.bias", p.Heads*hd)
			addBias(pre+"self_attn.k_proj.bias", p.KVHeads*hd)
			addBias(pre+"self_attn.v_proj.bias", p.KVHeads*hd)
			addBias(pre+"self_attn.o_proj.bias", p.Hidden)
		}
		add(pre+"post_attention_layernorm.weight", []int{p.Hidden}, 0)
		add(pre+"mlp.gate_proj.weight", []int{p.Intermediate, p.Hidden}, 0.02)
		add(pre+"mlp.up_proj.weight", []int{p.Intermediate, p.Hidden}, 0.02)
		add(pre+"mlp.down_proj.weight", []int{p.Hidden, p.Intermediate}, 0.02)
	}
	add("model.norm.weight", []int{p.Hidden}, 0)
	if !p.Tied {
		// A trained lm_head has rows of norm ~1, not 0.02·√hidden: with N(0, 1/hidden) the logits can
		// span the range a trained model's do, so that adapters on the layers below can learn.
		add("lm_head.weight", []int{vocab, p.Hidden}, 1/math.Sqrt(float64(p.Hidden)))
	}
	if firstErr != nil {
		return Result{}, fmt.Errorf("init model: %w", firstErr)
	}
	cfg := Config(p, vocab, o.DType)
	cfg["attention_bias"] = o.Bias
	if err := checkpoint.WriteConfig(filepath.Join(dir, checkpoint.ConfigFile), cfg); err != nil {
		return Result{}, fmt.Errorf("init model: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, checkpoint.WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return Result{}, fmt.Errorf("init model: %w", err)
	}
	if err := WriteTokenizer(dir, vocab); err != nil {
		return Result{}, fmt.Errorf("init model: %w", err)
	}
	return Result{Dir: dir, Preset: p.Name, Seed: o.Seed, Params: params, DType: o.DType}, nil
}

// WriteTokenizer writes the synthetic byte-level BPE tokenizer (at most vocab tokens, learned from
// the synthetic corpus) and its tokenizer_config.json into dir.
func WriteTokenizer(dir string, vocab int) error {
	tj, err := tokenizer.TrainByteLevelBPE(corpusForTokenizer(), vocab, specialTokens)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"bos_token":       specialTokens[0],
		"eos_token":       specialTokens[1],
		"add_bos_token":   true,
		"chat_template":   chatML,
		"tokenizer_class": "PreTrainedTokenizerFast",
	}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "tokenizer_config.json"), append(cfg, '\n'), 0o644)
}
