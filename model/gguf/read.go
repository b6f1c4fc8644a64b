// Package gguf reads and writes GGUF files, the model format of llama.cpp, Ollama and LM Studio,
// in Hugging Face terms: a Llama-family GGUF opens as the config.json and the tensors (names,
// layout, float32 values) of the equivalent transformers checkpoint, so that the rest of lathe
// loads it like a model folder. Parsing is github.com/gpustack/gguf-parser-go's; the tensor data
// is read at the offsets it gives and dequantized here as ggml defines each type.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// IsPath reports whether path names a GGUF file (by its extension), as the loaders decide.
func IsPath(path string) bool { return strings.EqualFold(filepathExt(path), ".gguf") }

func filepathExt(p string) string {
	if i := strings.LastIndexByte(p, '.'); i >= 0 && !strings.ContainsAny(p[i:], `/\`) {
		return p[i:]
	}
	return ""
}

// File is an open GGUF model, one file or the shards of a split one. Its tensors are named as
// transformers names them and read on demand; Close it when done.
type File struct {
	// Path is the file, or the first shard of a split model.
	Path string
	// Arch is general.architecture ("llama" or "qwen2").
	Arch string
	// Meta is the parsed header: metadata and tensor infos.
	Meta *parser.GGUFFile

	shards  []shard
	cfg     map[string]any
	tensors map[string]tensorRef // by Hugging Face name
	names   []string
	// ropeFreqs are rope_freqs.weight's values: llama.cpp's per-dimension RoPE frequency divisors.
	ropeFreqs []float64
}

// shard is one file of the model: the whole model, or one part of a split one.
type shard struct {
	path string
	f    *os.File
	// data is where the tensor data starts; size is the file's size.
	data, size int64
}

type tensorRef struct {
	info  parser.GGUFTensorInfo
	shard int   // index in File.shards
	shape []int // Hugging Face shape (GGUF dimensions reversed)
	heads int   // > 0: rows are in llama.cpp's interleaved RoPE order for this many heads
}

// hfNames maps llama.cpp's per-layer tensor names to transformers'.
var hfNames = map[string]string{
	"attn_norm.weight":   "input_layernorm.weight",
	"attn_q.weight":      "self_attn.q_proj.weight",
	"attn_k.weight":      "self_attn.k_proj.weight",
	"attn_v.weight":      "self_attn.v_proj.weight",
	"attn_output.weight": "self_attn.o_proj.weight",
	"attn_q.bias":        "self_attn.q_proj.bias",
	"attn_k.bias":        "self_attn.k_proj.bias",
	"attn_v.bias":        "self_attn.v_proj.bias",
	"attn_output.bias":   "self_attn.o_proj.bias",
	"ffn_norm.weight":    "post_attention_layernorm.weight",
	"ffn_gate.weight":    "mlp.gate_proj.weight",
	"ffn_up.weight":      "mlp.up_proj.weight",
	"ffn_down.weight":    "mlp.down_proj.weight",
}

var globalNames = map[string]string{
	"token_embd.weight":  "model.embed_tokens.weight",
	"output_norm.weight": "model.norm.weight",
	"output.weight":      "lm_head.weight",
}

// GGUFName returns llama.cpp's name of the transformers tensor name, or "" when it has none.
func GGUFName(hf string) string {
	for g, h := range globalNames {
		if h == hf {
			return g
		}
	}
	rest, ok := strings.CutPrefix(hf, "model.layers.")
	if !ok {
		return ""
	}
	i := strings.IndexByte(rest, '.')
	if i < 0 {
		return ""
	}
	for g, h := range hfNames {
		if h == rest[i+1:] {
			return "blk." + rest[:i] + "." + g
		}
	}
	return ""
}

var blkName = regexp.MustCompile(`^blk\.(\d+)\.(.+)$`)

// Open parses the GGUF file at path and checks that lathe can load it: a llama or qwen2
// architecture, tensor types it dequantizes, shapes and offsets within the file. A split model
// (llama-gguf-split's NAME-00001-of-0000N.gguf) opens from its first shard; the other shards are
// found beside it. Errors name the file and the key or tensor.
func Open(path string) (*File, error) {
	if parser.IsShardGGUFFilename(path) && parser.CompleteShardGGUFFilename(path)[0] != path {
		return nil, fmt.Errorf("gguf %s: this is not the first shard of the split model: give %s", path, parser.CompleteShardGGUFFilename(path)[0])
	}
	gf, err := tokenizer.ParseGGUFFile(path)
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", path, err)
	}
	g := &File{Path: path, Meta: gf, tensors: map[string]tensorRef{}}
	ok := false
	defer func() {
		if !ok {
			g.Close()
		}
	}()
	first, err := g.openShards()
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", path, err)
	}
	g.Arch = g.str("general.architecture")
	if g.Arch != "llama" && g.Arch != "qwen2" {
		return nil, fmt.Errorf("gguf %s: general.architecture %q is not supported (llama and qwen2 are)", path, g.Arch)
	}
	if g.cfg, err = g.config(); err != nil {
		return nil, fmt.Errorf("gguf %s: %w", path, err)
	}
	kvHeads := g.cfg["num_key_value_heads"].(int)
	var ropeFreqs *tensorRef
	for i, ti := range gf.TensorInfos {
		si := sort.SearchInts(first, i+1) - 1 // the shard whose tensors start at or before i
		sh := g.shards[si]
		hf, ok := globalNames[ti.Name]
		heads := 0
		if m := blkName.FindStringSubmatch(ti.Name); m != nil {
			var h string
			if h, ok = hfNames[m[2]]; ok {
				hf = "model.layers." + m[1] + "." + h
			}
			// llama.cpp's "llama" architecture rotates interleaved pairs: its converter permuted the
			// q and k rows (weights and biases) from transformers' halves.
			if g.Arch == "llama" && (strings.HasPrefix(m[2], "attn_q.") || strings.HasPrefix(m[2], "attn_k.")) {
				heads = g.cfg["num_attention_heads"].(int)
				if strings.HasPrefix(m[2], "attn_k.") {
					heads = kvHeads
				}
			}
		}
		// Llama 3.1's rope_scaling, as convert_hf_to_gguf.py writes it: read once it is checked.
		isRope := ti.Name == "rope_freqs.weight"
		if !ok && !isRope {
			return nil, fmt.Errorf("gguf %s: tensor %s has no transformers equivalent lathe knows", path, ti.Name)
		}
		if !Supported(ti.Type) {
			return nil, fmt.Errorf("gguf %s: tensor %s has type %s: not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K are)", path, ti.Name, ti.Type)
		}
		shape := make([]int, len(ti.Dimensions))
		n := 1
		for i, d := range ti.Dimensions {
			if d == 0 || d > 1<<31 {
				return nil, fmt.Errorf("gguf %s: tensor %s has dimensions %v", path, ti.Name, ti.Dimensions)
			}
			shape[len(shape)-1-i] = int(d)
			n *= int(d)
			if n > 1<<40 {
				return nil, fmt.Errorf("gguf %s: tensor %s has dimensions %v", path, ti.Name, ti.Dimensions)
			}
		}
		size, err := rowBytes(ti.Type, n)
		if err != nil {
			return nil, fmt.Errorf("gguf %s: tensor %s: %w", path, ti.Name, err)
		}
		if end := uint64(sh.data) + ti.Offset + uint64(size); ti.Offset > uint64(sh.size) || end > uint64(sh.size) {
			return nil, fmt.Errorf("gguf %s: tensor %s lies beyond the end of %s (truncated?)", path, ti.Name, sh.path)
		}
		ref := tensorRef{info: ti, shard: si, shape: shape, heads: heads}
		if isRope {
			if ropeFreqs != nil {
				return nil, fmt.Errorf("gguf %s: tensor %s appears twice", path, ti.Name)
			}
			ropeFreqs = &ref
			continue
		}
		if heads > 0 && (shape[0]%heads != 0 || (shape[0]/heads)%2 != 0) {
			return nil, fmt.Errorf("gguf %s: tensor %s has %d rows, not %d heads of an even size", path, ti.Name, shape[0], heads)
		}
		if _, dup := g.tensors[hf]; dup {
			return nil, fmt.Errorf("gguf %s: tensor %s appears twice", path, ti.Name)
		}
		g.tensors[hf] = ref
		g.names = append(g.names, hf)
	}
	if _, ok := g.tensors["lm_head.weight"]; !ok {
		g.cfg["tie_word_embeddings"] = true
	}
	if _, ok := g.tensors["model.layers.0.self_attn.o_proj.bias"]; ok && g.Arch == "llama" {
		g.cfg["attention_bias"] = true
	}
	sort.Strings(g.names)
	if ropeFreqs != nil {
		if g.ropeFreqs, err = g.readRopeFreqs(*ropeFreqs); err != nil {
			return nil, fmt.Errorf("gguf %s: %w", path, err)
		}
	}
	ok = true
	return g, nil
}

// openShards opens the model's files, one or the shards gguf-parser-go parsed, and returns the
// index of each shard's first tensor: the parser lists the shards' tensors one shard after the
// other but not where each shard's begin, so each shard's own header count is read (bytes 8–16
// of a version 2 or 3 GGUF). A split model's split.count and split.tensors.count must agree.
func (g *File) openShards() ([]int, error) {
	gf := g.Meta
	paths := []string{g.Path}
	if parser.IsShardGGUFFilename(g.Path) {
		paths = parser.CompleteShardGGUFFilename(g.Path)
	}
	if len(paths) != len(gf.SplitTensorDataStartOffsets) || len(paths) != len(gf.SplitSizes) {
		return nil, fmt.Errorf("%d files, but the parser read %d", len(paths), len(gf.SplitTensorDataStartOffsets))
	}
	var first []int
	total := 0
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		g.shards = append(g.shards, shard{path: p, f: f, data: gf.SplitTensorDataStartOffsets[i], size: int64(gf.SplitSizes[i])})
		n := uint64(len(gf.TensorInfos))
		if len(paths) > 1 {
			var b [8]byte
			if _, err := f.ReadAt(b[:], 8); err != nil || gf.Header.Version < parser.GGUFVersionV2 {
				return nil, fmt.Errorf("%s: not a GGUF version 2 or 3 header", p)
			}
			n = binary.LittleEndian.Uint64(b[:])
		}
		if n > uint64(len(gf.TensorInfos)) {
			return nil, fmt.Errorf("%s: tensor count %d", p, n)
		}
		first = append(first, total)
		total += int(n)
	}
	if total != len(gf.TensorInfos) {
		return nil, fmt.Errorf("the shards count %d tensors, the parser read %d", total, len(gf.TensorInfos))
	}
	if len(paths) > 1 {
		for key, want := range map[string]int{"split.count": len(paths), "split.tensors.count": total} {
			v, ok, err := g.num(key)
			if err != nil {
				return nil, err
			}
			if !ok || v != float64(want) {
				return nil, fmt.Errorf("metadata %s is %v, the shards have %d", key, v, want)
			}
		}
	}
	return first, nil
}

// readRopeFreqs reads rope_freqs.weight: head_dim/2 positive factors, each dividing one RoPE
// frequency (ggml_rope_ext's freq_factors).
func (g *File) readRopeFreqs(r tensorRef) ([]float64, error) {
	half := g.cfg["head_dim"].(int) / 2
	if len(r.shape) != 1 || r.shape[0] != half {
		return nil, fmt.Errorf("tensor rope_freqs.weight has shape %v, want [%d] (head_dim/2)", r.shape, half)
	}
	raw, err := g.read(r)
	if err != nil {
		return nil, err
	}
	v, err := Dequantize(r.info.Type, raw, half)
	if err != nil {
		return nil, fmt.Errorf("tensor rope_freqs.weight: %w", err)
	}
	out := make([]float64, half)
	for i, f := range v {
		if !(f > 0) || math.IsInf(float64(f), 0) {
			return nil, fmt.Errorf("tensor rope_freqs.weight: factor %d is %v, want a positive finite number", i, f)
		}
		out[i] = float64(f)
	}
	return out, nil
}

// RopeFreqFactors returns the per-dimension divisors of the RoPE frequencies that the file's
// rope_freqs.weight gives (Llama 3.1-style scaling, head_dim/2 of them), or nil when it has none.
func (g *File) RopeFreqFactors() []float64 { return g.ropeFreqs }

func (g *File) kv(key string) (parser.GGUFMetadataKV, bool) { return g.Meta.Header.MetadataKV.Get(key) }

func (g *File) str(key string) string {
	kv, ok := g.kv(key)
	if !ok || kv.ValueType != parser.GGUFMetadataValueTypeString {
		return ""
	}
	return kv.ValueString()
}

// num reads a numeric key; ok is false when it is absent.
func (g *File) num(key string) (float64, bool, error) {
	kv, ok := g.kv(key)
	if !ok {
		return 0, false, nil
	}
	if !kv.ValueType.IsNumeric() {
		return 0, false, fmt.Errorf("metadata %s is a %s, want a number", key, kv.ValueType)
	}
	return parser.ValueNumeric[float64](kv), true, nil
}

// config builds the transformers config.json of the model from the {arch}.* metadata.
func (g *File) config() (map[string]any, error) {
	a := g.Arch + "."
	ints := map[string]string{
		"vocab_size":              a + "vocab_size",
		"hidden_size":             a + "embedding_length",
		"intermediate_size":       a + "feed_forward_length",
		"num_hidden_layers":       a + "block_count",
		"num_attention_heads":     a + "attention.head_count",
		"num_key_value_heads":     a + "attention.head_count_kv",
		"head_dim":                a + "attention.key_length",
		"max_position_embeddings": a + "context_length",
	}
	cfg := map[string]any{
		"model_type": g.Arch, "hidden_act": "silu", "torch_dtype": "float32", "tie_word_embeddings": false,
		"architectures": []string{map[string]string{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[g.Arch]},
	}
	for hf, key := range ints {
		v, ok, err := g.num(key)
		if err != nil {
			return nil, err
		}
		if ok {
			if v < 0 || v > 1<<31 || v != float64(int(v)) {
				return nil, fmt.Errorf("metadata %s is %v", key, v)
			}
			cfg[hf] = int(v)
		}
	}
	if _, ok := cfg["vocab_size"]; !ok {
		kv, found := g.kv("tokenizer.ggml.tokens")
		if !found {
			return nil, fmt.Errorf("neither %svocab_size nor tokenizer.ggml.tokens says the vocabulary size", a)
		}
		cfg["vocab_size"] = int(kv.ValueArray().Len)
	}
	for _, k := range []string{"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"} {
		if _, ok := cfg[k]; !ok {
			return nil, fmt.Errorf("metadata lacks %s (transformers' %s)", ints[k], k)
		}
	}
	if _, ok := cfg["num_key_value_heads"]; !ok {
		cfg["num_key_value_heads"] = cfg["num_attention_heads"]
	}
	if cfg["num_attention_heads"].(int) == 0 || cfg["num_key_value_heads"].(int) == 0 {
		return nil, fmt.Errorf("metadata %sattention.head_count and head_count_kv must be positive", a)
	}
	if _, ok := cfg["head_dim"]; !ok {
		cfg["head_dim"] = cfg["hidden_size"].(int) / cfg["num_attention_heads"].(int)
	}
	if v, ok, err := g.num(a + "rope.dimension_count"); err != nil {
		return nil, err
	} else if ok && int(v) != cfg["head_dim"].(int) {
		return nil, fmt.Errorf("metadata %srope.dimension_count %v: partial rotary embeddings (not the whole head_dim %d) are not supported", a, v, cfg["head_dim"])
	}
	if v, ok, err := g.num(a + "attention.layer_norm_rms_epsilon"); err != nil {
		return nil, err
	} else if ok {
		cfg["rms_norm_eps"] = v
	} else {
		return nil, fmt.Errorf("metadata lacks %sattention.layer_norm_rms_epsilon", a)
	}
	theta := 10000.0
	if v, ok, err := g.num(a + "rope.freq_base"); err != nil {
		return nil, err
	} else if ok {
		theta = v
	}
	cfg["rope_theta"] = theta
	switch st := g.str(a + "rope.scaling.type"); st {
	case "", "none":
	case "linear", "yarn":
		f, ok, err := g.num(a + "rope.scaling.factor")
		if err != nil {
			return nil, err
		}
		if !ok || f <= 0 {
			return nil, fmt.Errorf("metadata %srope.scaling.type is %s but %srope.scaling.factor is missing", a, st, a)
		}
		rs := map[string]any{"rope_type": st, "factor": f}
		if o, ok, _ := g.num(a + "rope.scaling.original_context_length"); ok {
			rs["original_max_position_embeddings"] = int(o)
		}
		cfg["rope_scaling"] = rs
	default:
		return nil, fmt.Errorf("metadata %srope.scaling.type %q is not supported (none, linear and yarn are)", a, st)
	}
	for hf, key := range map[string]string{"bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id"} {
		if v, ok, err := g.num(key); err != nil {
			return nil, err
		} else if ok {
			cfg[hf] = int(v)
		}
	}
	return cfg, nil
}

// Config returns the model's transformers config.json (a fresh copy).
func (g *File) Config() map[string]any {
	out := make(map[string]any, len(g.cfg))
	for k, v := range g.cfg {
		out[k] = v
	}
	return out
}

// Names returns the transformers names of the tensors, sorted.
func (g *File) Names() []string { return g.names }

// Tensor describes the named tensor: its ggml type name as DType and its transformers shape. Data
// is nil: read the values with Float32.
func (g *File) Tensor(name string) (checkpoint.Tensor, bool) {
	r, ok := g.tensors[name]
	if !ok {
		return checkpoint.Tensor{}, false
	}
	return checkpoint.Tensor{DType: r.info.Type.String(), Shape: r.shape}, true
}

// Type returns the ggml type of the named tensor.
func (g *File) Type(name string) (parser.GGMLType, bool) {
	r, ok := g.tensors[name]
	return r.info.Type, ok
}

// Raw returns the stored bytes of the named tensor, as they are in the file.
func (g *File) Raw(name string) ([]byte, error) {
	r, ok := g.tensors[name]
	if !ok {
		return nil, fmt.Errorf("gguf %s: no tensor %s", g.Path, name)
	}
	return g.read(r)
}

// read reads a tensor's bytes from its shard (Open checked that they lie within it).
func (g *File) read(r tensorRef) ([]byte, error) {
	n := 1
	for _, d := range r.shape {
		n *= d
	}
	size, _ := rowBytes(r.info.Type, n)
	buf := make([]byte, size)
	sh := g.shards[r.shard]
	if _, err := sh.f.ReadAt(buf, sh.data+int64(r.info.Offset)); err != nil {
		return nil, fmt.Errorf("gguf %s: tensor %s: %w", sh.path, r.info.Name, err)
	}
	return buf, nil
}

// Float32 reads the named tensor, dequantizes it and returns it in transformers' layout (q and k
// rows of a llama model back in the halves order of transformers' RoPE), with its shape.
func (g *File) Float32(name string) ([]float32, []int, error) {
	raw, err := g.Raw(name)
	if err != nil {
		return nil, nil, err
	}
	r := g.tensors[name]
	v, err := Dequantize(r.info.Type, raw, len(raw)/blocks[r.info.Type].bytes*blocks[r.info.Type].elems)
	if err != nil {
		return nil, nil, fmt.Errorf("gguf %s: tensor %s: %w", g.Path, r.info.Name, err)
	}
	if r.heads > 0 {
		cols := 1
		if len(r.shape) == 2 {
			cols = r.shape[1]
		}
		v = checkpoint.RoPEHalves(v, r.heads, r.shape[0], cols)
	}
	return v, r.shape, nil
}

// Close closes the file.
func (g *File) Close() error {
	var err error
	for _, sh := range g.shards {
		if e := sh.f.Close(); e != nil && err == nil {
			err = e
		}
	}
	g.shards = nil
	return err
}
