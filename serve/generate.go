package serve

import (
	"context"
	"errors"
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
	Prompt string
	// IDs, if set, is the prompt as token ids (Prompt and Messages are not read).
	IDs      []int32
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
	// Logprobs has one entry a generated token when the request asked for them.
	Logprobs []TokenLogprob `json:"logprobs,omitempty"`
}

// Generator decodes with one model and its tokenizer, for any number of concurrent requests:
// continuous batching (loop.go). A loop owns the device and a KV cache of Slots sequences; each
// turn it prefills waiting prompts into free slots, then decodes one token of every running
// request in a single step, each request with its own adapter (see model.Cache.Step). Requests
// beyond Slots wait for a slot. The loop runs only while there is work; Close frees the cache.
type Generator struct {
	Model *model.Model
	Tok   *tokenizer.Tokenizer
	// Slots is the most requests decoded together (default 4).
	Slots int
	// Context is the most tokens, prompt and completion, a request holds (default: the model's
	// context, at most 2048). The cache takes Slots·Context positions.
	Context int
	// PrefillChunk is the most prompt tokens a step prefills for one request (default 512): a
	// longer prompt takes one chunk a turn, so that it neither stalls the running requests nor
	// needs the activations of its whole length at once.
	PrefillChunk int
	// NoPrefixReuse turns off reusing the keys and values a finished request left in its slot
	// for a request whose prompt starts with the same tokens (the next turn of a chat). Turn it
	// off if the model's or an adapter's weights change in place while serving (training).
	NoPrefixReuse bool
	// HostSampling turns off sampling on the device: every decode step then reads the whole
	// logits row back (see Sampler.Candidates for the requests that sample on the device).
	HostSampling bool

	mu      sync.Mutex
	waiting []*job
	running bool
	stopped chan struct{} // closed when the running loop exits
	cache   *model.Cache
	slots   []slotState // what each slot of the cache holds; the loop's alone
	closed  bool
	stats   Stats
	// stop holds the ids that end a generation (see model.StopIDs), once read.
	stop    map[int32]bool
	stopErr error
	// retiring adapters are freed once no request uses them; gone ones were.
	retiring []retiree
	gone     map[model.Adapter]bool
}

// Stats counts a generator's work since it was made.
type Stats struct {
	// Prefills is the number of prompts prefilled, in PrefillSteps steps; DecodeSteps is the
	// number of decode steps and DecodeTokens the tokens they produced (more than the steps when
	// requests share them).
	Prefills, PrefillSteps, DecodeSteps, DecodeTokens int
	// MaxBatch is the most requests decoded in one step.
	MaxBatch int
	// Retired is the number of retired adapters freed (see Retire).
	Retired int
	// ReusedTokens counts prompt tokens whose keys and values were already in the slot a request
	// took (not prefilled again).
	ReusedTokens int
	// Panics counts panics in the loop's steps; each failed the requests holding a slot.
	Panics int
	// SampleFallbacks counts the tokens sampled on the device whose candidates did not settle
	// the draw (Sampler.NextCandidate), drawn from the step's whole row instead.
	SampleFallbacks int
}

// ErrAdapterUnloaded is the error of a request whose adapter was unloaded before it started.
var ErrAdapterUnloaded = errors.New("the adapter was unloaded")

// Stats returns the generator's counters.
func (g *Generator) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

func (g *Generator) defaults() {
	if g.Slots <= 0 {
		g.Slots = 4
	}
	if g.Context <= 0 {
		g.Context = 2048
	}
	if g.PrefillChunk <= 0 {
		g.PrefillChunk = 512
	}
	if g.stop == nil && g.stopErr == nil {
		g.stop = map[int32]bool{}
		if eos := g.Tok.EOS(); eos >= 0 {
			g.stop[int32(eos)] = true
		}
		ids, err := model.StopIDs(g.Model.Dir, g.Model.Cfg)
		if err != nil {
			g.stopErr = fmt.Errorf("stop tokens: %w", err)
		}
		for _, id := range ids {
			g.stop[int32(id)] = true
		}
	}
	if limit := g.Model.Cfg.MaxPositionEmbeddings; limit > 0 && limit < g.Context {
		g.Context = limit
	}
}

// Limit is the most tokens, prompt and completion, a request holds.
func (g *Generator) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.defaults()
	return g.Context
}

