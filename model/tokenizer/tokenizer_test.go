package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type m = map[string]any

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func build(t *testing.T, tok m, cfg m) *Tokenizer {
	t.Helper()
	var cj []byte
	if cfg != nil {
		cj = mustJSON(t, cfg)
	}
	tk, err := FromJSON(mustJSON(t, tok), cj)
	require.NoError(t, err)
	return tk
}

func encode(t *testing.T, tk *Tokenizer, s string, special bool) []int {
	t.Helper()
	ids, err := tk.Encode(s, special)
	require.NoError(t, err)
	return ids
}

func decode(t *testing.T, tk *Tokenizer, ids []int, skip bool) string {
	t.Helper()
	s, err := tk.Decode(ids, skip)
	require.NoError(t, err)
	return s
}

// gpt2Fixture is a GPT-2-style byte-level BPE: ByteLevel pre-tokenizer with the GPT-2 regex.
func gpt2Fixture(merges any) m {
	return m{
		"added_tokens":   []m{{"id": 16, "content": "<|endoftext|>", "special": true}},
		"pre_tokenizer":  m{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": m{"type": "ByteLevel", "trim_offsets": true},
		"decoder":        m{"type": "ByteLevel"},
		"model": m{
			"type": "BPE",
			"vocab": m{"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "he": 8, "ll": 9,
				"hell": 10, "hello": 11, "Ġw": 12, "or": 13, "Ġwor": 14, "!": 15, "<|endoftext|>": 16},
			"merges": merges,
		},
	}
}

func TestByteLevelBPE(t *testing.T) {
	strMerges := []string{"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"}
	pairMerges := [][]string{{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"o", "r"}, {"Ġw", "or"}}
	for name, merges := range map[string]any{"string merges": strMerges, "pair merges": pairMerges} {
		t.Run(name, func(t *testing.T) {
			tk := build(t, gpt2Fixture(merges), nil)
			// "hello" merges fully; "Ġworld": (Ġ,w) then (o,r) then (Ġw,or), leaving l, d.
			ids := encode(t, tk, "hello world!", true)
			require.Equal(t, []int{11, 14, 2, 7, 15}, ids)
			require.Equal(t, "hello world!", decode(t, tk, ids, false))
			// A special token in the middle is matched before pre-tokenization.
			ids = encode(t, tk, "hello<|endoftext|>hello", false)
			require.Equal(t, []int{11, 16, 11}, ids)
			require.Equal(t, "hello<|endoftext|>hello", decode(t, tk, ids, false))
			require.Equal(t, "hellohello", decode(t, tk, ids, true))
			// No unk token: characters outside the vocab are dropped, as Hugging Face does.
			require.Equal(t, []int{10}, encode(t, tk, "hellz", false))
			require.Equal(t, 17, tk.VocabSize())
			require.True(t, tk.IsSpecial(16))
			require.False(t, tk.IsSpecial(11))
			require.Equal(t, -1, tk.BOS())
			require.Equal(t, 16, tk.EOS())
		})
	}
}

// spFixture is a Llama-2-style SentencePiece BPE with byte fallback; normalizer and
// pre-tokenizer vary.
func spFixture(normalizer, preTokenizer, decoder any) m {
	vocab := m{"<unk>": 0, "<s>": 1, "</s>": 2}
	for b := 0; b < 256; b++ {
		vocab[fmt.Sprintf("<0x%02X>", b)] = 3 + b
	}
	for i, s := range []string{"▁", "c", "a", "f", "▁c", "af", "▁caf", "h", "i", "▁h", "▁hi"} {
		vocab[s] = 259 + i
	}
	return m{
		"added_tokens": []m{
			{"id": 0, "content": "<unk>", "special": true},
			{"id": 1, "content": "<s>", "special": true},
			{"id": 2, "content": "</s>", "special": true},
		},
		"normalizer":    normalizer,
		"pre_tokenizer": preTokenizer,
		"post_processor": m{
			"type":           "TemplateProcessing",
			"single":         []m{{"SpecialToken": m{"id": "<s>", "type_id": 0}}, {"Sequence": m{"id": "A", "type_id": 0}}},
			"pair":           []m{},
			"special_tokens": m{"<s>": m{"id": "<s>", "ids": []int{1}, "tokens": []string{"<s>"}}},
		},
		"decoder": decoder,
		"model": m{
			"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
			"vocab": vocab, "merges": []string{"▁ c", "a f", "▁c af", "▁ h", "▁h i"},
		},
	}
}

var llama2Decoder = m{"type": "Sequence", "decoders": []m{
	{"type": "Replace", "pattern": m{"String": "▁"}, "content": " "},
	{"type": "ByteFallback"},
	{"type": "Fuse"},
	{"type": "Strip", "content": " ", "start": 1, "stop": 0},
}}

func TestSentencePieceByteFallback(t *testing.T) {
	legacy := spFixture(
		m{"type": "Sequence", "normalizers": []m{
			{"type": "Prepend", "prepend": "▁"},
			{"type": "Replace", "pattern": m{"String": " "}, "content": "▁"},
		}}, nil, llama2Decoder)
	metaspace := spFixture(nil,
		m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}, llama2Decoder)
	for name, fx := range map[string]m{"prepend normalizer": legacy, "metaspace first": metaspace} {
		t.Run(name, func(t *testing.T) {
			tk := build(t, fx, nil)
			// "▁café": (▁,c), (a,f), (▁c,af); é is not in the vocab: bytes C3 A9 → ids 3+0xC3, 3+0xA9.
			ids := encode(t, tk, "café", true)
			require.Equal(t, []int{1, 265, 3 + 0xC3, 3 + 0xA9}, ids)
			require.Equal(t, "café", decode(t, tk, ids, true))
			require.Equal(t, "<s> café", decode(t, tk, ids, false))
			// An emoji falls back to its four UTF-8 bytes.
			ids = encode(t, tk, "hi 😀", false)
			require.Equal(t, []int{269, 259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}, ids)
			require.Equal(t, "hi 😀", decode(t, tk, ids, false))
			require.Equal(t, 1, tk.BOS())
			require.Equal(t, 2, tk.EOS())
			require.Equal(t, 0, tk.UNK())
		})
	}
	// After a special token, Prepend (applied to every piece) adds "▁" again, while Metaspace
	// with prepend_scheme "first" only adds it at the very start of the input.
	require.Equal(t, []int{1, 269}, encode(t, build(t, legacy, nil), "<s>hi", false))
	require.Equal(t, []int{1, 266, 267}, encode(t, build(t, metaspace, nil), "<s>hi", false))
	require.Equal(t, []int{269, 2, 269}, encode(t, build(t, legacy, nil), "hi</s>hi", false))
}

