package serve

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	// Logprobs has one entry a generated token when the request asked for them.
	Logprobs []TokenLogprob `json:"logprobs,omitempty"`
}

// Generator decodes with one model and its tokenizer, for any number of concurrent requests:
// continuous batching. A loop owns the device and a KV cache of Slots sequences; each turn it
// prefills the prompt of one waiting request into a free slot, then decodes one token of every
// running request in a single step, each request with its own adapter (see model.Cache.Step).
// Requests beyond Slots wait for a slot. The loop runs only while there is work; Close frees the
// cache.
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

	mu      sync.Mutex
	waiting []*job
	running bool
	stopped chan struct{} // closed when the running loop exits
	cache   *model.Cache
	closed  bool
	stats   Stats
	// stop holds the ids that end a generation (see model.StopIDs), once read.
	stop    map[int32]bool
	stopErr error
	// retiring adapters are freed once no request uses them; gone ones were.
	retiring []retiree
	gone     map[model.Adapter]bool
}

type retiree struct {
	a       model.Adapter
	release bool
}

// Retire frees adapter a, which no new request will name (unloaded, or replaced by a hot swap):
// once no running or waiting request uses it, its copy leaves the cache's pool and, with release,
// its parameters are freed (its Release method). Requests naming it after Retire fail.
func (g *Generator) Retire(a model.Adapter, release bool) {
	if a == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.retiring = append(g.retiring, retiree{a, release})
	if !g.running {
		g.sweep(nil)
	}
}

// sweep frees the retiring adapters that no job uses; g.mu is held and no step is running.
func (g *Generator) sweep(active []*job) {
	uses := func(a model.Adapter, jobs []*job) bool {
		for _, j := range jobs {
			if j.adapter == a {
				return true
			}
		}
		return false
	}
	kept := g.retiring[:0]
	for _, r := range g.retiring {
		if uses(r.a, active) || uses(r.a, g.waiting) {
			kept = append(kept, r)
			continue
		}
		if g.cache != nil {
			g.cache.Evict(r.a)
		}
		if rel, ok := r.a.(interface{ Release() }); ok && r.release {
			rel.Release()
		}
		if g.gone == nil {
			g.gone = map[model.Adapter]bool{}
		}
		g.gone[r.a] = true
		g.stats.Retired++
	}
	g.retiring = kept
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
}

// Stats returns the generator's counters.
func (g *Generator) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

// job is one request inside the loop: the loop appends tokens and ends it; the request's own
// goroutine reads them.
type job struct {
	ctx     context.Context
	prompt  []int32
	adapter model.Adapter
	sp      Sampling
	sampler *Sampler
	seen    []int32
	slot    int
	pos     int // tokens cached

	mu     sync.Mutex
	tokens []int32
	lps    []TokenLogprob // with tokens, when the request asked for log-probabilities
	finish string         // "stop" or "length" once ended
	err    error
	ended  bool
	ready  chan struct{} // signalled (cap 1) when tokens or the end arrive
	cancel atomic.Bool   // set by the reader: a stop string ended it
}

func (j *job) push(tok int32, lp *TokenLogprob, finish string, err error) {
	j.mu.Lock()
	if tok >= 0 {
		j.tokens = append(j.tokens, tok)
	}
	if lp != nil {
		j.lps = append(j.lps, *lp)
	}
	if finish != "" || err != nil {
		j.finish, j.err, j.ended = finish, err, true
	}
	j.mu.Unlock()
	select {
	case j.ready <- struct{}{}:
	default:
	}
}

// take returns the tokens (and log-probabilities) not read yet and whether the job has ended.
func (j *job) take() ([]int32, []TokenLogprob, bool, string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	t, lp := j.tokens, j.lps
	j.tokens, j.lps = nil, nil
	return t, lp, j.ended, j.finish, j.err
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
	}
}

