package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/lathe-ml/lathe/model/tokenizer"
)

// IgnoreIndex marks a label that carries no loss, as in PyTorch's cross-entropy.
const IgnoreIndex = -100

// Example is one tokenized training example: IDs and Labels of equal length. Labels[i] is the token
// the model is trained to see at position i (IDs[i]) or IgnoreIndex where it carries no loss, the
// way Hugging Face's `labels` are: the loss at position t compares the prediction made there with
// Labels[t+1]. Labels[0] is always IgnoreIndex since nothing precedes it.
type Example struct {
	IDs    []int32
	Labels []int32
}

// Tokens is the number of labels that carry loss.
func (e Example) Tokens() int {
	n := 0
	for _, l := range e.Labels {
		if l != IgnoreIndex {
			n++
		}
	}
	return n
}

// Dataset shapes recognised per JSONL line.
const (
	ShapeText             = "text"
	ShapePromptCompletion = "prompt_completion"
	ShapeMessages         = "messages"
	ShapeInputIDs         = "input_ids"
)

// line is one JSONL record; a field is nil when absent so shapes can be told apart.
type line struct {
	Text       *string        `json:"text"`
	Prompt     *string        `json:"prompt"`
	Completion *string        `json:"completion"`
	Messages   *[]lineMessage `json:"messages"`
	InputIDs   *[]int64       `json:"input_ids"`
	Labels     *[]int64       `json:"labels"`
}

type lineMessage struct {
	Role    *string `json:"role"`
	Content *string `json:"content"`
}

// Encoder turns one dataset record into an Example with a tokenizer. It holds what it learns about
// the tokenizer once (which specials Encode adds), so build one per tokenizer and reuse it.
type Encoder struct {
	tok    *tokenizer.Tokenizer // nil: pre-tokenized lines only
	vocab  int                  // ids must be below it
	prefix []int                // the ids Encode(text, true) adds before the text (BOS)
	suffix []int                // and after it
}

// errNoTokenizer is the error of a line that needs a tokenizer on an Encoder without one.
var errNoTokenizer = errors.New("this line needs the model's tokenizer.json, and the folder has none (only pre-tokenized \"input_ids\" lines can do without)")

// NewIDEncoder returns an Encoder without a tokenizer, for pre-tokenized data ("input_ids" lines)
// of a model with vocab tokens: every other shape is an error.
func NewIDEncoder(vocab int) *Encoder { return &Encoder{vocab: vocab} }

// NewEncoder probes which special tokens tok's post-processor adds around a text.
func NewEncoder(tok *tokenizer.Tokenizer) (*Encoder, error) {
	if tok == nil {
		return nil, errors.New("encoder: nil tokenizer")
	}
	const probe = "a"
	bare, err := tok.Encode(probe, false)
	if err != nil {
		return nil, fmt.Errorf("encoder: %w", err)
	}
	full, err := tok.Encode(probe, true)
	if err != nil {
		return nil, fmt.Errorf("encoder: %w", err)
	}
	e := &Encoder{tok: tok, vocab: tok.VocabSize()}
	for i := 0; i+len(bare) <= len(full); i++ {
		if slices.Equal(full[i:i+len(bare)], bare) {
			e.prefix = slices.Clone(full[:i])
			e.suffix = slices.Clone(full[i+len(bare):])
			break
		}
	}
	return e, nil
}

// DetectShape reports which dataset shape (ShapeText, ...) a JSONL line has, or an error for an
// unknown or ambiguous one.
func DetectShape(raw []byte) (string, error) {
	var l line
	if err := json.Unmarshal(raw, &l); err != nil {
		return "", err
	}
	return l.shape()
}

