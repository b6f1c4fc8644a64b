package serve

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// Request is one generation: a prompt (or chat messages rendered with the model's chat template),
// the sampling parameters, and the adapter to apply (nil: the base model).
type Request struct {
	Prompt   string
	Messages []tokenizer.Message
	Sampling Sampling
	Adapter  model.Adapter
}

// Result is what a generation produced.
type Result struct {
	Text             string  `json:"text"`
	Tokens           int     `json:"tokens"`
	PromptTokens     int     `json:"prompt_tokens"`
	FinishReason     string  `json:"finish_reason"` // "stop" (EOS or a stop string) or "length"
	TimeToFirstToken float64 `json:"time_to_first_token_s"`
	TokensPerS       float64 `json:"tokens_per_s"`
}

// Generator decodes with one model and its tokenizer.
type Generator struct {
	Model *model.Model
	Tok   *tokenizer.Tokenizer
	// Device, if set, is held around each decoding step, so that concurrent requests share the
	// device token by token.
	Device sync.Locker
}

// PromptIDs tokenizes a request's prompt: the chat template for messages, the text otherwise (an
// empty prompt starts from BOS alone).
func (g *Generator) PromptIDs(r Request) ([]int32, error) {
	text := r.Prompt
	special := true
	if len(r.Messages) > 0 {
		var err error
		if text, err = g.Tok.ApplyChatTemplate(r.Messages, true); err != nil {
			return nil, err
		}
		special = false // the template writes BOS itself
	}
	ids, err := g.Tok.Encode(text, special)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		if bos := g.Tok.BOS(); bos >= 0 {
			ids = []int{bos}
		} else {
			return nil, fmt.Errorf("empty prompt and the tokenizer has no BOS token")
		}
	}
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out, nil
}

// Generate runs a request to completion. onText, if not nil, receives the text as it is produced
// (whole UTF-8 characters, stop strings held back); an error from it stops generation.
func (g *Generator) Generate(ctx context.Context, r Request, onText func(string) error) (Result, error) {
	if err := r.Sampling.Validate(); err != nil {
		return Result{}, err
	}
	prompt, err := g.PromptIDs(r)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	maxLen := len(prompt) + r.Sampling.MaxTokens
	if limit := g.Model.Cfg.MaxPositionEmbeddings; limit > 0 && len(prompt) >= limit {
		return Result{}, fmt.Errorf("generate: the prompt has %d tokens, the model's context is %d", len(prompt), limit)
	} else if limit > 0 && maxLen > limit {
		maxLen = limit
	}
	cache, err := g.Model.NewCache(maxLen)
	if err != nil {
		return Result{}, err
	}
	defer cache.Release()

	promptIDs := make([]int, len(prompt))
	for i, id := range prompt {
		promptIDs[i] = int(id)
	}
	head, err := g.Tok.Decode(promptIDs, true)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	start := time.Now()
	res := Result{PromptTokens: len(prompt), FinishReason: "length"}
	sampler := NewSampler(r.Sampling)
	seen := append([]int32(nil), prompt...)
	var gen []int
	sent := 0 // bytes of text already handed to onText
	feed := prompt
	vocab := g.Model.Cfg.VocabSize
	var firstAt time.Time
	for len(gen) < r.Sampling.MaxTokens && cache.Len+len(feed) <= maxLen {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if g.Device != nil {
			g.Device.Lock()
		}
		logits, err := g.Model.Step(cache, feed, r.Adapter)
		if g.Device != nil {
			g.Device.Unlock()
		}
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		next := sampler.Next(logits[len(logits)-vocab:], seen)
		if firstAt.IsZero() {
			firstAt = time.Now()
			res.TimeToFirstToken = firstAt.Sub(start).Seconds()
		}
		if int(next) == g.Tok.EOS() {
			res.FinishReason = "stop"
			break
		}
		gen = append(gen, int(next))
		seen = append(seen, next)
		feed = []int32{next}
		text, err := g.continuation(promptIDs, head, gen)
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		if cut, ok := firstStop(text, r.Sampling.Stop); ok {
			text = text[:cut]
			res.FinishReason = "stop"
		}
		res.Text = text
		// Hand over what can no longer change: whole characters, and nothing that could be the
		// start of a stop string.
		ready := len(text)
		if res.FinishReason != "stop" {
			ready = stable(text, r.Sampling.Stop)
		}
		if onText != nil && ready > sent {
			if err := onText(text[sent:ready]); err != nil {
				return res, err
			}
			sent = ready
		}
		if res.FinishReason == "stop" {
			break
		}
	}
	if onText != nil && len(res.Text) > sent {
		if err := onText(res.Text[sent:]); err != nil {
			return res, err
		}
	}
	res.Tokens = len(gen)
	if el := time.Since(firstAt).Seconds(); !firstAt.IsZero() && el > 0 && len(gen) > 1 {
		res.TokensPerS = float64(len(gen)-1) / el
	}
	return res, nil
}

// continuation decodes the generated tokens as they read after the prompt: decoders such as
// SentencePiece's drop the leading space of a text, so the generated ids are decoded together
// with the prompt and the prompt's own text is cut off.
// head is the decoded prompt.
func (g *Generator) continuation(prompt []int, head string, gen []int) (string, error) {
	full, err := g.Tok.Decode(append(prompt[:len(prompt):len(prompt)], gen...), true)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(full, head) {
		return full[len(head):], nil
	}
	return g.Tok.Decode(gen, true)
}

// firstStop returns where the earliest stop string starts in text.
func firstStop(text string, stops []string) (int, bool) {
	cut, found := len(text), false
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && i < cut {
			cut, found = i, true
		}
	}
	return cut, found
}

// stable is the length of the prefix of text that is final: it ends on a whole UTF-8 character
// and leaves out any tail that a stop string could still grow from.
func stable(text string, stops []string) int {
	n := len(text)
	// Byte-fallback tokens arrive one byte at a time: a partial character decodes as U+FFFD (or
	// as raw bytes) until its last byte comes, so a trailing one is not final.
	for n > 0 {
		r, size := utf8.DecodeLastRuneInString(text[:n])
		if r != utf8.RuneError {
			break
		}
		n -= size
	}
	for _, s := range stops {
		for k := min(len(s)-1, n); k > 0; k-- {
			if strings.HasSuffix(text[:n], s[:k]) {
				n -= k
				break
			}
		}
	}
	return n
}
