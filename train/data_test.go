package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/tokenizer"
)

const chatML = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

var corpus = []string{
	"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
	"Question: what is two plus two?\nAnswer: four. Be brief. Hi there, how are you? Sure, yes.",
	"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n",
}

// testTokenizer is a tiny byte-level BPE with BOS <s> (0), EOS </s> (1) and the ChatML markers.
func testTokenizer(t testing.TB, withTemplate bool) *tokenizer.Tokenizer {
	t.Helper()
	data, err := tokenizer.TrainByteLevelBPE(corpus, 320, []string{"<s>", "</s>", "<|im_start|>", "<|im_end|>"})
	require.NoError(t, err)
	tk, err := tokenizer.FromJSON(data, nil)
	require.NoError(t, err)
	require.Equal(t, 0, tk.BOS())
	require.Equal(t, 1, tk.EOS())
	if withTemplate {
		require.NoError(t, tk.SetChatTemplate(chatML))
	}
	return tk
}

func enc(t *testing.T, tk *tokenizer.Tokenizer, s string, special bool) []int32 {
	t.Helper()
	ids, err := tk.Encode(s, special)
	require.NoError(t, err)
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

func cat(parts ...[]int32) []int32 {
	var out []int32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ignore(n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = IgnoreIndex
	}
	return out
}

// spans decodes each run of labelled tokens.
func spans(t *testing.T, tk *tokenizer.Tokenizer, ex Example) []string {
	var out []string
	var run []int
	flush := func() {
		if len(run) > 0 {
			s, err := tk.Decode(run, false)
			require.NoError(t, err)
			out = append(out, s)
			run = nil
		}
	}
	for i, l := range ex.Labels {
		if l == IgnoreIndex {
			flush()
			continue
		}
		require.Equal(t, ex.IDs[i], l, "a label is its own token")
		run = append(run, int(l))
	}
	flush()
	return out
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestTextShape(t *testing.T) {
	tk := testTokenizer(t, false)
	p := writeFile(t, "d.jsonl", "\ufeff"+`{"text": "Once upon a time"}`+"\r\n\n"+`{"text":"Lily", "meta": 1}`)
	exs, err := LoadJSONL(p, tk)
	require.NoError(t, err)
	require.Len(t, exs, 2)
	body := enc(t, tk, "Once upon a time", false)
	require.Equal(t, cat([]int32{0}, body, []int32{1}), exs[0].IDs)
	require.Equal(t, cat(ignore(1), body, []int32{1}), exs[0].Labels)
	require.Equal(t, len(body)+1, exs[0].Tokens())
}

func TestPromptCompletionMask(t *testing.T) {
	tk := testTokenizer(t, false)
	enc2, err := NewEncoder(tk)
	require.NoError(t, err)
	prompt, completion := "Question: what is two plus two?\nAnswer:", " four."
	ex, err := enc2.EncodeLine([]byte(`{"prompt": "Question: what is two plus two?\nAnswer:", "completion": " four."}`))
	require.NoError(t, err)
	pre := enc(t, tk, prompt, true)
	comp := enc(t, tk, completion, false)
	require.Equal(t, cat(pre, comp, []int32{1}), ex.IDs)
	require.Equal(t, cat(ignore(len(pre)), comp, []int32{1}), ex.Labels)
	require.Equal(t, []string{" four.</s>"}, spans(t, tk, ex))
}

func TestMessagesAssistantOnly(t *testing.T) {
	tk := testTokenizer(t, true)
	e, err := NewEncoder(tk)
	require.NoError(t, err)
	line := `{"messages": [{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},` +
		`{"role":"assistant","content":"Hello"},{"role":"user","content":"How are you?"},{"role":"assistant","content":"Sure, yes."}]}`
	ex, err := e.EncodeLine([]byte(line))
	require.NoError(t, err)
	require.Equal(t, []string{"Hello<|im_end|>\n", "Sure, yes.<|im_end|>\n</s>"}, spans(t, tk, ex))

	// Exact ids and mask, segment by segment (ChatML's segments do not merge across boundaries).
	seg := func(s string) []int32 { return enc(t, tk, s, false) }
	p1 := seg("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
	a1 := seg("Hello<|im_end|>\n")
	p2 := seg("<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n")
	a2 := seg("Sure, yes.<|im_end|>\n")
	require.Equal(t, cat(p1, a1, p2, a2, []int32{1}), ex.IDs)
	require.Equal(t, cat(ignore(len(p1)), a1, ignore(len(p2)), a2, []int32{1}), ex.Labels)

	// A conversation that ends with the user: no loss on the appended EOS.
	ex, err = e.Messages([]tokenizer.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}, {Role: "user", Content: "Bye"}})
	require.NoError(t, err)
	require.Equal(t, []string{"Hello<|im_end|>\n"}, spans(t, tk, ex))
	require.Equal(t, int32(1), ex.IDs[len(ex.IDs)-1])

	_, err = e.Messages([]tokenizer.Message{{Role: "user", Content: "Hi"}})
	require.ErrorContains(t, err, "no assistant turn")

	// A template that rewrites earlier turns cannot be masked by prefixes.
	require.NoError(t, tk.SetChatTemplate(`{% for m in messages %}{{ m['content'] }}{% endfor %}{% if messages|length > 1 %}!{% endif %}`))
	_, err = e.Messages([]tokenizer.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}, {Role: "user", Content: "x"}})
	require.ErrorContains(t, err, "prefix-stable")
}