func (l *line) shape() (string, error) {
	var found []string
	if l.Text != nil {
		found = append(found, ShapeText)
	}
	if l.Prompt != nil || l.Completion != nil {
		if l.Prompt == nil || l.Completion == nil {
			return "", errors.New(`"prompt" and "completion" must come together`)
		}
		found = append(found, ShapePromptCompletion)
	}
	if l.Messages != nil {
		found = append(found, ShapeMessages)
	}
	if l.InputIDs != nil {
		found = append(found, ShapeInputIDs)
	}
	if l.Labels != nil && l.InputIDs == nil {
		return "", errors.New(`"labels" needs "input_ids"`)
	}
	switch len(found) {
	case 0:
		return "", errors.New(`unknown shape: want "text", "prompt"+"completion", "messages" or "input_ids"`)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("ambiguous shape: has fields of %v", found)
}

// EncodeLine tokenizes one JSONL record (a JSON object in one of the four shapes).
func (e *Encoder) EncodeLine(raw []byte) (Example, error) {
	var l line
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&l); err != nil {
		return Example{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return Example{}, errors.New("invalid JSON: more than one value on the line")
	}
	shape, err := l.shape()
	if err != nil {
		return Example{}, err
	}
	if e.tok == nil && shape != ShapeInputIDs {
		return Example{}, fmt.Errorf("%q: %w", shape, errNoTokenizer)
	}
	switch shape {
	case ShapeText:
		return e.Text(*l.Text)
	case ShapePromptCompletion:
		return e.PromptCompletion(*l.Prompt, *l.Completion)
	case ShapeMessages:
		msgs := make([]tokenizer.Message, len(*l.Messages))
		for i, m := range *l.Messages {
			if m.Role == nil || m.Content == nil {
				return Example{}, fmt.Errorf(`messages[%d]: want string "role" and "content"`, i)
			}
			msgs[i] = tokenizer.Message{Role: *m.Role, Content: *m.Content}
		}
		return e.Messages(msgs)
	default:
		var labels []int64
		if l.Labels != nil {
			labels = *l.Labels
		}
		return e.InputIDs(*l.InputIDs, labels)
	}
}

// Text encodes a plain text example: BOS per the tokenizer, the text, EOS; loss on every token.
func (e *Encoder) Text(text string) (Example, error) {
	if text == "" {
		return Example{}, errors.New(`"text" is empty`)
	}
	ids, err := e.tok.Encode(text, true)
	if err != nil {
		return Example{}, err
	}
	mask := make([]bool, len(ids))
	for i := range mask {
		mask[i] = true
	}
	return e.finishMasked(ids, mask, true)
}

// PromptCompletion encodes prompt+completion as one text, with loss on the completion's tokens
// only. The boundary is the length of the prompt's own encoding; where BPE merges a token across
// the boundary, that token goes to the completion (it holds completion characters).
func (e *Encoder) PromptCompletion(prompt, completion string) (Example, error) {
	if completion == "" {
		return Example{}, errors.New(`"completion" is empty`)
	}
	ids, err := e.tok.Encode(prompt+completion, true)
	if err != nil {
		return Example{}, err
	}
	pre, err := e.tok.Encode(prompt, true)
	if err != nil {
		return Example{}, err
	}
	// The prompt's encoding ends with the post-processor's suffix (if any), which the joined text
	// has only at its end.
	if len(e.suffix) > 0 && len(pre) >= len(e.suffix) && slices.Equal(pre[len(pre)-len(e.suffix):], e.suffix) {
		pre = pre[:len(pre)-len(e.suffix)]
	}
	start := commonPrefix(ids, pre)
	mask := make([]bool, len(ids))
	for i := start; i < len(ids); i++ {
		mask[i] = true
	}
	return e.finishMasked(ids, mask, true)
}

// Messages renders a conversation with the tokenizer's chat template and puts loss on the
// assistant turns only. Each assistant span is found by rendering the conversation up to that
// turn (with the generation prompt: where the assistant's text starts) and up to its end, so the
// span is exactly the template's text for the turn, end-of-turn marker included (<|im_end|>,
// </s>, <|eot_id|>: the model must learn to emit it). The template must render each prefix of the
// conversation as a prefix of the whole; one that rewrites earlier turns is reported as an error.
// The template writes BOS itself where the model wants it, so the text is encoded without the
// tokenizer's specials, as transformers' apply_chat_template(tokenize=True) does.
func (e *Encoder) Messages(msgs []tokenizer.Message) (Example, error) {
	if len(msgs) == 0 {
		return Example{}, errors.New(`"messages" is empty`)
	}
	if !e.tok.HasChatTemplate() {
		return Example{}, errors.New(`"messages" needs a chat template, and the tokenizer has none (set one with --chat-template or use "text"/"prompt"+"completion" data)`)
	}
	full, err := e.tok.ApplyChatTemplate(msgs, false)
	if err != nil {
		return Example{}, err
	}
	ids, err := e.tok.Encode(full, false)
	if err != nil {
		return Example{}, err
	}
	// boundary returns the token index where the rendering of msgs[:n] ends inside ids.
	boundary := func(n int, genPrompt bool) (int, error) {
		text, err := e.tok.ApplyChatTemplate(msgs[:n], genPrompt)
		if err != nil {
			return 0, err
		}
		if len(text) > len(full) || full[:len(text)] != text {
			return 0, fmt.Errorf("chat template is not prefix-stable: the rendering of the first %d messages is not a prefix of the whole conversation", n)
		}
		pre, err := e.tok.Encode(text, false)
		if err != nil {
			return 0, err
		}
		return commonPrefix(ids, pre), nil
	}
	mask := make([]bool, len(ids))
	assistant := false
	for i, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		assistant = true
		start, err := boundary(i, true)
		if err != nil {
			return Example{}, fmt.Errorf("messages[%d]: %w", i, err)
		}
		end := len(ids)
		if i+1 < len(msgs) {
			if end, err = boundary(i+1, false); err != nil {
				return Example{}, fmt.Errorf("messages[%d]: %w", i, err)
			}
		}
		for j := start; j < end; j++ {
			mask[j] = true
		}
	}
	if !assistant {
		return Example{}, errors.New(`"messages" has no assistant turn to train on`)
	}
	// The EOS appended after the conversation carries loss only after an assistant's last turn.
	return e.finishMasked(ids, mask, msgs[len(msgs)-1].Role == "assistant")
}

