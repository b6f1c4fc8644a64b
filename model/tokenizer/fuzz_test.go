package tokenizer

import (
	"encoding/json"
	"testing"
)

// FuzzFromJSON feeds mutated tokenizer.json files to FromJSON, Encode and Decode: bad input must
// give errors, never panics.
func FuzzFromJSON(f *testing.F) {
	for _, fx := range []m{
		gpt2Fixture([]string{"h e", "l l"}),
		spFixture(m{"type": "Prepend", "prepend": "▁"}, nil, llama2Decoder),
		spFixture(nil, m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}, m{"type": "Metaspace", "replacement": "▁"}),
	} {
		b, err := json.Marshal(fx)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "hello café 😀 <s> world")
	}
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		tk, err := FromJSON(data, nil)
		if err != nil {
			return
		}
		ids, err := tk.Encode(text, true)
		if err != nil {
			return
		}
		_, _ = tk.Decode(ids, false)
		_, _ = tk.Decode([]int{0, 1, 2, 3, 300, -1}, true)
	})
}

// FuzzChatTemplate renders arbitrary templates: errors are fine, panics are not.
func FuzzChatTemplate(f *testing.F) {
	for _, s := range []string{llama2ChatTemplate, zephyrTemplate, qwen2Template, llama3Template, "{% for %}", "{{ messages[0][1:2:3] }}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tk := chatTokenizer(t, "", "<s>", "</s>")
		if tk.SetChatTemplate(src) != nil {
			return
		}
		_, _ = tk.ApplyChatTemplate([]Message{{"user", "Hi"}, {"assistant", "Yo"}}, true)
	})
}
