package serve

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
)

// The serving loop: requests enter as jobs, a goroutine runs the steps while there are any.

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
	// first and last are when the first and the last of the produced tokens were produced.
	first, last time.Time
	produced    int
	finish      string // "stop" or "length" once ended
	err         error
	ended       bool
	ready       chan struct{} // signalled (cap 1) when tokens or the end arrive
	cancel      atomic.Bool   // set by the reader: a stop string ended it
}

func (j *job) push(tok int32, lp *TokenLogprob, finish string, err error) {
	j.mu.Lock()
	if tok >= 0 {
		j.tokens = append(j.tokens, tok)
		// When tokens are produced, not when the reader gets them (it may take several at once).
		j.last = time.Now()
		j.produced++
		if j.first.IsZero() {
			j.first = j.last
		}
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

// timing returns how many tokens were produced, and when the first and the last were.
func (j *job) timing() (int, time.Time, time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.produced, j.first, j.last
}

// take returns the tokens (and log-probabilities) not read yet and whether the job has ended.
func (j *job) take() ([]int32, []TokenLogprob, bool, string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	t, lp := j.tokens, j.lps
	j.tokens, j.lps = nil, nil
	return t, lp, j.ended, j.finish, j.err
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
			return ErrAdapterUnloaded
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
	if len(g.slots) != g.Slots {
		g.slots = make([]slotState, g.Slots)
	}
	t := &turns{g: g, cache: g.cache}
	for _, st := range g.slots {
		t.clock = max(t.clock, st.used)
	}
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
		t.step(admitted)
	}
}

// step runs a turn's prefill and decode. A panic in them (a bug, a device fault) fails the
// requests holding a slot, whose cached keys and values are now unknown, and the loop goes on.
func (t *turns) step(admitted []*job) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		// Counted before the requests hear of it, so that whoever sees a failed request sees the count.
		t.g.count(func(s *Stats) { s.Panics++ })
		err := fmt.Errorf("internal error in the generation loop: %v", p)
		for _, j := range t.active {
			j.mu.Lock()
			ended := j.ended
			j.mu.Unlock()
			if !ended { // an ended job's slot is free already
				t.end(j, "", err)
			}
		}
		t.active = nil
		for i := range t.g.slots {
			t.g.slots[i] = slotState{}
		}
	}()
	t.prefill(admitted)
	t.decode()
}

// turns is the loop's state: the requests holding a slot (prefilling or decoding) and the free
// slots.
type turns struct {
	g      *Generator
	cache  *model.Cache
	active []*job
	free   []int
	clock  uint64
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
		t.take(j)
		t.active = append(t.active, j)
		admitted = append(admitted, j)
	}
	return admitted
}

// slotState is what a slot of the KV cache holds: the keys and values of tokens (the first
// positions, computed with adapter), and when it was last used. A finished request leaves its
// tokens there, so that a request that repeats them (the next turn of a chat) skips them.
type slotState struct {
	tokens  []int32
	adapter model.Adapter
	used    uint64
}

// take gives job j the free slot whose cached tokens share the longest prefix with its prompt
// (with the same adapter), else the least recently used one, and starts j after that prefix.
// g.mu is held.
func (t *turns) take(j *job) {
	g := t.g
	best, bestLen := 0, -1
	for i, s := range t.free {
		st := &g.slots[s]
		n := 0
		if !g.NoPrefixReuse && st.adapter == j.adapter {
			for n < len(st.tokens) && n < len(j.prompt)-1 && st.tokens[n] == j.prompt[n] {
				n++
			}
		}
		if n > bestLen || (n == bestLen && st.used < g.slots[t.free[best]].used) {
			best, bestLen = i, n
		}
	}
	j.slot = t.free[best]
	t.free = append(t.free[:best], t.free[best+1:]...)
	j.pos = bestLen // at least the prompt's last token is fed: its logits give the first token
	t.clock++
	g.slots[j.slot] = slotState{tokens: j.prompt[:j.pos], adapter: j.adapter, used: t.clock}
	g.stats.ReusedTokens += j.pos // g.mu is held (admit)
}

// cached records that j's slot holds the keys and values of its first j.pos tokens.
func (t *turns) cached(j *job) {
	st := &t.g.slots[j.slot]
	st.tokens = j.seen[:j.pos]
	t.clock++
	st.used = t.clock
}

