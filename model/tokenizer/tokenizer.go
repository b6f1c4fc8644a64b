package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and decodes ids to text the way Hugging Face tokenizers
// does for the tokenizer.json it was loaded from. It is safe for concurrent use.
type Tokenizer struct {
	model *bpe
	norm  normalizer
	pre   pretokenizer
	post  postProcessor
	dec   decoder

	addedByID      map[int]*addedToken
	addedByContent map[string]*addedToken
	rawMatch       *addedMatcher // added tokens with normalized=false, matched in the raw text
	normMatch      *addedMatcher // normalized=true, matched in the normalized text

	idToToken []string
	hasID     []bool

	bos, eos, pad, unk int
	bosTok, eosTok     string
	padTok, unkTok     string

	chatMu        sync.Mutex
	chatTemplates map[string]string // by name; a single template is "default"
	chatCompiled  map[string]*compiledTemplate
}

// maxVocab bounds token ids, so that a corrupt file cannot make Load allocate without limit.
const maxVocab = 1 << 21

// tokenizerFile is the top level of tokenizer.json.
type tokenizerFile struct {
	Version       string
	AddedTokens   []*addedToken   `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// Load reads dir/tokenizer.json and, when present, dir/tokenizer_config.json (special tokens,
// add_bos_token/add_eos_token, chat_template).
//
// A path ending in .gguf loads the tokenizer of that GGUF file instead (see LoadGGUF).
func Load(dir string) (*Tokenizer, error) {
	if strings.EqualFold(filepath.Ext(dir), ".gguf") {
		return LoadGGUF(dir)
	}
	tokPath := filepath.Join(dir, "tokenizer.json")
	tokJSON, err := os.ReadFile(tokPath)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	cfgJSON, err := os.ReadFile(cfgPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := parseTokenizer(tokJSON)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", tokPath, err)
	}
	if err := t.applyConfig(cfgJSON); err != nil {
		return nil, fmt.Errorf("load %s: %w", cfgPath, err)
	}
	if len(t.chatTemplates) == 0 {
		// Newer transformers save the template beside the config.
		jinjaPath := filepath.Join(dir, "chat_template.jinja")
		if b, err := os.ReadFile(jinjaPath); err == nil {
			t.chatTemplates = map[string]string{defaultTemplate: string(b)}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load tokenizer: %w", err)
		}
	}
	return t, nil
}

// FromJSON builds a Tokenizer from the contents of a tokenizer.json and, optionally (nil to
// omit), a tokenizer_config.json.
func FromJSON(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	t, err := parseTokenizer(tokenizerJSON)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if err := t.applyConfig(configJSON); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	return t, nil
}

func parseTokenizer(data []byte) (*Tokenizer, error) {
	var f tokenizerFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if isNull(f.Model) {
		return nil, fmt.Errorf("no model")
	}
	t := &Tokenizer{addedByID: map[int]*addedToken{}, addedByContent: map[string]*addedToken{}, bos: -1, eos: -1, pad: -1, unk: -1}
	var err error
	if t.model, err = parseBPE(f.Model); err != nil {
		return nil, err
	}
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePretokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if t.post, err = parsePostProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(f.Decoder); err != nil {
		return nil, err
	}

	size := 0
	for _, id := range t.model.vocab {
		size = max(size, id+1)
	}
	for i, a := range f.AddedTokens {
		if a == nil || a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: want an id ≥ 0 and non-empty content", i)
		}
		size = max(size, a.ID+1)
	}
	if size > maxVocab {
		return nil, fmt.Errorf("token id %d is beyond the supported vocabulary size %d", size-1, maxVocab)
	}
	t.idToToken = make([]string, size)
	t.hasID = make([]bool, size)
	for tok, id := range t.model.vocab {
		if t.hasID[id] {
			return nil, fmt.Errorf("model vocab: id %d is used by both %q and %q", id, t.idToToken[id], tok)
		}
		t.idToToken[id], t.hasID[id] = tok, true
	}
	var raw, normed []matchEntry
	for _, a := range f.AddedTokens {
		t.addedByID[a.ID] = a
		t.addedByContent[a.Content] = a
		// Added tokens take precedence over the model vocab for id → token, as in Hugging Face.
		t.idToToken[a.ID], t.hasID[a.ID] = a.Content, true
		if !a.Normalized || t.norm == nil {
			raw = append(raw, matchEntry{a.Content, a})
			continue
		}
		pat, err := t.norm.normalize(a.Content)
		if err != nil {
			return nil, err
		}
		normed = append(normed, matchEntry{pat, a})
	}
	t.rawMatch = newAddedMatcher(raw)
	t.normMatch = newAddedMatcher(normed)
	t.unk = t.model.unkID
	if t.unk >= 0 {
		t.unkTok = t.idToToken[t.unk]
	}
	return t, nil
}

// Encode returns the token ids of text, which must be valid UTF-8. addSpecial applies the
// post-processor (BOS for Llama). Special tokens written in the text ("<|eot_id|>") are
// encoded as themselves, as Hugging Face does by default.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int, error) {
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("encode: text is not valid UTF-8")
	}
	ids := make([]int, 0, len(text)/3+2)
	var err error
	for _, seg := range t.rawMatch.split(text) {
		if seg.tok != nil {
			ids = append(ids, seg.tok.ID)
			continue
		}
		s := seg.text
		if t.norm != nil {
			if s, err = t.norm.normalize(s); err != nil {
				return nil, fmt.Errorf("encode: %w", err)
			}
		}
		for _, sub := range t.normMatch.split(s) {
			if sub.tok != nil {
				ids = append(ids, sub.tok.ID)
				continue
			}
			if ids, err = t.encodePiece(ids, sub.text, seg.start == 0 && sub.start == 0); err != nil {
				return nil, fmt.Errorf("encode: %w", err)
			}
		}
	}
	if addSpecial && t.post != nil {
		ids = t.post.process(ids)
	}
	return ids, nil
}

// encodePiece pre-tokenizes one normalized piece and appends the model's ids for each pre-token.
func (t *Tokenizer) encodePiece(ids []int, s string, first bool) ([]int, error) {
	if s == "" {
		return ids, nil
	}
	pieces := []piece{{s, first}}
	if t.pre != nil {
		var err error
		if pieces, err = t.pre.split(pieces); err != nil {
			return nil, err
		}
	}
	for _, p := range pieces {
		ids = t.model.tokenize(ids, p.text)
	}
	return ids, nil
}

// Decode turns ids back into text. skipSpecial drops special added tokens (BOS, EOS, ...).
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) (string, error) {
	toks := make([]string, 0, len(ids))
	for i, id := range ids {
		tok, ok := t.IDToToken(id)
		if !ok {
			return "", fmt.Errorf("decode: id %d at position %d is not in the vocabulary (size %d)", id, i, len(t.idToToken))
		}
		if skipSpecial && t.IsSpecial(id) {
			continue
		}
		toks = append(toks, tok)
	}
	if t.dec == nil {
		return strings.Join(toks, " "), nil
	}
	return strings.Join(t.dec.decodeChain(toks), ""), nil
}

// TokenToID returns the id of a token string (added tokens first, then the model vocab).
func (t *Tokenizer) TokenToID(tok string) (int, bool) {
	if a, ok := t.addedByContent[tok]; ok {
		return a.ID, true
	}
	id, ok := t.model.vocab[tok]
	return id, ok
}

// IDToToken returns the token string of id, in the model's own alphabet (e.g. "▁the", "Ġthe").
func (t *Tokenizer) IDToToken(id int) (string, bool) {
	if id < 0 || id >= len(t.idToToken) || !t.hasID[id] {
		return "", false
	}
	return t.idToToken[id], true
}

// VocabSize is one more than the largest id of the model vocab and the added tokens.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// BOS returns the beginning-of-sequence id, or -1 when there is none.
func (t *Tokenizer) BOS() int { return t.bos }

// EOS returns the end-of-sequence id, or -1 when there is none.
func (t *Tokenizer) EOS() int { return t.eos }

// PAD returns the padding id, or -1 when there is none.
func (t *Tokenizer) PAD() int { return t.pad }

// UNK returns the unknown-token id, or -1 when there is none.
func (t *Tokenizer) UNK() int { return t.unk }

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}
