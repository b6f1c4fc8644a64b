package train

import (
	"bytes"
	"testing"
)

// FuzzJSONL feeds mutated JSONL datasets (every line form: text, prompt+completion, messages,
// input_ids with and without labels; a BOM, blank lines, CRLF) to the reader, through a tokenizer
// with a chat template and through the tokenizer-less encoder of pre-tokenized data. Bad input
// must give an error naming the line, never a panic; every example read must be well formed.
func FuzzJSONL(f *testing.F) {
	for _, s := range []string{
		`{"text": "Once upon a time, there was a little girl named Lily."}`,
		`{"prompt": "Question: what is two plus two?\nAnswer:", "completion": " four."}`,
		`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}`,
		`{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}, {"role": "user", "content": "yes"}]}`,
		`{"input_ids": [0, 5, 6, 7, 1]}`,
		`{"input_ids": [5, 6, 7], "labels": [-100, 6, -100]}`,
		"\xef\xbb\xbf{\"input_ids\": [3]}\r\n\n{\"text\": \"a\"}\n",
		`{"text": "a", "input_ids": [1]}`,
		`{"input_ids": [1e3, -1, 2.5]}`,
	} {
		f.Add([]byte(s))
	}
	tk := testTokenizer(f, true)
	enc, err := NewEncoder(tk)
	if err != nil {
		f.Fatal(err)
	}
	vocab := tk.VocabSize()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range []*Encoder{enc, NewIDEncoder(vocab)} {
			exs, err := e.ReadJSONL(bytes.NewReader(data), "fuzz.jsonl")
			if err != nil {
				if !bytes.Contains([]byte(err.Error()), []byte("fuzz.jsonl")) {
					t.Fatalf("error does not name the file: %v", err)
				}
				continue
			}
			for i, ex := range exs {
				if len(ex.IDs) == 0 || len(ex.IDs) != len(ex.Labels) || ex.Labels[0] != IgnoreIndex {
					t.Fatalf("example %d: %d ids, %d labels, first label %d", i, len(ex.IDs), len(ex.Labels), ex.Labels[0])
				}
				for j := range ex.IDs {
					if ex.IDs[j] < 0 || int(ex.IDs[j]) >= vocab || (ex.Labels[j] != IgnoreIndex && (ex.Labels[j] < 0 || int(ex.Labels[j]) >= vocab)) {
						t.Fatalf("example %d token %d: id %d label %d outside [0, %d)", i, j, ex.IDs[j], ex.Labels[j], vocab)
					}
				}
			}
		}
		_, _ = allPreTokenized(bytes.NewReader(data))
	})
}