func TestMessagesWithoutTemplate(t *testing.T) {
	tk := testTokenizer(t, false)
	p := writeFile(t, "chat.jsonl", `{"messages": [{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}`+"\n")
	_, err := LoadJSONL(p, tk)
	require.ErrorContains(t, err, "chat.jsonl:1")
	require.ErrorContains(t, err, "chat template")
}

func TestInputIDs(t *testing.T) {
	tk := testTokenizer(t, false)
	e, err := NewEncoder(tk)
	require.NoError(t, err)
	// Taken as given: no BOS, no EOS; loss on every token after the first.
	ex, err := e.EncodeLine([]byte(`{"input_ids": [5, 6, 7]}`))
	require.NoError(t, err)
	require.Equal(t, []int32{5, 6, 7}, ex.IDs)
	require.Equal(t, []int32{IgnoreIndex, 6, 7}, ex.Labels)

	// Explicit labels are kept as given (a label may differ from its id); labels[0] has no loss.
	ex, err = e.EncodeLine([]byte(`{"input_ids": [0, 5, 6, 9], "labels": [0, -100, 8, 1]}`))
	require.NoError(t, err)
	require.Equal(t, []int32{0, 5, 6, 9}, ex.IDs)
	require.Equal(t, []int32{IgnoreIndex, IgnoreIndex, 8, 1}, ex.Labels)

	// Without a tokenizer: the same examples, and every other shape is refused.
	ide := NewIDEncoder(320)
	ex2, err := ide.EncodeLine([]byte(`{"input_ids": [0, 5, 6, 9], "labels": [0, -100, 8, 1]}`))
	require.NoError(t, err)
	require.Equal(t, ex, ex2)
	_, err = ide.EncodeLine([]byte(`{"text": "hi"}`))
	require.ErrorContains(t, err, "tokenizer.json")

	_, err = e.EncodeLine([]byte(`{"input_ids": [5, 320]}`))
	require.ErrorContains(t, err, "input_ids[1] = 320 is outside the vocabulary [0, 320)")
	_, err = e.EncodeLine([]byte(`{"input_ids": [5, -1]}`))
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = e.EncodeLine([]byte(`{"input_ids": [5], "labels": [5, 6]}`))
	require.ErrorContains(t, err, "labels")
	_, err = e.EncodeLine([]byte(`{"input_ids": []}`))
	require.ErrorContains(t, err, "empty")
}

func TestLoadDatasetWithoutTokenizer(t *testing.T) {
	dir := t.TempDir() // a model folder with no tokenizer.json
	p := writeFile(t, "ids.jsonl", "\xef\xbb\xbf{\"input_ids\": [3, 4, 5]}\n\n{\"input_ids\": [7, 8], \"labels\": [-100, 8]}\n")
	exs, err := LoadDataset(p, dir, 10)
	require.NoError(t, err)
	require.Equal(t, []Example{{IDs: []int32{3, 4, 5}, Labels: []int32{IgnoreIndex, 4, 5}}, {IDs: []int32{7, 8}, Labels: []int32{IgnoreIndex, 8}}}, exs)
	_, err = LoadDataset(writeFile(t, "big.jsonl", `{"input_ids": [3, 10]}`), dir, 10)
	require.ErrorContains(t, err, "big.jsonl:1: input_ids[1] = 10 is outside the vocabulary [0, 10)")
	// Text needs the tokenizer, and its absence is reported.
	_, err = LoadDataset(writeFile(t, "mixed.jsonl", "{\"input_ids\": [3]}\n{\"text\": \"a\"}\n"), dir, 10)
	require.ErrorContains(t, err, "tokenizer.json")
}

