package gguf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// ParseType parses a ggml tensor type name that lathe writes: F32, F16, BF16, Q8_0, Q4_0, Q4_K
// or Q6_K (case-insensitive).
func ParseType(s string) (parser.GGMLType, error) {
	for t := range blocks {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf type %q is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", s)
}

// ExportResult describes a written GGUF model.
type ExportResult struct {
	Out     string `json:"out"`
	Type    string `json:"type"`
	Tensors int    `json:"tensors"`
	Bytes   int64  `json:"bytes"`
	// Shards are the files of a split model, the first being Out.
	Shards []string `json:"shards,omitempty"`
}

// ModelConfig is the subset of a transformers config.json the exporter writes as {arch}.* keys.
type modelConfig struct {
	Architectures []string `json:"architectures"`
	Vocab         int      `json:"vocab_size"`
	Hidden        int      `json:"hidden_size"`
	Intermediate  int      `json:"intermediate_size"`
	Layers        int      `json:"num_hidden_layers"`
	Heads         int      `json:"num_attention_heads"`
	KVHeads       int      `json:"num_key_value_heads"`
	HeadDim       int      `json:"head_dim"`
	Eps           float64  `json:"rms_norm_eps"`
	Theta         float64  `json:"rope_theta"`
	MaxPos        int      `json:"max_position_embeddings"`
	RopeScaling   *struct {
		Type     string  `json:"type"`
		RopeType string  `json:"rope_type"`
		Factor   float64 `json:"factor"`
		Orig     int     `json:"original_max_position_embeddings"`
		LowFreq  float64 `json:"low_freq_factor"`
		HighFreq float64 `json:"high_freq_factor"`
	} `json:"rope_scaling"`
	// Orig is a top-level original_max_position_embeddings, which some configs carry.
	Orig int `json:"original_max_position_embeddings"`
}

// WriteModel writes the Hugging Face model folder dir (a Llama or Qwen2 checkpoint with its
// tokenizer) as a GGUF file, as llama.cpp's convert_hf_to_gguf.py lays it out: {arch}.* and
// tokenizer.ggml.* metadata, llama.cpp's tensor names, q and k rows of a llama model permuted to
// interleaved RoPE pairs. Matrices are stored as typ when their rows are whole blocks of it (else
// Q8_0 or F16, as llama.cpp falls back), vectors as F32. Tensors stream one at a time.
func WriteModel(dir, out string, typ parser.GGMLType) (ExportResult, error) {
	return WriteModelSplit(dir, out, typ, 1)
}

// WriteModelSplit is WriteModel writing the model as shards split files (see Writer.WriteSplit),
// named after out (NAME-00001-of-0000N.gguf) when shards > 1.
func WriteModelSplit(dir, out string, typ parser.GGMLType, shards int) (ExportResult, error) {
	if _, err := rowBytes(typ, 0); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	defer ck.Close()
	raw, err := os.ReadFile(filepath.Join(dir, checkpoint.ConfigFile))
	if err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	var c modelConfig
	if err := jsonUnmarshal(raw, &c); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %s: %w", checkpoint.ConfigFile, err)
	}
	arch := ""
	if len(c.Architectures) > 0 {
		arch = map[string]string{"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}[c.Architectures[0]]
	}
	if arch == "" {
		return ExportResult{}, fmt.Errorf("export gguf: architecture %v has no llama.cpp equivalent lathe writes (Llama, Mistral, Qwen2)", c.Architectures)
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if c.Theta == 0 {
		c.Theta = 10000
	}
	if c.Eps == 0 {
		c.Eps = 1e-6
	}
	var w Writer
	w.String("general.architecture", arch)
	w.String("general.name", filepath.Base(filepath.Clean(dir)))
	w.Uint32("general.alignment", alignment)
	a := arch + "."
	w.Uint32(a+"vocab_size", uint32(c.Vocab))
	w.Uint32(a+"context_length", uint32(c.MaxPos))
	w.Uint32(a+"embedding_length", uint32(c.Hidden))
	w.Uint32(a+"feed_forward_length", uint32(c.Intermediate))
	w.Uint32(a+"block_count", uint32(c.Layers))
	w.Uint32(a+"attention.head_count", uint32(c.Heads))
	w.Uint32(a+"attention.head_count_kv", uint32(c.KVHeads))
	w.Uint32(a+"attention.key_length", uint32(c.HeadDim))
	w.Uint32(a+"attention.value_length", uint32(c.HeadDim))
	w.Uint32(a+"rope.dimension_count", uint32(c.HeadDim))
	w.Float32(a+"rope.freq_base", float32(c.Theta))
	w.Float32(a+"attention.layer_norm_rms_epsilon", float32(c.Eps))
	if rs := c.RopeScaling; rs != nil {
		kind := rs.RopeType
		if kind == "" {
			kind = rs.Type
		}
		switch kind {
		case "", "default":
		case "linear", "yarn":
			w.String(a+"rope.scaling.type", kind)
			w.Float32(a+"rope.scaling.factor", float32(rs.Factor))
			if rs.Orig > 0 {
				w.Uint32(a+"rope.scaling.original_context_length", uint32(rs.Orig))
			}
		case "llama3":
			// As convert_hf_to_gguf.py: no scaling keys, per-dimension frequency divisors instead.
			factors, err := llama3Factors(c)
			if err != nil {
				return ExportResult{}, fmt.Errorf("export gguf: %w", err)
			}
			if err := w.Tensor("rope_freqs.weight", parser.GGMLTypeF32, []int{len(factors)}, func() ([]float32, error) { return factors, nil }); err != nil {
				return ExportResult{}, fmt.Errorf("export gguf: %w", err)
			}
		default:
			return ExportResult{}, fmt.Errorf("export gguf: rope_scaling %q is not written (linear, yarn and llama3 are)", kind)
		}
	}
	if err := writeVocab(&w, dir, c.Vocab); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	count := len(w.tensors) // rope_freqs.weight, when written
	for _, name := range ck.Names() {
		gname := GGUFName(name)
		if gname == "" {
			if strings.HasSuffix(name, "rotary_emb.inv_freq") {
				continue
			}
			return ExportResult{}, fmt.Errorf("export gguf: tensor %s has no llama.cpp name", name)
		}
		t, _ := ck.Tensor(name)
		shape := t.Shape
		tt := parser.GGMLTypeF32
		if len(shape) == 2 {
			tt = typ
			for _, fb := range []parser.GGMLType{typ, parser.GGMLTypeQ8_0, parser.GGMLTypeF16} {
				if _, err := rowBytes(fb, shape[1]); err == nil {
					tt = fb
					break
				}
			}
		}
		heads := 0
		if arch == "llama" {
			switch {
			case strings.HasSuffix(name, "q_proj.weight") || strings.HasSuffix(name, "q_proj.bias"):
				heads = c.Heads
			case strings.HasSuffix(name, "k_proj.weight") || strings.HasSuffix(name, "k_proj.bias"):
				heads = c.KVHeads
			}
		}
		name := name
		if err := w.Tensor(gname, tt, shape, func() ([]float32, error) {
			v, shape, err := ck.Float32(name)
			if err != nil {
				return nil, err
			}
			if heads > 0 {
				cols := 1
				if len(shape) == 2 {
					cols = shape[1]
				}
				v = checkpoint.RoPEInterleaved(v, heads, shape[0], cols)
			}
			return v, nil
		}); err != nil {
			return ExportResult{}, fmt.Errorf("export gguf: %w", err)
		}
		count++
	}
	paths := []string{out}
	if shards > 1 {
		if paths, err = w.WriteSplit(out, shards); err != nil {
			return ExportResult{}, fmt.Errorf("export gguf: %w", err)
		}
	} else if err := w.WriteFile(out); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	res := ExportResult{Out: paths[0], Type: typ.String(), Tensors: count}
	if shards > 1 {
		res.Shards = paths
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return ExportResult{}, fmt.Errorf("export gguf: %w", err)
		}
		res.Bytes += st.Size()
	}
	return res, nil
}

// llama3Factors returns rope_freqs.weight for a Llama 3.1-style rope_scaling, with the defaults
// convert_hf_to_gguf.py takes for absent fields (factor 8, low 1, high 4, original context 8192).
// The original context comes from rope_scaling, where transformers reads it, before the top level.
func llama3Factors(c modelConfig) ([]float32, error) {
	rs := *c.RopeScaling
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&rs.Factor, 8)
	def(&rs.LowFreq, 1)
	def(&rs.HighFreq, 4)
	orig := rs.Orig
	if orig == 0 {
		orig = c.Orig
	}
	if orig == 0 {
		orig = 8192
	}
	if rs.Factor < 0 || rs.LowFreq <= 0 || rs.HighFreq <= rs.LowFreq {
		return nil, fmt.Errorf("rope_scaling llama3: factor %v, low_freq_factor %v, high_freq_factor %v: want a positive factor and 0 < low < high", rs.Factor, rs.LowFreq, rs.HighFreq)
	}
	f := checkpoint.Llama3RopeFactors(c.Theta, c.HeadDim, rs.Factor, rs.LowFreq, rs.HighFreq, orig)
	out := make([]float32, len(f))
	for i, v := range f {
		out[i] = float32(v)
	}
	return out, nil
}

