// Package llama2c converts Andrej Karpathy's llama2.c checkpoints (model .bin and tokenizer .bin)
// into Hugging Face folders, so they train and serve like any other Llama.
package llama2c

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// Header is the seven int32 of a llama2.c checkpoint (legacy format, version 0).
type Header struct {
	Dim, Hidden, Layers, Heads, KVHeads, Vocab, SeqLen int
	// Shared reports whether the classifier is the embedding (a positive vocab size in the file).
	Shared bool
}

// Result describes a conversion.
type Result struct {
	Out    string `json:"out"`
	Params int64  `json:"params"`
	Vocab  int    `json:"vocab_size"`
	Layers int    `json:"layers"`
	Dim    int    `json:"hidden_size"`
}

// Convert writes outDir as a Hugging Face Llama folder: config.json, model.safetensors (F32, in
// transformers' layout), tokenizer.json and tokenizer_config.json.
func Convert(modelPath, tokenizerPath, outDir string) (Result, error) {
	tensors, h, err := Read(modelPath)
	if err != nil {
		return Result{}, err
	}
	tok, err := tokenizer.FromLlama2C(tokenizerPath)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("convert: %w", err)
	}
	cfg := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"vocab_size":              h.Vocab,
		"hidden_size":             h.Dim,
		"intermediate_size":       h.Hidden,
		"num_hidden_layers":       h.Layers,
		"num_attention_heads":     h.Heads,
		"num_key_value_heads":     h.KVHeads,
		"head_dim":                h.Dim / h.Heads,
		"hidden_act":              "silu",
		"max_position_embeddings": h.SeqLen,
		"rms_norm_eps":            1e-5,
		"rope_theta":              10000.0,
		"tie_word_embeddings":     h.Shared,
		"bos_token_id":            1,
		"eos_token_id":            2,
		"torch_dtype":             "float32",
	}
	if err := checkpoint.WriteConfig(filepath.Join(outDir, checkpoint.ConfigFile), cfg); err != nil {
		return Result{}, fmt.Errorf("convert: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(outDir, checkpoint.WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return Result{}, fmt.Errorf("convert: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(outDir, "tokenizer.json"), tok, 0o644); err != nil {
		return Result{}, fmt.Errorf("convert: %w", err)
	}
	tcfg := []byte(`{
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": "<s>",
  "eos_token": "</s>",
  "unk_token": "<unk>",
  "model_max_length": ` + fmt.Sprint(h.SeqLen) + `,
  "tokenizer_class": "LlamaTokenizerFast"
}
`)
	if err := atomicfile.WriteFile(filepath.Join(outDir, "tokenizer_config.json"), tcfg, 0o644); err != nil {
		return Result{}, fmt.Errorf("convert: %w", err)
	}
	var params int64
	for _, t := range tensors {
		params += t.Numel()
	}
	return Result{Out: outDir, Params: params, Vocab: h.Vocab, Layers: h.Layers, Dim: h.Dim}, nil
}

