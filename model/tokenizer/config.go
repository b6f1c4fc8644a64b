package tokenizer

import (
	"encoding/json"
	"fmt"
)

// tokenizerConfig holds the fields of tokenizer_config.json that change encoding or rendering.
type tokenizerConfig struct {
	BOS            json.RawMessage `json:"bos_token"`
	EOS            json.RawMessage `json:"eos_token"`
	PAD            json.RawMessage `json:"pad_token"`
	UNK            json.RawMessage `json:"unk_token"`
	AddBOS         *bool           `json:"add_bos_token"`
	AddEOS         *bool           `json:"add_eos_token"`
	ChatTemplate   json.RawMessage `json:"chat_template"`
	TokenizerClass string          `json:"tokenizer_class"`
}

const defaultTemplate = "default"

// llamaClasses are the transformers classes whose fast tokenizer rebuilds its post-processor from
// add_bos_token/add_eos_token (defaults true/false) instead of using tokenizer.json's.
var llamaClasses = map[string]bool{
	"LlamaTokenizer": true, "LlamaTokenizerFast": true,
	"CodeLlamaTokenizer": true, "CodeLlamaTokenizerFast": true,
}

// tokenName reads a special-token field: null, a string, or an AddedToken object with content.
func tokenName(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct{ Content string }
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("special token %s: want a string or {\"content\": ...}", raw)
	}
	return obj.Content, nil
}

// applyConfig applies tokenizer_config.json. BOS/EOS/PAD that it does not mention are guessed
// from the post-processor and the usual special-token names; a field set to null means none.
func (t *Tokenizer) applyConfig(data []byte) error {
	t.guessSpecials()
	if data == nil {
		return nil
	}
	var c tokenizerConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return err
	}
	for _, f := range []struct {
		raw  json.RawMessage
		name *string
		id   *int
		what string
	}{
		{c.BOS, &t.bosTok, &t.bos, "bos_token"},
		{c.EOS, &t.eosTok, &t.eos, "eos_token"},
		{c.PAD, &t.padTok, &t.pad, "pad_token"},
		{c.UNK, &t.unkTok, &t.unk, "unk_token"},
	} {
		if f.raw == nil {
			continue // absent: keep the guess
		}
		name, err := tokenName(f.raw)
		if err != nil {
			return fmt.Errorf("%s: %w", f.what, err)
		}
		if name == "" {
			if f.what != "unk_token" { // the model's own unk stays
				*f.name, *f.id = "", -1
			}
			continue
		}
		id, ok := t.TokenToID(name)
		if !ok {
			return fmt.Errorf("%s %q is not in the vocabulary", f.what, name)
		}
		*f.name, *f.id = name, id
	}
	if llamaClasses[c.TokenizerClass] {
		addBOS := c.AddBOS == nil || *c.AddBOS
		addEOS := c.AddEOS != nil && *c.AddEOS
		var tp templatePost
		if addBOS {
			if t.bos < 0 {
				return fmt.Errorf("add_bos_token is true but there is no bos_token")
			}
			tp.items = append(tp.items, []int{t.bos})
		}
		tp.items = append(tp.items, nil)
		if addEOS {
			if t.eos < 0 {
				return fmt.Errorf("add_eos_token is true but there is no eos_token")
			}
			tp.items = append(tp.items, []int{t.eos})
		}
		t.post = tp
	}
	return t.parseChatTemplates(c.ChatTemplate)
}

func (t *Tokenizer) parseChatTemplates(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		t.chatTemplates = map[string]string{defaultTemplate: s}
		return nil
	}
	var list []struct{ Name, Template string }
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("chat_template: want a string or a list of {name, template}: %w", err)
	}
	t.chatTemplates = map[string]string{}
	for _, e := range list {
		t.chatTemplates[e.Name] = e.Template
	}
	return nil
}

func (t *Tokenizer) guessSpecials() {
	find := func(names ...string) (string, int) {
		for _, n := range names {
			if id, ok := t.TokenToID(n); ok {
				return n, id
			}
		}
		return "", -1
	}
	// A template that starts with a special token names the BOS.
	if tp, ok := t.post.(templatePost); ok && len(tp.items) > 1 && len(tp.items[0]) == 1 {
		t.bos = tp.items[0][0]
		t.bosTok, _ = t.IDToToken(t.bos)
	} else {
		t.bosTok, t.bos = find("<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>")
	}
	t.eosTok, t.eos = find("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>")
	t.padTok, t.pad = find("<pad>", "<|pad|>", "[PAD]")
}