func TestJSONLErrors(t *testing.T) {
	tk := testTokenizer(t, false)
	for _, c := range []struct{ name, content, want string }{
		{"bad.jsonl", `{"text": "ok"}` + "\n" + `{"text": "unterminated` + "\n", "bad.jsonl:2: invalid JSON"},
		{"type.jsonl", `{"text": 5}`, "type.jsonl:1: invalid JSON"},
		{"shape.jsonl", `{"text": "ok"}` + "\n\n" + `{"question": "?"}`, "shape.jsonl:3: unknown shape"},
		{"ambig.jsonl", `{"text": "a", "input_ids": [1]}`, "ambig.jsonl:1: ambiguous shape"},
		{"half.jsonl", `{"prompt": "a"}`, `half.jsonl:1: "prompt" and "completion" must come together`},
		{"array.jsonl", `[1, 2]`, "array.jsonl:1: invalid JSON"},
		{"two.jsonl", `{"text": "a"} {"text": "b"}`, "two.jsonl:1: invalid JSON: more than one value"},
		{"msg.jsonl", `{"messages": [{"role": "user"}]}`, `msg.jsonl:1: messages[0]: want string "role" and "content"`},
		{"empty.jsonl", "", "empty.jsonl: the dataset has no examples"},
		{"blank.jsonl", "\n  \n", "blank.jsonl: the dataset has no examples"},
		{"emptytext.jsonl", `{"text": ""}`, `emptytext.jsonl:1: "text" is empty`},
	} {
		_, err := LoadJSONL(writeFile(t, c.name, c.content), tk)
		require.ErrorContains(t, err, c.want, c.name)
	}
	_, err := LoadJSONL(filepath.Join(t.TempDir(), "missing.jsonl"), tk)
	require.ErrorContains(t, err, "missing.jsonl")

	shape, err := DetectShape([]byte(`{"messages": []}`))
	require.NoError(t, err)
	require.Equal(t, ShapeMessages, shape)
}

func TestSplit(t *testing.T) {
	exs := make([]Example, 10)
	for i := range exs {
		exs[i] = Example{IDs: []int32{int32(i)}, Labels: []int32{IgnoreIndex}}
	}
	tr, ev, err := Split(exs, 0.2, 7)
	require.NoError(t, err)
	require.Len(t, tr, 8)
	require.Len(t, ev, 2)
	tr2, ev2, err := Split(exs, 0.2, 7)
	require.NoError(t, err)
	require.Equal(t, tr, tr2)
	require.Equal(t, ev, ev2)
	seen := map[int32]bool{}
	for _, e := range append(append([]Example{}, tr...), ev...) {
		seen[e.IDs[0]] = true
	}
	require.Len(t, seen, 10, "every example lands in exactly one set")

	differs := false
	for seed := uint64(8); seed < 20 && !differs; seed++ {
		_, ev3, _ := Split(exs, 0.2, seed)
		differs = ev3[0].IDs[0] != ev[0].IDs[0] || ev3[1].IDs[0] != ev[1].IDs[0]
	}
	require.True(t, differs, "the seed changes the split")

	tr, ev, err = Split(exs[:2], 0.01, 1)
	require.NoError(t, err)
	require.Len(t, tr, 1)
	require.Len(t, ev, 1)
	tr, ev, err = Split(exs[:1], 0.5, 1)
	require.NoError(t, err)
	require.Len(t, tr, 1)
	require.Empty(t, ev)
	tr, ev, err = Split(exs, 0, 1)
	require.NoError(t, err)
	require.Len(t, tr, 10)
	require.Empty(t, ev)
	_, _, err = Split(exs, 1, 1)
	require.Error(t, err)
}

func TestReadJSONLName(t *testing.T) {
	tk := testTokenizer(t, false)
	_, err := ReadJSONL(strings.NewReader("{}\n"), "stdin", tk)
	require.ErrorContains(t, err, "stdin:1: unknown shape")
}

func TestMessagesTemplateWritesBOS(t *testing.T) {
	tk := testTokenizer(t, false)
	require.NoError(t, tk.SetChatTemplate(`{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}`))
	e, err := NewEncoder(tk)
	require.NoError(t, err)
	ex, err := e.Messages([]tokenizer.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: " Hello"}})
	require.NoError(t, err)
	require.Equal(t, int32(0), ex.IDs[0])
	require.NotEqual(t, int32(0), ex.IDs[1], "the template's BOS is not doubled")
	// The template already ends with EOS: it is not appended again, and it carries loss.
	require.Equal(t, int32(1), ex.IDs[len(ex.IDs)-1])
	require.NotEqual(t, int32(1), ex.IDs[len(ex.IDs)-2])
	require.Equal(t, []string{" Hello</s>"}, spans(t, tk, ex))
}