// Read parses a llama2.c checkpoint into tensors named and shaped as transformers' LlamaForCausalLM,
// with q_proj and k_proj rows permuted from llama2.c's interleaved RoPE pairs to Hugging Face's
// rotate_half halves.
func Read(path string) (map[string]checkpoint.Tensor, Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint: %w", err)
	}
	defer f.Close()
	var raw [7]int32
	if err := binary.Read(f, binary.LittleEndian, &raw); err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: header: %w", path, err)
	}
	h := Header{Dim: int(raw[0]), Hidden: int(raw[1]), Layers: int(raw[2]), Heads: int(raw[3]), KVHeads: int(raw[4]),
		Vocab: int(raw[5]), SeqLen: int(raw[6]), Shared: raw[5] > 0}
	if h.Vocab < 0 {
		h.Vocab = -h.Vocab
	}
	if h.Dim <= 0 || h.Hidden <= 0 || h.Layers <= 0 || h.Heads <= 0 || h.KVHeads <= 0 || h.Vocab <= 0 || h.SeqLen <= 0 ||
		h.Dim%h.Heads != 0 || h.Heads%h.KVHeads != 0 || (h.Dim/h.Heads)%2 != 0 || h.Dim > 1<<16 || h.Layers > 1<<10 {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: implausible header %+v", path, h)
	}
	hd := h.Dim / h.Heads
	kv := h.KVHeads * hd
	st, err := f.Stat()
	if err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: %w", path, err)
	}
	L, D, F, V := h.Layers, h.Dim, h.Hidden, h.Vocab
	floats := V*D + L*D + L*D*D + 2*L*D*kv + L*D*D + L*D + 3*L*D*F + D + h.SeqLen*hd
	if !h.Shared {
		floats += V * D
	}
	if want := int64(28 + 4*floats); st.Size() != want {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: %d bytes, the header implies %d (truncated or another format version)", path, st.Size(), want)
	}
	read := func(n int) ([]float32, error) {
		v := make([]float32, n)
		if err := binary.Read(f, binary.LittleEndian, v); err != nil {
			return nil, err
		}
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("non-finite weight")
			}
		}
		return v, nil
	}
	ts := map[string]checkpoint.Tensor{}
	var readErr error
	perLayer := func(what string, rows, cols int, name string, permuteHeads int) {
		if readErr != nil {
			return
		}
		v, err := read(L * rows * cols)
		if err != nil {
			readErr = fmt.Errorf("llama2.c checkpoint %s: %s: %w", path, what, err)
			return
		}
		for l := 0; l < L; l++ {
			w := v[l*rows*cols : (l+1)*rows*cols]
			if permuteHeads > 0 {
				w = checkpoint.RoPEHalves(w, permuteHeads, rows, cols)
			}
			ts[fmt.Sprintf("model.layers.%d.%s", l, name)] = checkpoint.FromFloat32(w, []int{rows, cols})
		}
	}
	emb, err := read(V * D)
	if err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: embedding: %w", path, err)
	}
	ts["model.embed_tokens.weight"] = checkpoint.FromFloat32(emb, []int{V, D})
	perLayer("rms_att_weight", D, 1, "input_layernorm.weight", 0)
	perLayer("wq", D, D, "self_attn.q_proj.weight", h.Heads)
	perLayer("wk", kv, D, "self_attn.k_proj.weight", h.KVHeads)
	perLayer("wv", kv, D, "self_attn.v_proj.weight", 0)
	perLayer("wo", D, D, "self_attn.o_proj.weight", 0)
	perLayer("rms_ffn_weight", D, 1, "post_attention_layernorm.weight", 0)
	perLayer("w1", F, D, "mlp.gate_proj.weight", 0)
	perLayer("w2", D, F, "mlp.down_proj.weight", 0)
	perLayer("w3", F, D, "mlp.up_proj.weight", 0)
	if readErr != nil {
		return nil, Header{}, readErr
	}
	// Norm vectors were read as [D, 1]; transformers stores them as [D].
	for name, t := range ts {
		if len(t.Shape) == 2 && t.Shape[1] == 1 {
			t.Shape = t.Shape[:1]
			ts[name] = t
		}
	}
	norm, err := read(D)
	if err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: rms_final_weight: %w", path, err)
	}
	ts["model.norm.weight"] = checkpoint.FromFloat32(norm, []int{D})
	// The precomputed RoPE tables (freq_cis_real, freq_cis_imag) are recomputed from rope_theta.
	if _, err := f.Seek(int64(4*h.SeqLen*hd), io.SeekCurrent); err != nil {
		return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: %w", path, err)
	}
	if !h.Shared {
		cls, err := read(V * D)
		if err != nil {
			return nil, Header{}, fmt.Errorf("llama2.c checkpoint %s: classifier: %w", path, err)
		}
		ts["lm_head.weight"] = checkpoint.FromFloat32(cls, []int{V, D})
	}
	return ts, h, nil
}