// Close waits for the running requests to end, then frees the KV cache; later requests fail.
func (g *Generator) Close() {
	g.mu.Lock()
	g.closed = true
	running, stopped := g.running, g.stopped
	g.mu.Unlock()
	if running {
		<-stopped
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cache != nil {
		g.cache.Release()
		g.cache = nil
		g.slots = nil
	}
}

// PromptIDs tokenizes a request's prompt: the chat template for messages, the text otherwise (an
// empty prompt starts from BOS alone).
func (g *Generator) PromptIDs(r Request) ([]int32, error) {
	if r.IDs != nil {
		vocab := min(g.Tok.VocabSize(), g.Model.Cfg.VocabSize)
		for i, id := range r.IDs {
			if id < 0 || int(id) >= vocab {
				return nil, fmt.Errorf("token id %d at position %d is not in the vocabulary (size %d)", id, i, vocab)
			}
		}
		if len(r.IDs) == 0 {
			return nil, fmt.Errorf("the prompt has no token ids")
		}
		return append([]int32(nil), r.IDs...), nil
	}
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

// Chunk is a piece of a generation as it is produced: text, and with Sampling.Logprobs the
// log-probabilities of the tokens generated since the previous chunk.
type Chunk struct {
	Text     string
	Logprobs []TokenLogprob
}

// Generate runs a request to completion. onText, if not nil, receives the text as it is produced
// (whole UTF-8 characters, stop strings held back); an error from it stops generation.
func (g *Generator) Generate(ctx context.Context, r Request, onText func(string) error) (Result, error) {
	if onText == nil {
		return g.Stream(ctx, r, nil)
	}
	return g.Stream(ctx, r, func(c Chunk) error {
		if c.Text == "" {
			return nil
		}
		return onText(c.Text)
	})
}

// Stream is Generate handing over chunks: the text as Generate does, with the log-probabilities
// of the tokens behind it when the request asks for them.
func (g *Generator) Stream(ctx context.Context, r Request, onChunk func(Chunk) error) (Result, error) {
	if err := r.Sampling.Validate(); err != nil {
		return Result{}, err
	}
	prompt, err := g.PromptIDs(r)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	if limit := g.Limit(); len(prompt) >= limit {
		return Result{}, fmt.Errorf("generate: the prompt has %d tokens, the context holds %d", len(prompt), limit)
	}
	promptIDs := make([]int, len(prompt))
	for i, id := range prompt {
		promptIDs[i] = int(id)
	}
	head, err := g.Tok.Decode(promptIDs, true)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	start := time.Now()
	j := &job{ctx: ctx, prompt: prompt, adapter: r.Adapter, sp: r.Sampling, sampler: NewSampler(r.Sampling),
		seen: append([]int32(nil), prompt...), ready: make(chan struct{}, 1)}
	if err := g.submit(j); err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	// On an early return the loop drops the request at its next turn.
	defer j.cancel.Store(true)
	res := Result{PromptTokens: len(prompt), FinishReason: "length"}
	var gen []int
	sent := 0                  // bytes of text already handed over
	var pending []TokenLogprob // log-probabilities of the tokens behind text not handed over yet
	for stopped := false; !stopped; {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-j.ready:
		}
		toks, lps, ended, finish, err := j.take()
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		if ended {
			res.FinishReason = finish
		}
		for i, t := range toks {
			gen = append(gen, int(t))
			if lps != nil {
				prev := prompt[len(prompt)-1]
				if len(gen) > 1 {
					prev = int32(gen[len(gen)-2])
				}
				lp := lps[i]
				if lp.Token, err = g.piece(prev, lp.ID); err != nil {
					return res, fmt.Errorf("generate: %w", err)
				}
				for k := range lp.Top {
					if lp.Top[k].Token, err = g.piece(prev, lp.Top[k].ID); err != nil {
						return res, fmt.Errorf("generate: %w", err)
					}
				}
				res.Logprobs = append(res.Logprobs, lp)
				pending = append(pending, lp)
			}
			text, err := g.continuation(promptIDs, head, gen)
			if err != nil {
				return res, fmt.Errorf("generate: %w", err)
			}
			if cut, ok := firstStop(text, r.Sampling.Stop); ok {
				text = text[:cut]
				res.FinishReason = "stop"
				stopped = true
			}
			res.Text = text
			// Hand over what can no longer change: whole characters, and nothing that could be
			// the start of a stop string.
			ready := len(text)
			if !stopped && !(ended && i == len(toks)-1) {
				ready = stable(text, r.Sampling.Stop)
			}
			if onChunk != nil && ready > sent {
				if err := onChunk(Chunk{Text: text[sent:ready], Logprobs: pending}); err != nil {
					return res, err
				}
				sent, pending = ready, nil
			}
			if stopped {
				break
			}
		}
		stopped = stopped || ended
	}
	if onChunk != nil && (len(res.Text) > sent || len(pending) > 0) {
		if err := onChunk(Chunk{Text: res.Text[sent:], Logprobs: pending}); err != nil {
			return res, err
		}
	}
	res.Tokens = len(gen)
	// Timed where tokens are produced: the reader may take several at once.
	if n, first, last := j.timing(); n > 0 {
		res.TimeToFirstToken = first.Sub(start).Seconds()
		if el := last.Sub(first).Seconds(); el > 0 && n > 1 {
			res.TokensPerS = float64(n-1) / el
		}
	}
	return res, nil
}

// piece is the text token id adds after token prev (special tokens included): decoded after its
// predecessor, so that a leading space that decoders drop at the start of a text stays.
func (g *Generator) piece(prev, id int32) (string, error) {
	both, err := g.Tok.Decode([]int{int(prev), int(id)}, false)
	if err != nil {
		return "", err
	}
	head, err := g.Tok.Decode([]int{int(prev)}, false)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(both, head) {
		return both[len(head):], nil
	}
	return g.Tok.Decode([]int{int(id)}, false)
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