func TestUnknownFused(t *testing.T) {
	fx := spFixture(nil, nil, nil)
	model := fx["model"].(m)
	model["byte_fallback"] = false
	tk := build(t, fx, nil)
	// Without byte fallback, consecutive unknown characters fuse into one <unk>.
	require.Equal(t, []int{260, 0, 261}, encode(t, tk, "cééa", false))
	model["fuse_unk"] = false
	tk = build(t, fx, nil)
	require.Equal(t, []int{260, 0, 0, 261}, encode(t, tk, "cééa", false))
	// No decoder: tokens are joined with spaces.
	require.Equal(t, "c <unk> <unk> a", decode(t, tk, []int{260, 0, 0, 261}, false))
}

const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

func TestLlama3Split(t *testing.T) {
	fx := m{
		"added_tokens": []m{
			{"id": 17, "content": "<|begin_of_text|>", "special": true},
			{"id": 18, "content": "<|eot_id|>", "special": true},
		},
		"pre_tokenizer": m{"type": "Sequence", "pretokenizers": []m{
			{"type": "Split", "pattern": m{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": m{"type": "Sequence", "processors": []m{
			{"type": "ByteLevel", "trim_offsets": false},
			{"type": "TemplateProcessing",
				"single":         "<|begin_of_text|> $A",
				"special_tokens": m{"<|begin_of_text|>": m{"id": "<|begin_of_text|>", "ids": []int{17}, "tokens": []string{"<|begin_of_text|>"}}}},
		}},
		"decoder": m{"type": "ByteLevel"},
		"model": m{
			"type": "BPE", "ignore_merges": true, "merges": []string{},
			"vocab": m{"a": 0, "Ġ": 1, "Ġb": 2, "123": 3, "45": 4, "I": 5, "'m": 6, "b": 7, "1": 8, "2": 9,
				"3": 10, "4": 11, "5": 12, "'": 13, "m": 14, "Ċ": 15, "ĊĊ": 16, "<|begin_of_text|>": 17, "<|eot_id|>": 18},
		},
	}
	tk := build(t, fx, m{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
	// "a  b": \s+(?!\S) takes only the first space (the second is followed by "b"), then " b".
	// Digits go in groups of at most three; "'m" is a contraction.
	ids := encode(t, tk, "a  b 12345 I'm\n\n", true)
	require.Equal(t, []int{17, 0, 1, 2, 1, 3, 4, 1, 5, 6, 16}, ids)
	require.Equal(t, "a  b 12345 I'm\n\n", decode(t, tk, ids[1:], false))
	require.Equal(t, []int{5, 18, 3}, encode(t, tk, "I<|eot_id|>123", false))
	require.Equal(t, 17, tk.BOS())
	require.Equal(t, 18, tk.EOS())
	require.Equal(t, -1, tk.PAD())
}

func TestLlama3SplitPieces(t *testing.T) {
	// Pre-token boundaries of the Llama 3 pattern, as Hugging Face produces them.
	p, err := parsePretokenizer(mustJSON(t, m{"type": "Split", "pattern": m{"Regex": llama3Pattern}, "behavior": "Isolated"}))
	require.NoError(t, err)
	for in, want := range map[string][]string{
		"Hello World!":                   {"Hello", " World", "!"},
		"I'm don't won't":                {"I", "'m", " don", "'t", " won", "'t"},
		"In 2024 there are 366 days":     {"In", " ", "202", "4", " there", " are", " ", "366", " days"},
		"Hello!! ...world":               {"Hello", "!!", " ...", "world"},
		"Hello    World":                 {"Hello", "   ", " World"},
		"Hello\nWorld":                   {"Hello", "\n", "World"},
		"Hello, WORLD!! How's it going?": {"Hello", ",", " WORLD", "!!", " How", "'s", " it", " going", "?"},
		"x  \n\n  y":                     {"x", "  \n\n", " ", " y"},
		"WE'RE 😀 ok":                     {"WE", "'RE", " 😀", " ok"},
	} {
		out, err := p.split([]piece{{in, true}})
		require.NoError(t, err)
		var got []string
		for _, x := range out {
			got = append(got, x.text)
		}
		require.Equal(t, want, got, "input %q", in)
	}
}

func TestSplitBehaviors(t *testing.T) {
	// The examples of Hugging Face's SplitDelimiterBehavior documentation.
	s := "the-final--countdown"
	p := &pattern{lit: "-"}
	ms, err := p.matches(s)
	require.NoError(t, err)
	texts := func(spans []span) []string {
		var out []string
		for _, sp := range spans {
			out = append(out, s[sp.start:sp.end])
		}
		return out
	}
	require.Equal(t, []string{"the", "final", "countdown"}, texts(splitSpans(s, ms, false, splitRemoved)))
	require.Equal(t, []string{"the", "-", "final", "-", "-", "countdown"}, texts(splitSpans(s, ms, false, splitIsolated)))
	require.Equal(t, []string{"the-", "final-", "-", "countdown"}, texts(splitSpans(s, ms, false, splitMergedWithPrevious)))
	require.Equal(t, []string{"the", "-final", "-", "-countdown"}, texts(splitSpans(s, ms, false, splitMergedWithNext)))
	require.Equal(t, []string{"the", "-", "final", "--", "countdown"}, texts(splitSpans(s, ms, false, splitContiguous)))
	require.Equal(t, []string{"-", "-", "-"}, texts(splitSpans(s, ms, true, splitRemoved)))
}

func TestPreTokenizers(t *testing.T) {
	run := func(pre m, in string) []string {
		t.Helper()
		p, err := parsePretokenizer(mustJSON(t, pre))
		require.NoError(t, err)
		out, err := p.split([]piece{{in, true}})
		require.NoError(t, err)
		var s []string
		for _, x := range out {
			s = append(s, x.text)
		}
		return s
	}
	require.Equal(t, []string{"Hello", "Ġworld", "'s", "Ġ", "Ġ123", "!"},
		run(m{"type": "ByteLevel", "add_prefix_space": false}, "Hello world's  123!"))
	require.Equal(t, []string{"ĠHi"}, run(m{"type": "ByteLevel", "add_prefix_space": true}, "Hi"))
	require.Equal(t, []string{"Ġa", "Ġb"}, run(m{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}, " a b"))
	require.Equal(t, []string{"a", "1", "2", "b"}, run(m{"type": "Digits", "individual_digits": true}, "a12b"))
	require.Equal(t, []string{"a", "12", "b"}, run(m{"type": "Digits", "individual_digits": false}, "a12b"))
	require.Equal(t, []string{"▁Hey", "▁you"}, run(m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}, "Hey you"))
	require.Equal(t, []string{"Hey▁you"}, run(m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": false}, "Hey you"))
	require.Equal(t, []string{"▁Hey", "▁you"}, run(m{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}, "Hey you"))
	require.Equal(t, []string{"a", "b-c"}, run(m{"type": "Split", "pattern": m{"String": " "}, "behavior": "Removed"}, "a b-c"))
	require.Equal(t, []string{"ab", "12"}, run(m{"type": "Split", "pattern": m{"Regex": `\p{L}+|\p{N}+`}, "behavior": "Removed", "invert": true}, "ab 12"))
	require.Equal(t, []string{"a", "b"}, run(m{"type": "WhitespaceSplit"}, " a \tb "))
}

func TestNormalizers(t *testing.T) {
	run := func(n m, in string) string {
		t.Helper()
		nz, err := parseNormalizer(mustJSON(t, n))
		require.NoError(t, err)
		out, err := nz.normalize(in)
		require.NoError(t, err)
		return out
	}
	require.Equal(t, "é", run(m{"type": "NFC"}, "e\u0301"))
	require.Equal(t, "e\u0301", run(m{"type": "NFD"}, "é"))
	require.Equal(t, "a b", run(m{"type": "Strip", "strip_left": true, "strip_right": true}, "  a b \n"))
	require.Equal(t, "x-y-z", run(m{"type": "Replace", "pattern": m{"Regex": `\s+`}, "content": "-"}, "x \t y  z"))
	require.Equal(t, "", run(m{"type": "Prepend", "prepend": "▁"}, ""))
	require.Equal(t, "▁hi", run(m{"type": "Sequence", "normalizers": []m{{"type": "Lowercase"}, {"type": "Prepend", "prepend": "▁"}}}, "HI"))
}

func TestAddedTokenStripAndNormalized(t *testing.T) {
	fx := gpt2Fixture([]string{"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"})
	vocab := fx["model"].(m)["vocab"].(m)
	vocab["<mask>"] = 17
	fx["added_tokens"] = []m{
		{"id": 16, "content": "<|endoftext|>", "special": true},
		{"id": 17, "content": "<mask>", "special": true, "lstrip": true, "rstrip": true},
		{"id": 18, "content": "hell", "special": false, "normalized": true},
		{"id": 19, "content": "<|endoftext|>x", "special": true},
	}
	tk := build(t, fx, nil)
	// lstrip/rstrip swallow the spaces around <mask>; without them " world" would keep its Ġ.
	// The added token "hell" is cut out of "hello" before BPE sees it.
	require.Equal(t, []int{18, 3, 17, 5, 13, 2, 7}, encode(t, tk, "hello <mask> world", false))
	// Longest match wins at a position.
	require.Equal(t, []int{19, 16}, encode(t, tk, "<|endoftext|>x<|endoftext|>", false))
	// A non-special added token is matched too, and kept by skipSpecial.
	ids := encode(t, tk, "hello", false)
	require.Equal(t, []int{18, 3}, ids)
	require.Equal(t, "hello", decode(t, tk, ids, true))
	id, ok := tk.TokenToID("<mask>")
	require.True(t, ok)
	require.Equal(t, 17, id)
	tok, ok := tk.IDToToken(14)
	require.True(t, ok)
	require.Equal(t, "Ġwor", tok)
	_, ok = tk.IDToToken(99)
	require.False(t, ok)
}

func TestNormalizedAddedToken(t *testing.T) {
	fx := spFixture(m{"type": "Sequence", "normalizers": []m{
		{"type": "Prepend", "prepend": "▁"},
		{"type": "Replace", "pattern": m{"String": " "}, "content": "▁"},
	}}, nil, llama2Decoder)
	fx["added_tokens"] = append(fx["added_tokens"].([]m), m{"id": 270, "content": "hi", "normalized": true, "special": false})
	tk := build(t, fx, nil)
	// A normalized added token is matched in the normalized text, against its normalized form
	// "▁hi": it matches the start of "hi ca" but not the "hi" inside "chi".
	require.Equal(t, []int{270, 263, 261}, encode(t, tk, "hi ca", false))
	require.Equal(t, []int{263, 266, 267}, encode(t, tk, "chi", false))
}

func TestDecoders(t *testing.T) {
	run := func(d m, toks ...string) string {
		t.Helper()
		dec, err := parseDecoder(mustJSON(t, d))
		require.NoError(t, err)
		return strings.Join(dec.decodeChain(toks), "")
	}
	// Byte-fallback runs become their UTF-8 text; an invalid run becomes one U+FFFD per byte.
	require.Equal(t, "é!", run(m{"type": "ByteFallback"}, "<0xC3>", "<0xA9>", "!"))
	require.Equal(t, "\uFFFD\uFFFDa", run(m{"type": "ByteFallback"}, "<0xC3>", "<0xC3>", "a"))
	require.Equal(t, "😀", run(llama2Decoder, "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"))
	require.Equal(t, "Hey friend", run(llama2Decoder, "▁Hey", "▁friend"))
	require.Equal(t, "Hey friend", run(m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}, "▁Hey", "▁friend"))
	require.Equal(t, " Hey friend", run(m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"}, "▁Hey", "▁friend"))
	require.Equal(t, "ab", run(m{"type": "Strip", "content": "x", "start": 2, "stop": 1}, "xxxabx"[1:]))
	require.Equal(t, "hello world", run(m{"type": "BPEDecoder", "suffix": "</w>"}, "hello</w>", "world</w>"))
	// ByteLevel: a truncated multi-byte sequence becomes U+FFFD, as from_utf8_lossy does.
	require.Equal(t, "a\uFFFD", run(m{"type": "ByteLevel"}, "a", string(byteToRune[0xF0])+string(byteToRune[0x9F])))
}

func TestErrors(t *testing.T) {
	_, err := Load(t.TempDir())
	require.ErrorContains(t, err, "tokenizer.json")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": `), 0o644))
	_, err = Load(dir)
	require.ErrorContains(t, err, filepath.Join(dir, "tokenizer.json"))

	write := func(v m) string {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), mustJSON(t, v), 0o644))
		return dir
	}
	for _, typ := range []string{"Unigram", "WordPiece", "WordLevel"} {
		_, err = Load(write(m{"model": m{"type": typ, "vocab": m{"a": 0}}}))
		require.ErrorContains(t, err, fmt.Sprintf("unsupported model type %q", typ))
		require.ErrorContains(t, err, "tokenizer.json")
	}
	base := gpt2Fixture([]string{"h e"})
	for field, v := range map[string]m{
		"normalizer":     {"type": "BertNormalizer"},
		"pre_tokenizer":  {"type": "Punctuation"},
		"post_processor": {"type": "Mystery"},
		"decoder":        {"type": "WordPiece"},
	} {
		fx := m{}
		for k, x := range base {
			fx[k] = x
		}
		fx[field] = v
		_, err = Load(write(fx))
		require.ErrorContains(t, err, fmt.Sprintf("unsupported %s type %q", field, v["type"]))
	}
	bad := gpt2Fixture([]string{"h x"})
	_, err = FromJSON(mustJSON(t, bad), nil)
	require.ErrorContains(t, err, "not in the vocab")
	bad = gpt2Fixture([]string{"h e"})
	bad["model"].(m)["dropout"] = 0.1
	_, err = FromJSON(mustJSON(t, bad), nil)
	require.ErrorContains(t, err, "dropout")

	tk := build(t, gpt2Fixture([]string{"h e"}), nil)
	_, err = tk.Decode([]int{1, 17}, false)
	require.ErrorContains(t, err, "id 17")
	_, err = tk.Decode([]int{-1}, false)
	require.Error(t, err)
	_, err = tk.Encode("a\xffb", false)
	require.ErrorContains(t, err, "UTF-8")

	_, err = FromJSON(mustJSON(t, gpt2Fixture([]string{"h e"})), []byte(`{"bos_token": "<nope>"}`))
	require.ErrorContains(t, err, "bos_token")
}

func TestLoadDirWithConfig(t *testing.T) {
	dir := t.TempDir()
	fx := spFixture(nil, m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}, llama2Decoder)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), mustJSON(t, fx), 0o644))
	cfg := m{
		"tokenizer_class": "LlamaTokenizer",
		"bos_token":       m{"__type": "AddedToken", "content": "<s>", "lstrip": false},
		"eos_token":       "</s>",
		"pad_token":       nil,
		"add_bos_token":   true,
		"add_eos_token":   true,
		"chat_template":   zephyrTemplate,
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), mustJSON(t, cfg), 0o644))
	tk, err := Load(dir)
	require.NoError(t, err)
	// LlamaTokenizer rebuilds the post-processor from add_bos_token/add_eos_token.
	require.Equal(t, []int{1, 269, 2}, encode(t, tk, "hi", true))
	require.Equal(t, -1, tk.PAD())
	require.True(t, tk.HasChatTemplate())

	cfg["add_bos_token"] = false
	cfg["add_eos_token"] = false
	delete(cfg, "chat_template")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), mustJSON(t, cfg), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte("{{ eos_token }}"), 0o644))
	tk, err = Load(dir)
	require.NoError(t, err)
	require.Equal(t, []int{269}, encode(t, tk, "hi", true))
	out, err := tk.ApplyChatTemplate(nil, false)
	require.NoError(t, err)
	require.Equal(t, "</s>", out)
}
