package tokenizer

import "strings"

// Typed mirrors of the tokenizer.json sections this package writes, so that generated files have
// a fixed field order and load in Hugging Face tokenizers too.

type jsonAddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type jsonBPE struct {
	Type                    string         `json:"type"`
	Dropout                 *float64       `json:"dropout"`
	UnkToken                *string        `json:"unk_token"`
	ContinuingSubwordPrefix *string        `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string        `json:"end_of_word_suffix"`
	FuseUnk                 bool           `json:"fuse_unk"`
	ByteFallback            bool           `json:"byte_fallback"`
	IgnoreMerges            bool           `json:"ignore_merges"`
	Vocab                   map[string]int `json:"vocab"`
	Merges                  any            `json:"merges"`
}

type jsonTokenizer struct {
	Version       string           `json:"version"`
	Truncation    any              `json:"truncation"`
	Padding       any              `json:"padding"`
	AddedTokens   []jsonAddedToken `json:"added_tokens"`
	Normalizer    any              `json:"normalizer"`
	PreTokenizer  any              `json:"pre_tokenizer"`
	PostProcessor any              `json:"post_processor"`
	Decoder       any              `json:"decoder"`
	Model         jsonBPE          `json:"model"`
}

type obj = map[string]any

// bosTemplate is a TemplateProcessing post-processor that puts bos (with id) before each sequence.
func bosTemplate(bos string, id int) obj {
	st := func(name string, typeID int) obj { return obj{"SpecialToken": obj{"id": name, "type_id": typeID}} }
	seq := func(name string, typeID int) obj { return obj{"Sequence": obj{"id": name, "type_id": typeID}} }
	return obj{
		"type":   "TemplateProcessing",
		"single": []obj{st(bos, 0), seq("A", 0)},
		"pair":   []obj{st(bos, 0), seq("A", 0), st(bos, 1), seq("B", 1)},
		"special_tokens": obj{
			bos: obj{"id": bos, "ids": []int{id}, "tokens": []string{bos}},
		},
	}
}

// mergesJSON writes merges in the classic "a b" form, which every tokenizers version reads, unless
// a token holds a space; then it uses the newer [a, b] form.
func mergesJSON(pairs [][2]string) any {
	strs := make([]string, len(pairs))
	for i, p := range pairs {
		if strings.Contains(p[0], " ") || strings.Contains(p[1], " ") {
			return pairs
		}
		strs[i] = p[0] + " " + p[1]
	}
	return strs
}