func (g *Generator) submit(j *job) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("the generator is closed")
	}
	if j.adapter != nil {
		retiring := g.gone[j.adapter]
		for _, r := range g.retiring {
			retiring = retiring || r.a == j.adapter
		}
		if retiring {
			return fmt.Errorf("the adapter was unloaded")
		}
	}
	g.defaults()
	if g.stopErr != nil {
		return g.stopErr
	}
	g.waiting = append(g.waiting, j)
	if !g.running {
		g.running = true
		g.stopped = make(chan struct{})
		go g.loop(g.stopped)
	}
	return nil
}

// prefillTokens bounds the padded tokens of a prefill step of several prompts.
const prefillTokens = 2048

// loop runs steps while requests run or wait, then exits.
func (g *Generator) loop(stopped chan struct{}) {
	defer close(stopped)
	g.mu.Lock()
	if g.cache == nil {
		c, err := g.Model.NewCache(g.Slots, g.Context)
		if err != nil {
			for _, j := range g.waiting {
				j.push(-1, nil, "", err)
			}
			g.waiting, g.running = nil, false
			g.mu.Unlock()
			return
		}
		g.cache = c
	}
	t := &turns{g: g, cache: g.cache}
	for s := g.Slots - 1; s >= 0; s-- {
		t.free = append(t.free, s)
	}
	g.mu.Unlock()
	for {
		// Requests that ended on their side (a stop string, a closed connection) leave.
		t.keep(func(j *job) bool {
			switch {
			case j.cancel.Load():
				t.end(j, "stop", nil)
			case j.ctx.Err() != nil:
				t.end(j, "", j.ctx.Err())
			default:
				return true
			}
			return false
		})
		g.mu.Lock()
		if len(g.retiring) > 0 {
			g.sweep(t.active)
		}
		if len(t.active) == 0 && len(g.waiting) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		admitted := t.admit()
		g.mu.Unlock()
		t.prefill(admitted)
		t.decode()
	}
}

// turns is the loop's state: the requests holding a slot (prefilling or decoding) and the free
// slots.
type turns struct {
	g      *Generator
	cache  *model.Cache
	active []*job
	free   []int
}

// end ends a job and frees its slot.
func (t *turns) end(j *job, finish string, err error) {
	j.push(-1, nil, finish, err)
	t.free = append(t.free, j.slot)
}

// keep keeps the active jobs for which f is true (f ends the others).
func (t *turns) keep(f func(*job) bool) {
	kept := t.active[:0]
	for _, j := range t.active {
		if f(j) {
			kept = append(kept, j)
		}
	}
	t.active = kept
}

// admit takes waiting requests into free slots: the first waiting prompt, with the others of its
// length bucket up to a token budget, or a prompt longer than a chunk alone. g.mu is held.
func (t *turns) admit() []*job {
	g := t.g
	if len(t.free) == 0 || len(g.waiting) == 0 {
		return nil
	}
	first := len(g.waiting[0].prompt)
	width := model.Bucket(first)
	var batch, rest []*job
	for _, j := range g.waiting {
		fits := len(batch) == 0 || (first <= g.PrefillChunk && model.Bucket(len(j.prompt)) == width && (len(batch)+1)*width <= prefillTokens)
		if len(batch) < len(t.free) && fits {
			batch = append(batch, j)
		} else {
			rest = append(rest, j)
		}
	}
	g.waiting = rest
	var admitted []*job
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil || j.cancel.Load() {
			j.push(-1, nil, "stop", err) // its reader has gone
			continue
		}
		j.slot, t.free = t.free[len(t.free)-1], t.free[:len(t.free)-1]
		t.active = append(t.active, j)
		admitted = append(admitted, j)
	}
	return admitted
}