// InputIDs takes pre-tokenized ids as given, with optional labels of the same length
// (IgnoreIndex allowed): no BOS or EOS is added, as transformers' Trainer, TRL and axolotl treat a
// tokenized dataset. Without labels every token but the first carries loss; with them, label i
// is the target of position i−1 (Hugging Face's shift), so labels[0] carries none. Ids or labels
// outside the vocabulary are an error. It needs no tokenizer.
func (e *Encoder) InputIDs(ids64, labels64 []int64) (Example, error) {
	if len(ids64) == 0 {
		return Example{}, errors.New(`"input_ids" is empty`)
	}
	if labels64 != nil && len(labels64) != len(ids64) {
		return Example{}, fmt.Errorf(`"labels" has %d values for %d input_ids`, len(labels64), len(ids64))
	}
	vocab := int64(e.vocab)
	check := func(what string, i int, v int64) error {
		if v < 0 || v >= vocab {
			return fmt.Errorf("%s[%d] = %d is outside the vocabulary [0, %d)", what, i, v, vocab)
		}
		return nil
	}
	ex := Example{IDs: make([]int32, len(ids64)), Labels: make([]int32, len(ids64))}
	for i, v := range ids64 {
		if err := check("input_ids", i, v); err != nil {
			return Example{}, err
		}
		l := v
		if labels64 != nil {
			if l = labels64[i]; l != IgnoreIndex {
				if err := check("labels", i, l); err != nil {
					return Example{}, err
				}
			}
		}
		if i == 0 {
			l = IgnoreIndex
		}
		ex.IDs[i], ex.Labels[i] = int32(v), int32(l)
	}
	return ex, nil
}

// finishMasked appends EOS (unless the ids already end with it) and builds the labels: ids where
// mask is set, IgnoreIndex elsewhere and at index 0.
func (e *Encoder) finishMasked(ids []int, mask []bool, eosLoss bool) (Example, error) {
	eos := e.tok.EOS()
	if eos < 0 {
		return Example{}, errors.New("the tokenizer has no EOS token")
	}
	if len(ids) == 0 || ids[len(ids)-1] != eos {
		ids = append(ids, eos)
		mask = append(mask, eosLoss)
	}
	ex := Example{IDs: make([]int32, len(ids)), Labels: make([]int32, len(ids))}
	for i, id := range ids {
		ex.IDs[i] = int32(id)
		ex.Labels[i] = IgnoreIndex
		if mask[i] && i > 0 {
			ex.Labels[i] = int32(id)
		}
	}
	return ex, nil
}

