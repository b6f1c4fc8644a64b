//go:build !lathe_lite

package tokenizer

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"
)

// GGUF token types (llama.cpp's llama_token_type).
const (
	GGUFNormal      = 1
	GGUFUnknown     = 2
	GGUFControl     = 3
	GGUFUserDefined = 4
	GGUFUnused      = 5
	GGUFByte        = 6
)

// GGUFVocab is a tokenizer as GGUF's tokenizer.ggml.* metadata holds it.
type GGUFVocab struct {
	// Model is tokenizer.ggml.model: "llama" (SentencePiece BPE by score, byte fallback) or
	// "gpt2" (byte-level BPE by merges).
	Model string
	// Pre is tokenizer.ggml.pre, the pre-tokenizer of a gpt2 model: "gpt-2" (or "default"),
	// "llama-bpe" or "qwen2".
	Pre    string
	Tokens []string
	Scores []float32 // llama
	Types  []int32
	Merges []string // gpt2: "a b"
	// Special token ids; -1 when absent.
	BOS, EOS, UNK, PAD int
	AddBOS, AddEOS     bool
	// AddSpacePrefix is tokenizer.ggml.add_space_prefix (llama: prepend "▁"; default true).
	AddSpacePrefix bool
	ChatTemplate   string
}

// gpt2Pre maps tokenizer.ggml.pre to the split pattern of the pre-tokenizer ("" for GPT-2's
// ByteLevel regex) and to BPE's ignore_merges, as llama.cpp's llama-vocab.cpp and the
// transformers tokenizer.json of those models define them.
var gpt2Pre = map[string]struct {
	pattern      string
	ignoreMerges bool
}{
	"gpt-2":     {"", false},
	"default":   {"", false},
	"llama-bpe": {llama3SplitPattern, true},
	"qwen2":     {qwen2SplitPattern, false},
}

// ParseGGUFFile is gguf-parser-go's ParseGGUFFile with its panics (an overflowing tensor size in a
// corrupt or hostile header, found by fuzzing) turned into errors. It reads the file mapped in
// memory: read from the file, every value of the header is a read system call of its own (a
// vocabulary of 128k tokens is hundreds of thousands), which made an open take 100 ms for a
// 300-token vocabulary and stalled the fuzzer.
func ParseGGUFFile(path string) (gf *parser.GGUFFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			gf, err = nil, fmt.Errorf("corrupt GGUF header: %v", r)
		}
	}()
	return parser.ParseGGUFFile(path, parser.UseMMap())
}

