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
		Type, RopeType string
		Factor         float64
		Orig           int `json:"original_max_position_embeddings"`
	} `json:"rope_scaling"`
}

// WriteModel writes the Hugging Face model folder dir (a Llama or Qwen2 checkpoint with its
// tokenizer) as a GGUF file, as llama.cpp's convert_hf_to_gguf.py lays it out: {arch}.* and
// tokenizer.ggml.* metadata, llama.cpp's tensor names, q and k rows of a llama model permuted to
// interleaved RoPE pairs. Matrices are stored as typ when their rows are whole blocks of it (else
// Q8_0 or F16, as llama.cpp falls back), vectors as F32. Tensors stream one at a time.
func WriteModel(dir, out string, typ parser.GGMLType) (ExportResult, error) {
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
		default:
			return ExportResult{}, fmt.Errorf("export gguf: rope_scaling %q is not written (linear and yarn are)", kind)
		}
	}
	if err := writeVocab(&w, dir, c.Vocab); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	count := 0
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
	if err := w.WriteFile(out); err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	st, err := os.Stat(out)
	if err != nil {
		return ExportResult{}, fmt.Errorf("export gguf: %w", err)
	}
	return ExportResult{Out: out, Type: typ.String(), Tensors: count, Bytes: st.Size()}, nil
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