// writeVocab adds tokenizer.ggml.* (and tokenizer.chat_template) from dir's tokenizer.json and
// tokenizer_config.json. A tokenizer with fewer tokens than the model's vocab_size (an embedding
// padded beyond it) gets "[PAD<id>]" tokens of type UNUSED up to it, as convert_hf_to_gguf.py
// writes them: llama.cpp refuses a vocabulary shorter than the embedding.
func writeVocab(w *Writer, dir string, vocabSize int) error {
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	cj, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("tokenizer: %w", err)
	}
	v, err := tokenizer.ToGGUFVocab(tj, cj)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	for id := len(v.Tokens); id < vocabSize; id++ {
		v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", id))
		if v.Scores != nil {
			v.Scores = append(v.Scores, 0)
		}
		v.Types = append(v.Types, tokenizer.GGUFUnused)
	}
	w.String("tokenizer.ggml.model", v.Model)
	if v.Pre != "" {
		w.String("tokenizer.ggml.pre", v.Pre)
	}
	w.Strings("tokenizer.ggml.tokens", v.Tokens)
	if v.Scores != nil {
		w.Float32s("tokenizer.ggml.scores", v.Scores)
	}
	w.Int32s("tokenizer.ggml.token_type", v.Types)
	if v.Merges != nil {
		w.Strings("tokenizer.ggml.merges", v.Merges)
	}
	for _, s := range []struct {
		key string
		id  int
	}{{"bos", v.BOS}, {"eos", v.EOS}, {"unknown", v.UNK}, {"padding", v.PAD}} {
		if s.id >= 0 {
			w.Uint32("tokenizer.ggml."+s.key+"_token_id", uint32(s.id))
		}
	}
	w.Bool("tokenizer.ggml.add_bos_token", v.AddBOS)
	w.Bool("tokenizer.ggml.add_eos_token", v.AddEOS)
	if v.Model == "llama" {
		w.Bool("tokenizer.ggml.add_space_prefix", v.AddSpacePrefix)
	}
	if v.ChatTemplate != "" {
		w.String("tokenizer.chat_template", v.ChatTemplate)
	}
	return nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