// prefill runs one prefill step: the admitted short prompts together, or else the next chunk of
// a long prompt. A job whose prompt is in samples its first token.
func (t *turns) prefill(admitted []*job) {
	var jobs []*job
	var seqs []model.Seq
	for _, j := range admitted {
		if len(j.prompt)-j.pos <= t.g.PrefillChunk {
			jobs = append(jobs, j)
			seqs = append(seqs, model.Seq{Slot: j.slot, Pos: j.pos, IDs: j.prompt[j.pos:], Adapter: j.adapter})
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
			t.g.slots[j.slot] = slotState{} // what the failed step wrote is unknown
			t.end(j, "", err)
			ended[j] = true
			continue
		}
		t.cached(j)
		switch {
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
	// Requests that sample from candidates get them from the device: k a row (and the row's mass
	// when k > 1), not the vocabulary.
	k := t.g.deviceK(jobs)
	var logits []float32
	var err error
	stride := 2 * k
	switch {
	case k > 1:
		stride += 2
		ctl := make([]int32, 0, len(jobs)*engine.SampleCtlWords)
		for _, j := range jobs {
			c := j.sampler.Ctl()
			ctl = append(ctl, c[:]...)
		}
		logits, err = t.cache.StepSample(seqs, k, ctl)
	case k == 1:
		logits, err = t.cache.StepTopK(seqs, k)
	default:
		logits, err = t.cache.Step(seqs)
	}
	t.g.count(func(s *Stats) {
		s.DecodeSteps++
		s.DecodeTokens += len(seqs)
		s.MaxBatch = max(s.MaxBatch, len(seqs))
	})
	vocab := t.g.Model.Cfg.VocabSize
	ended := map[*job]bool{}
	// Every job samples from its own logits at once: with a large vocabulary, sampling one after
	// another would cost as much as a step.
	toks := make([]int32, len(jobs))
	lps := make([]*TokenLogprob, len(jobs))
	if err == nil && k > 0 {
		var again []int
		for i, j := range jobs {
			row := logits[i*stride : (i+1)*stride]
			mass := 0.0
			if k > 1 {
				mass = float64(row[2*k])
			}
			var ok bool
			if toks[i], ok = j.sampler.NextCandidate(row[:2*k], mass); !ok {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			// Rare: the candidates did not settle some draws (a top-p nucleus past them, a
			// near tie). The same step again, rows read back whole: it writes the same keys and
			// values at the same positions, so running it twice changes nothing else.
			var full []float32
			if full, err = t.cache.Step(seqs); err == nil {
				for _, i := range again {
					toks[i], lps[i] = t.g.sample(jobs[i], full[i*vocab:(i+1)*vocab])
				}
			}
			t.g.count(func(s *Stats) { s.SampleFallbacks += len(again) })
		}
	} else if err == nil {
		var wg sync.WaitGroup
		var panicked atomic.Value
		for i, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if p := recover(); p != nil {
						panicked.Store(fmt.Sprint(p))
					}
				}()
				toks[i], lps[i] = t.g.sample(j, logits[i*vocab:(i+1)*vocab])
			}()
		}
		wg.Wait()
		if p := panicked.Load(); p != nil {
			panic(p) // to step, which fails the requests
		}
	}
	for i, j := range jobs {
		j.pos++
		if err != nil {
			t.g.slots[j.slot] = slotState{}
			t.end(j, "", err)
			ended[j] = true
			continue
		}
		t.cached(j)
		ended[j] = !t.g.hand(j, toks[i], lps[i], t.end)
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
	tok, lp := g.sample(j, logits)
	return g.hand(j, tok, lp, end)
}

// sample picks the job's next token from its logits (and its log-probabilities if asked). It
// touches only the job's own state, so several jobs sample at once.
func (g *Generator) sample(j *job, logits []float32) (int32, *TokenLogprob) {
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
	if raw == nil {
		return tok, nil
	}
	l, ids, lps := logprobs(raw, tok, j.sp.TopLogprobs)
	lp := &TokenLogprob{ID: tok, Logprob: l}
	for i, id := range ids {
		lp.Top = append(lp.Top, TokenLogprob{ID: id, Logprob: lps[i]})
	}
	return tok, lp
}

// hand gives the job its sampled token, or ends it (an end-of-turn token, the length); it
// reports whether the job goes on.
func (g *Generator) hand(j *job, tok int32, lp *TokenLogprob, end func(*job, string, error)) bool {
	generated := len(j.seen) - len(j.prompt)
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