// prefill runs one prefill step: the admitted short prompts together, or else the next chunk of
// a long prompt. A job whose prompt is in samples its first token.
func (t *turns) prefill(admitted []*job) {
	var jobs []*job
	var seqs []model.Seq
	for _, j := range admitted {
		if len(j.prompt) <= t.g.PrefillChunk {
			jobs = append(jobs, j)
			seqs = append(seqs, model.Seq{Slot: j.slot, IDs: j.prompt, Adapter: j.adapter})
		}
	}
	if len(jobs) == 0 {
		for _, j := range t.active {
			if n := min(len(j.prompt)-j.pos, t.g.PrefillChunk); n > 0 {
				jobs = []*job{j}
				seqs = []model.Seq{{Slot: j.slot, Pos: j.pos, IDs: j.prompt[j.pos : j.pos+n], Adapter: j.adapter}}
				break
			}
		}
	}
	if len(jobs) == 0 {
		return
	}
	logits, err := t.cache.Step(seqs)
	done := 0
	vocab := t.g.Model.Cfg.VocabSize
	ended := map[*job]bool{}
	for i, j := range jobs {
		j.pos += len(seqs[i].IDs)
		switch {
		case err != nil:
			t.end(j, "", err)
			ended[j] = true
		case j.pos == len(j.prompt):
			done++
			ended[j] = !t.g.emit(j, logits[i*vocab:(i+1)*vocab], t.end)
		}
	}
	t.g.count(func(s *Stats) {
		s.Prefills += done
		s.PrefillSteps++
	})
	t.keep(func(j *job) bool { return !ended[j] })
}

// decode runs one decode step over every request whose prompt is in, each feeding its last
// sampled token.
func (t *turns) decode() {
	var jobs []*job
	var seqs []model.Seq
	for _, j := range t.active {
		if j.pos >= len(j.prompt) {
			jobs = append(jobs, j)
			seqs = append(seqs, model.Seq{Slot: j.slot, Pos: j.pos, IDs: j.seen[len(j.seen)-1:], Adapter: j.adapter})
		}
	}
	if len(jobs) == 0 {
		return
	}
	logits, err := t.cache.Step(seqs)
	t.g.count(func(s *Stats) {
		s.DecodeSteps++
		s.DecodeTokens += len(seqs)
		s.MaxBatch = max(s.MaxBatch, len(seqs))
	})
	vocab := t.g.Model.Cfg.VocabSize
	ended := map[*job]bool{}
	for i, j := range jobs {
		j.pos++
		if err != nil {
			t.end(j, "", err)
			ended[j] = true
		} else {
			ended[j] = !t.g.emit(j, logits[i*vocab:(i+1)*vocab], t.end)
		}
	}
	t.keep(func(j *job) bool { return !ended[j] })
}

func (g *Generator) count(f func(*Stats)) {
	g.mu.Lock()
	f(&g.stats)
	g.mu.Unlock()
}

// emit samples the job's next token from its logits and hands it over; it reports whether the
// job goes on.
func (g *Generator) emit(j *job, logits []float32, end func(*job, string, error)) bool {
	// Checkpoints often pad the output layer past the tokenizer's vocabulary (to a multiple of
	// 64 or 128): those rows have no text and are never sampled.
	if n := g.Tok.VocabSize(); n > 0 && n < len(logits) {
		logits = logits[:n]
	}
	var raw []float32
	if j.sp.Logprobs {
		raw = append([]float32(nil), logits...) // the sampler modifies logits
	}
	tok := j.sampler.Next(logits, j.seen, len(j.seen)-len(j.prompt))
	generated := len(j.seen) - len(j.prompt)
	var lp *TokenLogprob
	if raw != nil {
		l, ids, lps := logprobs(raw, tok, j.sp.TopLogprobs)
		lp = &TokenLogprob{ID: tok, Logprob: l}
		for i, id := range ids {
			lp.Top = append(lp.Top, TokenLogprob{ID: id, Logprob: lps[i]})
		}
	}
	switch {
	case g.stop[tok]:
		end(j, "stop", nil)
		return false
	case generated+1 >= j.sp.MaxTokens || j.pos >= g.Context:
		// The last token: nothing more fits the request or the context.
		j.seen = append(j.seen, tok)
		j.push(tok, lp, "", nil)
		end(j, "length", nil)
		return false
	}
	j.seen = append(j.seen, tok)
	j.push(tok, lp, "", nil)
	return true
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
	var firstAt time.Time
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
			if firstAt.IsZero() {
				firstAt = time.Now()
				res.TimeToFirstToken = firstAt.Sub(start).Seconds()
			}
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
	if el := time.Since(firstAt).Seconds(); !firstAt.IsZero() && el > 0 && len(gen) > 1 {
		res.TokensPerS = float64(len(gen)-1) / el
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