func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// LoadJSONL reads and tokenizes a JSONL dataset file. Blank lines are skipped; anything else that
// is not a record of a known shape is an error naming file:line.
func LoadJSONL(path string, tok *tokenizer.Tokenizer) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read dataset: %w", err)
	}
	defer f.Close()
	return ReadJSONL(f, path, tok)
}

// ReadJSONL reads and tokenizes JSONL records from r; name is the file name used in errors.
func ReadJSONL(r io.Reader, name string, tok *tokenizer.Tokenizer) ([]Example, error) {
	enc, err := NewEncoder(tok)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return enc.ReadJSONL(r, name)
}

// LoadDataset reads the JSONL dataset at path for the model in folder dir, whose vocabulary has
// vocab tokens. Data that is all pre-tokenized ("input_ids" lines) is read without a tokenizer,
// so the folder need not have tokenizer.json; any other line loads the folder's tokenizer.
func LoadDataset(path, dir string, vocab int) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read dataset: %w", err)
	}
	defer f.Close()
	pre, err := allPreTokenized(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	enc := NewIDEncoder(vocab)
	if !pre {
		tok, err := tokenizer.Load(dir)
		if err != nil {
			return nil, err
		}
		if enc, err = NewEncoder(tok); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if vocab > 0 {
			enc.vocab = vocab // the model's vocabulary bounds ids, whatever the tokenizer knows
		}
	}
	return enc.ReadJSONL(f, path)
}

// allPreTokenized says whether every record of r is an "input_ids" line. A line that does not
// parse makes it false: the encoding pass reports it with its line number.
func allPreTokenized(r io.Reader) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<30)
	for sc.Scan() {
		raw := bytes.TrimSpace(bytes.TrimPrefix(sc.Bytes(), []byte("\xef\xbb\xbf")))
		if len(raw) == 0 {
			continue
		}
		if shape, err := DetectShape(raw); err != nil || shape != ShapeInputIDs {
			return false, nil
		}
	}
	return true, sc.Err()
}

// ReadJSONL reads and encodes JSONL records from r; name is the file name used in errors.
func (enc *Encoder) ReadJSONL(r io.Reader, name string) ([]Example, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var out []Example
	for n := 1; ; n++ {
		raw, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read %s:%d: %w", name, n, err)
		}
		if n == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a UTF-8 byte-order mark
		}
		if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 {
			ex, lerr := enc.EncodeLine(trimmed)
			if lerr != nil {
				return nil, fmt.Errorf("read %s:%d: %w", name, n, lerr)
			}
			out = append(out, ex)
		}
		if err == io.EOF {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("read %s: the dataset has no examples", name)
	}
	return out, nil
}

// Split divides examples into train and eval sets by a shuffle seeded with seed: evalFrac of them
// (rounded, at least one when evalFrac > 0 and there are two or more examples, and never all) go
// to eval. The same inputs always give the same split. Neither result aliases the other.
func Split(examples []Example, evalFrac float64, seed uint64) (trainSet, evalSet []Example, err error) {
	if evalFrac < 0 || evalFrac >= 1 || evalFrac != evalFrac {
		return nil, nil, fmt.Errorf("split: eval fraction %v is not in [0, 1)", evalFrac)
	}
	n := len(examples)
	nEval := int(evalFrac*float64(n) + 0.5)
	if evalFrac > 0 && nEval == 0 && n >= 2 {
		nEval = 1
	}
	if nEval >= n {
		nEval = n - 1
	}
	if nEval <= 0 {
		return slices.Clone(examples), nil, nil
	}
	perm := permutation(n, seed, 0x5eed)
	evalSet = make([]Example, 0, nEval)
	trainSet = make([]Example, 0, n-nEval)
	for i, p := range perm {
		if i < nEval {
			evalSet = append(evalSet, examples[p])
		} else {
			trainSet = append(trainSet, examples[p])
		}
	}
	return trainSet, evalSet, nil
}