// LoadGGUF reads the tokenizer of the GGUF file at path (tokenizer.ggml.*, and
// tokenizer.chat_template as the chat template).
func LoadGGUF(path string) (*Tokenizer, error) {
	gf, err := ParseGGUFFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	v, err := ReadGGUFVocab(gf.Header.MetadataKV)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	// gguf-parser-go trims whitespace off every string it reads, which would turn tokens such as
	// U+00A0 into "": the tokens are read again, verbatim, at the offset it reports.
	if kv, ok := gf.Header.MetadataKV.Get("tokenizer.ggml.tokens"); ok {
		if v.Tokens, err = rawStrings(path, kv.ValueArray(), gf.Header.Version); err != nil {
			return nil, fmt.Errorf("load tokenizer %s: tokenizer.ggml.tokens: %w", path, err)
		}
	}
	tj, cj, err := FromGGUFVocab(v)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	t, err := FromJSON(tj, cj)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// ReadGGUFVocab collects the tokenizer keys of GGUF metadata.
func ReadGGUFVocab(kvs parser.GGUFMetadataKVs) (GGUFVocab, error) {
	v := GGUFVocab{BOS: -1, EOS: -1, UNK: -1, PAD: -1, AddBOS: true, AddSpacePrefix: true}
	str := func(key string) string {
		kv, ok := kvs.Get(key)
		if !ok || kv.ValueType != parser.GGUFMetadataValueTypeString {
			return ""
		}
		return kv.ValueString()
	}
	arr := func(key string, want parser.GGUFMetadataValueType) (parser.GGUFMetadataKVArrayValue, bool, error) {
		kv, ok := kvs.Get(key)
		if !ok {
			return parser.GGUFMetadataKVArrayValue{}, false, nil
		}
		if kv.ValueType != parser.GGUFMetadataValueTypeArray {
			return parser.GGUFMetadataKVArrayValue{}, false, fmt.Errorf("%s is not an array", key)
		}
		a := kv.ValueArray()
		if a.Type != want || uint64(len(a.Array)) != a.Len {
			return a, false, fmt.Errorf("%s: want %d values of type %s, have %d of %s", key, a.Len, want, len(a.Array), a.Type)
		}
		return a, true, nil
	}
	v.Model, v.Pre, v.ChatTemplate = str("tokenizer.ggml.model"), str("tokenizer.ggml.pre"), str("tokenizer.chat_template")
	a, ok, err := arr("tokenizer.ggml.tokens", parser.GGUFMetadataValueTypeString)
	if err != nil {
		return v, err
	}
	if !ok {
		return v, fmt.Errorf("no tokenizer.ggml.tokens")
	}
	if a.Len > maxVocab {
		return v, fmt.Errorf("tokenizer.ggml.tokens: %d tokens, more than %d", a.Len, maxVocab)
	}
	v.Tokens = a.ValuesString()
	if a, ok, err = arr("tokenizer.ggml.scores", parser.GGUFMetadataValueTypeFloat32); err != nil {
		return v, err
	} else if ok {
		v.Scores = a.ValuesFloat32()
	}
	if a, ok, err = arr("tokenizer.ggml.token_type", parser.GGUFMetadataValueTypeInt32); err != nil {
		return v, err
	} else if ok {
		v.Types = a.ValuesInt32()
	}
	if a, ok, err = arr("tokenizer.ggml.merges", parser.GGUFMetadataValueTypeString); err != nil {
		return v, err
	} else if ok {
		v.Merges = a.ValuesString()
	}
	for key, p := range map[string]*int{"bos": &v.BOS, "eos": &v.EOS, "unknown": &v.UNK, "padding": &v.PAD} {
		if kv, ok := kvs.Get("tokenizer.ggml." + key + "_token_id"); ok && kv.ValueType.IsNumeric() {
			*p = parser.ValueNumeric[int](kv)
		}
	}
	for key, p := range map[string]*bool{"add_bos_token": &v.AddBOS, "add_eos_token": &v.AddEOS, "add_space_prefix": &v.AddSpacePrefix} {
		if kv, ok := kvs.Get("tokenizer.ggml." + key); ok && kv.ValueType == parser.GGUFMetadataValueTypeBool {
			*p = kv.ValueBool()
		}
	}
	if v.Model == "gpt2" {
		if _, ok := kvs.Get("tokenizer.ggml.add_bos_token"); !ok {
			v.AddBOS = false // llama.cpp's default for BPE vocabularies
		}
	}
	return v, nil
}

// FromGGUFVocab builds the tokenizer.json and tokenizer_config.json that transformers' converters
// write for the same tokenizer: the Llama SentencePiece layout (merges derived from the scores as
// transformers derives them) for "llama", and a byte-level BPE with the pre-tokenizer named by Pre
// for "gpt2".
func FromGGUFVocab(v GGUFVocab) (tokenizerJSON, configJSON []byte, err error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, nil, fmt.Errorf("empty vocabulary")
	}
	if v.Types != nil && len(v.Types) != n {
		return nil, nil, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(v.Types), n)
	}
	for _, id := range []int{v.BOS, v.EOS, v.UNK, v.PAD} {
		if id >= n || id < -1 {
			return nil, nil, fmt.Errorf("special token id %d is outside the vocabulary of %d", id, n)
		}
	}
	typ := func(id int) int32 {
		if v.Types == nil {
			return GGUFNormal
		}
		return v.Types[id]
	}
	vocab := make(map[string]int, n)
	var added []jsonAddedToken
	for id, tok := range v.Tokens {
		if prev, dup := vocab[tok]; dup {
			return nil, nil, fmt.Errorf("tokens %d and %d are both %q", prev, id, tok)
		}
		vocab[tok] = id
		switch t := typ(id); {
		case t == GGUFControl || t == GGUFUnknown || id == v.BOS || id == v.EOS || id == v.UNK:
			added = append(added, jsonAddedToken{ID: id, Content: tok, Special: true})
		case t == GGUFUserDefined:
			added = append(added, jsonAddedToken{ID: id, Content: tok})
		}
	}
	out := jsonTokenizer{Version: "1.0", AddedTokens: added}
	switch v.Model {
	case "llama":
		if len(v.Scores) != n {
			return nil, nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(v.Scores), n)
		}
		var unk *string
		if v.UNK >= 0 {
			unk = &v.Tokens[v.UNK]
		}
		repl := obj{"type": "Replace", "pattern": obj{"String": " "}, "content": "▁"}
		decoders := []obj{
			{"type": "Replace", "pattern": obj{"String": "▁"}, "content": " "},
			{"type": "ByteFallback"},
			{"type": "Fuse"},
		}
		if v.AddSpacePrefix {
			out.Normalizer = obj{"type": "Sequence", "normalizers": []obj{{"type": "Prepend", "prepend": "▁"}, repl}}
			decoders = append(decoders, obj{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		} else {
			out.Normalizer = repl
		}
		out.Decoder = obj{"type": "Sequence", "decoders": decoders}
		out.Model = jsonBPE{Type: "BPE", UnkToken: unk, FuseUnk: true, ByteFallback: true, Vocab: vocab,
			Merges: mergesJSON(scoreMerges(v.Tokens, v.Scores, vocab))}
	case "gpt2":
		pre, ok := gpt2Pre[v.Pre]
		if v.Pre == "" {
			pre, ok = gpt2Pre["default"], true
		}
		if !ok {
			return nil, nil, fmt.Errorf("tokenizer.ggml.pre %q is not supported (gpt-2, default, llama-bpe and qwen2 are)", v.Pre)
		}
		merges := make([][2]string, len(v.Merges))
		for i, m := range v.Merges {
			l, r, ok := strings.Cut(m, " ")
			if !ok {
				return nil, nil, fmt.Errorf("tokenizer.ggml.merges[%d] %q is not two tokens", i, m)
			}
			merges[i] = [2]string{l, r}
		}
		if pre.pattern == "" {
			out.PreTokenizer = obj{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
		} else {
			out.PreTokenizer = obj{"type": "Sequence", "pretokenizers": []obj{
				{"type": "Split", "pattern": obj{"Regex": pre.pattern}, "behavior": "Isolated", "invert": false},
				{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
			}}
		}
		out.Decoder = obj{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
		out.Model = jsonBPE{Type: "BPE", IgnoreMerges: pre.ignoreMerges, Vocab: vocab, Merges: mergesJSON(merges)}
	default:
		return nil, nil, fmt.Errorf("tokenizer.ggml.model %q is not supported (llama and gpt2 are)", v.Model)
	}
	if v.AddBOS && v.BOS >= 0 {
		out.PostProcessor = bosTemplate(v.Tokens[v.BOS], v.BOS)
	}
	cfg := obj{"add_bos_token": v.AddBOS, "add_eos_token": v.AddEOS}
	for key, id := range map[string]int{"bos_token": v.BOS, "eos_token": v.EOS, "unk_token": v.UNK, "pad_token": v.PAD} {
		if id >= 0 {
			cfg[key] = v.Tokens[id]
		}
	}
	if v.AddBOS && v.BOS < 0 {
		cfg["add_bos_token"] = false
	}
	if v.ChatTemplate != "" {
		cfg["chat_template"] = v.ChatTemplate
	}
	if tokenizerJSON, err = json.Marshal(out); err != nil {
		return nil, nil, err
	}
	configJSON, err = json.Marshal(cfg)
	return tokenizerJSON, configJSON, err
}

// rawStrings reads a GGUF string array (item type, count, then length-prefixed strings) at its
// offset in the file.
func rawStrings(path string, a parser.GGUFMetadataKVArrayValue, version parser.GGUFVersion) ([]string, error) {
	if version < parser.GGUFVersionV2 {
		return nil, fmt.Errorf("GGUF version %d is not supported", version)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.NewSectionReader(f, a.StartOffset, a.Size+12), 1<<20)
	var typ uint32
	var n uint64
	if err := binary.Read(r, binary.LittleEndian, &typ); err != nil {
		return nil, err
	}
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return nil, err
	}
	if parser.GGUFMetadataValueType(typ) != parser.GGUFMetadataValueTypeString || n != a.Len {
		return nil, fmt.Errorf("not the string array the parser read")
	}
	out := make([]string, n)
	for i := range out {
		var l uint64
		if err := binary.Read(r, binary.LittleEndian, &l); err != nil {
			return nil, fmt.Errorf("string %d: %w", i, err)
		}
		if l > 1<<20 {
			return nil, fmt.Errorf("string %d: length %d", i, l)
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("string %d: %w", i, err)
		}
		out[i] = string(b)
	}
	return out, nil
}

var byteToken = regexp.MustCompile(`^<0x[0-9A-F]{2}>$`)

// ToGGUFVocab is the inverse of FromGGUFVocab: the GGUF form of a tokenizer.json (and
// tokenizer_config.json, nil when absent), as llama.cpp's convert_hf_to_gguf.py writes it. A BPE
// with byte fallback becomes a "llama" vocabulary whose scores reproduce its merge order; a
// byte-level BPE becomes "gpt2" with its merges and the pre-tokenizer named.
func ToGGUFVocab(tokenizerJSON, configJSON []byte) (GGUFVocab, error) {
	tk, err := FromJSON(tokenizerJSON, configJSON)
	if err != nil {
		return GGUFVocab{}, err
	}
	var f struct {
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Normalizer   json.RawMessage `json:"normalizer"`
		Model        struct {
			ByteFallback bool            `json:"byte_fallback"`
			IgnoreMerges bool            `json:"ignore_merges"`
			Merges       json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return GGUFVocab{}, err
	}
	merges, err := parseMerges(f.Model.Merges)
	if err != nil {
		return GGUFVocab{}, err
	}
	n := tk.VocabSize()
	v := GGUFVocab{BOS: tk.BOS(), EOS: tk.EOS(), UNK: tk.UNK(), PAD: tk.PAD(), Tokens: make([]string, n), Types: make([]int32, n), ChatTemplate: tk.chatTemplates[defaultTemplate]}
	with, err1 := tk.Encode("a", true)
	without, err2 := tk.Encode("a", false)
	if err1 != nil || err2 != nil {
		return v, fmt.Errorf("encode: %v %v", err1, err2)
	}
	v.AddBOS = len(with) > len(without) && v.BOS >= 0 && with[0] == v.BOS
	v.AddEOS = len(with) > len(without) && v.EOS >= 0 && with[len(with)-1] == v.EOS
	for id := 0; id < n; id++ {
		tok, ok := tk.IDToToken(id)
		if !ok {
			return v, fmt.Errorf("token id %d is missing (GGUF needs contiguous ids)", id)
		}
		v.Tokens[id] = tok
		switch {
		case id == v.UNK:
			v.Types[id] = GGUFUnknown
		case tk.IsSpecial(id):
			v.Types[id] = GGUFControl
		case tk.addedByID[id] != nil:
			v.Types[id] = GGUFUserDefined
		case f.Model.ByteFallback && byteToken.MatchString(tok):
			v.Types[id] = GGUFByte
		default:
			v.Types[id] = GGUFNormal
		}
	}
	if f.Model.ByteFallback {
		v.Model = "llama"
		v.AddSpacePrefix = strings.Contains(string(f.Normalizer), `"Prepend"`) || strings.Contains(string(f.PreTokenizer), `"prepend_scheme":"first"`) ||
			strings.Contains(string(f.PreTokenizer), `"prepend_scheme":"always"`)
		// A piece's score is minus the rank of the first merge that makes it, so that deriving the
		// merges from the scores (scoreMerges) gives back this order; other pieces score below all.
		rank := map[string]int{}
		for i, m := range merges {
			if _, seen := rank[m[0]+m[1]]; !seen {
				rank[m[0]+m[1]] = i
			}
		}
		v.Scores = make([]float32, n)
		for id, tok := range v.Tokens {
			r, ok := rank[tok]
			if !ok {
				r = len(merges) + id
			}
			v.Scores[id] = -float32(r)
		}
		return v, nil
	}
	v.Model = "gpt2"
	pre := string(f.PreTokenizer)
	switch {
	case strings.Contains(pre, jsonQuote(llama3SplitPattern)):
		v.Pre = "llama-bpe"
	case strings.Contains(pre, jsonQuote(qwen2SplitPattern)):
		v.Pre = "qwen2"
	case strings.Contains(pre, `"ByteLevel"`) && !strings.Contains(pre, `"Split"`) && strings.Contains(strings.ReplaceAll(pre, " ", ""), `"use_regex":true`):
		v.Pre = "gpt-2"
	default:
		return v, fmt.Errorf("pre_tokenizer %s has no llama.cpp equivalent lathe knows (GPT-2's ByteLevel, Llama 3's and Qwen2's splits)", pre)
	}
	v.Merges = make([]string, len(merges))
	for i, m := range merges {
		v.Merges[i] = m[0] + " " + m[1]
	}
	return v, nil
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}
