// Package serve generates text from a base model with any number of adapters: continuous batching
// over a KV cache of slots (requests for different adapters share each step), sampling, streaming,
// hot-swapped adapters, and an OpenAI-compatible HTTP server.
package serve

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/lathe-ml/lathe/engine"
)

// Sampling are the decoding parameters of a request, with OpenAI's and transformers' meanings.
type Sampling struct {
	// Temperature divides the logits; 0 means greedy (argmax).
	Temperature float64 `json:"temperature"`
	// TopK keeps the K most likely tokens (0: all).
	TopK int `json:"top_k"`
	// TopP keeps the smallest set of tokens whose probabilities sum to at least P (1: all).
	TopP float64 `json:"top_p"`
	// RepetitionPenalty divides positive logits and multiplies negative ones of tokens already in
	// the sequence, as transformers' RepetitionPenaltyLogitsProcessor (1: none).
	RepetitionPenalty float64 `json:"repetition_penalty"`
	// PresencePenalty and FrequencyPenalty are OpenAI's: logit −= presence·[count > 0] +
	// frequency·count, count being the token's occurrences in the generated text (0: none).
	PresencePenalty  float64 `json:"presence_penalty"`
	FrequencyPenalty float64 `json:"frequency_penalty"`
	// Seed makes sampling reproducible.
	Seed uint64 `json:"seed"`
	// MaxTokens bounds the generated tokens.
	MaxTokens int `json:"max_tokens"`
	// Stop ends generation at the first of these strings (not included in the text).
	Stop []string `json:"stop"`
	// Logprobs returns each generated token's log-probability under the model (before
	// temperature, penalties and truncation), with the TopLogprobs most likely alternatives.
	Logprobs    bool `json:"logprobs"`
	TopLogprobs int  `json:"top_logprobs"`
}

// DefaultSampling is greedy decoding of up to 128 tokens.
func DefaultSampling() Sampling { return Sampling{TopP: 1, RepetitionPenalty: 1, MaxTokens: 128} }

// Validate reports the first parameter out of range.
func (s Sampling) Validate() error {
	switch {
	case s.Temperature < 0 || s.Temperature > 100 || math.IsNaN(s.Temperature):
		return fmt.Errorf("temperature %v is not in [0, 100]", s.Temperature)
	case s.TopK < 0:
		return fmt.Errorf("top_k %d is negative", s.TopK)
	case !(s.TopP > 0 && s.TopP <= 1):
		return fmt.Errorf("top_p %v is not in (0, 1]", s.TopP)
	case !(s.RepetitionPenalty > 0) || s.RepetitionPenalty > 100:
		return fmt.Errorf("repetition_penalty %v is not in (0, 100]", s.RepetitionPenalty)
	case !(s.PresencePenalty >= -2 && s.PresencePenalty <= 2):
		return fmt.Errorf("presence_penalty %v is not in [-2, 2]", s.PresencePenalty)
	case !(s.FrequencyPenalty >= -2 && s.FrequencyPenalty <= 2):
		return fmt.Errorf("frequency_penalty %v is not in [-2, 2]", s.FrequencyPenalty)
	case s.MaxTokens <= 0:
		return fmt.Errorf("max_tokens %d must be positive", s.MaxTokens)
	case s.TopLogprobs < 0 || s.TopLogprobs > 20:
		return fmt.Errorf("top_logprobs %d is not in [0, 20]", s.TopLogprobs)
	case len(s.Stop) > 16:
		return fmt.Errorf("at most 16 stop strings, got %d", len(s.Stop))
	}
	for _, st := range s.Stop {
		if st == "" {
			return fmt.Errorf("stop strings must not be empty")
		}
	}
	return nil
}

// Sampler picks tokens from logits under one request's parameters.
type Sampler struct {
	s   Sampling
	rng *rand.Rand
	// draws counts the tokens drawn: with the seed, it keys each Gumbel-max draw (gumbelKeys).
	draws uint64
	// scratch
	idx   []int
	probs []float64
}

// NewSampler returns a sampler seeded from s.Seed.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{s: s, rng: rand.New(rand.NewPCG(s.Seed, 0x5a3b1e))}
}

// Next returns the next token given the logits of the last position and the tokens so far, seen:
// the prompt then the generated tokens, of which the last `generated` (for the presence and
// frequency penalties, which count only those; the repetition penalty counts all). logits is
// modified.
//
// Temperature alone (no top-k, no top-p) draws by the Gumbel-max trick: the token with the largest
// logit/T + engine.GumbelNoise, the noise keyed by the seed and the draw's number, which a device
// computes as well (NextCandidate). Top-k and top-p draw one uniform number from the seeded stream
// over the kept tokens' weights.
func (p *Sampler) Next(logits []float32, seen []int32, generated int) int32 {
	defer func() { p.draws++ }()
	if p.s.PresencePenalty != 0 || p.s.FrequencyPenalty != 0 {
		count := map[int32]int{}
		for _, t := range seen[len(seen)-min(generated, len(seen)):] {
			count[t]++
		}
		for t, n := range count {
			if t >= 0 && int(t) < len(logits) {
				logits[t] -= float32(p.s.PresencePenalty + p.s.FrequencyPenalty*float64(n))
			}
		}
	}
	if p.s.RepetitionPenalty != 1 && p.s.RepetitionPenalty != 0 {
		done := map[int32]bool{}
		pen := float32(p.s.RepetitionPenalty)
		for _, t := range seen {
			if done[t] || int(t) >= len(logits) || t < 0 {
				continue
			}
			done[t] = true
			if logits[t] > 0 {
				logits[t] /= pen
			} else {
				logits[t] *= pen
			}
		}
	}
	if p.s.Temperature == 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	if p.s.TopK == 0 && p.s.TopP >= 1 {
		return p.gumbelMax(logits)
	}
	// Every token's weight at the temperature, relative to the largest logit.
	mx := float64(logits[0])
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	if cap(p.probs) < len(logits) {
		p.probs = make([]float64, len(logits))
	}
	w := p.probs[:len(logits)]
	z := 0.0
	for i, v := range logits {
		w[i] = math.Exp((float64(v) - mx) / p.s.Temperature)
		z += w[i]
	}
	cand := p.nucleus(logits, w, z)
	total := 0.0
	for _, i := range cand {
		total += w[i]
	}
	r := p.rng.Float64() * total
	for _, i := range cand {
		r -= w[i]
		if r < 0 {
			return int32(i)
		}
	}
	return int32(cand[len(cand)-1])
}

// invTemp is 1/T as the f32 that TopK's sampling control carries: the host and the device scale
// logits by the same number.
func (p *Sampler) invTemp() float64 { return float64(float32(1 / p.s.Temperature)) }

// gumbelKeys are the keys of the current draw's noise: a mix of the seed and the draw's number
// (SplitMix64's finaliser), so that every draw of every seed has its own noise.
func (p *Sampler) gumbelKeys() (uint32, uint32) {
	z := p.s.Seed + (p.draws+1)*0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	z ^= z >> 31
	return uint32(z), uint32(z >> 32)
}

// gumbelScore is token id's Gumbel-max score at the sampler's temperature.
func gumbelScore(v float32, invT float64, k0, k1 uint32, id int) float64 {
	return float64(v)*invT + engine.GumbelNoise(k0, k1, uint32(id))
}

// gumbelNoiseSpan bounds the spread of GumbelNoise (its 23-bit uniform numbers give noise in
// [−2.82, 16.65]): a token whose logit/T lies further below the largest cannot win.
const gumbelNoiseSpan = 19.5

// gumbelMax returns the token with the largest Gumbel score (ties by id), NaNs never: a draw from
// softmax(logits/T). Only tokens within gumbelNoiseSpan of the largest logit/T are scored.
func (p *Sampler) gumbelMax(logits []float32) int32 {
	invT := p.invTemp()
	k0, k1 := p.gumbelKeys()
	mx := math.Inf(-1)
	for _, v := range logits {
		if v == v {
			mx = max(mx, float64(v))
		}
	}
	best, bestS := len(logits)-1, math.Inf(-1)
	for i, v := range logits {
		if !(float64(v) >= mx-gumbelNoiseSpan/invT) || math.IsInf(mx, -1) {
			continue
		}
		if sc := gumbelScore(v, invT, k0, k1, i); sc > bestS {
			best, bestS = i, sc
		}
	}
	return int32(best)
}

// nucleus returns the tokens sampling may pick under top-k and top-p, by descending logit (ties
// by id, for determinism): w are the tokens' weights at the temperature and z their sum. They are
// found only as far as needed: the top k through a heap of k, or, for top-p alone, popped from a
// heap of every token until their mass reaches p.
func (p *Sampler) nucleus(logits []float32, w []float64, z float64) []int {
	p.idx = p.idx[:0]
	if p.s.TopK > 0 {
		p.idx = append(p.idx, topK(logits, p.s.TopK)...)
		z = 0
		for _, i := range p.idx {
			z += w[i]
		}
	} else {
		better := func(a, b int) bool { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b) }
		h := &tokenHeap{better: better, ids: make([]int, len(logits))}
		for i := range h.ids {
			h.ids[i] = i
		}
		h.init()
		mass := 0.0
		for h.Len() > 0 && mass < p.s.TopP {
			i := h.pop()
			p.idx = append(p.idx, i)
			mass += w[i] / z
		}
	}
	// Top-p: the smallest prefix whose mass (among the candidates) reaches P.
	mass := 0.0
	for j, i := range p.idx {
		mass += w[i] / z
		if mass >= p.s.TopP {
			return p.idx[:j+1]
		}
	}
	return p.idx
}

// topK returns the ids of the k largest logits, largest first (ties by id, for determinism),
// through a heap of k: O(V log k), not a sort of the vocabulary.
func topK(logits []float32, k int) []int {
	better := func(a, b int) bool { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b) }
	h := &tokenHeap{better: func(a, b int) bool { return better(b, a) }} // the worst kept on top
	for i := range logits {
		if h.Len() < k {
			h.push(i)
		} else if better(i, h.ids[0]) {
			h.ids[0] = i
			h.down(0)
		}
	}
	sort.Slice(h.ids, func(a, b int) bool { return better(h.ids[a], h.ids[b]) })
	return h.ids
}

// tokenHeap is a binary heap of token ids, the best (by better) on top.
type tokenHeap struct {
	ids    []int
	better func(a, b int) bool
}

func (h *tokenHeap) Len() int { return len(h.ids) }

func (h *tokenHeap) init() {
	for i := len(h.ids)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *tokenHeap) push(id int) {
	h.ids = append(h.ids, id)
	for i := len(h.ids) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.better(h.ids[i], h.ids[parent]) {
			break
		}
		h.ids[i], h.ids[parent] = h.ids[parent], h.ids[i]
		i = parent
	}
}

func (h *tokenHeap) pop() int {
	top := h.ids[0]
	last := len(h.ids) - 1
	h.ids[0] = h.ids[last]
	h.ids = h.ids[:last]
	if last > 0 {
		h.down(0)
	}
	return top
}

func (h *tokenHeap) down(i int) {
	for {
		best, l, r := i, 2*i+1, 2*i+2
		if l < len(h.ids) && h.better(h.ids[l], h.ids[best]) {
			best = l
		}
		if r < len(h.ids) && h.better(h.ids[r], h.ids[best]) {
			best = r
		}
		if best == i {
			return
		}
		h.ids[i], h.ids[best] = h.ids[best], h.ids[i]
		i = best
	}
}

// TokenLogprob is a generated token with its log-probability and the most likely alternatives.
type TokenLogprob struct {
	ID      int32          `json:"id"`
	Token   string         `json:"token"`
	Logprob float64        `json:"logprob"`
	Top     []TokenLogprob `json:"top_logprobs,omitempty"`
}

// logprobs returns the log-probability of tok under logits and the top k ids with theirs, best
// first (ties by id), in float64.
func logprobs(logits []float32, tok int32, k int) (float64, []int32, []float64) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	z := 0.0
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(z)
	var ids []int32
	var lps []float64
	if k > 0 {
		for _, i := range topK(logits, k) {
			ids = append(ids, int32(i))
			lps = append(lps, float64(logits[i])-lse)
		}
	}
	return float64(logits[tok]) - lse, ids, lps
}

// maxDeviceK is the most candidates a decode step reads back a sequence when sampling on the
// device; the step programs come in two widths, 1 (every request greedy) and this.
const maxDeviceK = 64

// Candidates says whether the sampler can pick its tokens from a step's top candidates
// (model.Cache.StepSample), and the k it needs (1 for greedy): true without repetition, presence
// or frequency penalties, which change logits outside the candidates, and without log-probabilities.
// Greedy and top-k take the top k logits; top-p alone the top maxDeviceK logits and the row's mass
// (its nucleus is usually among them); temperature alone the maxDeviceK best Gumbel scores.
// NextCandidate then gives the token Next would, or says that the step's whole row is needed.
func (p *Sampler) Candidates() (int, bool) {
	s := p.s
	if (s.RepetitionPenalty != 1 && s.RepetitionPenalty != 0) || s.PresencePenalty != 0 || s.FrequencyPenalty != 0 || s.Logprobs {
		return 0, false
	}
	switch {
	case s.Temperature == 0:
		return 1, true
	case s.TopK > 0:
		return s.TopK, true
	}
	return maxDeviceK, true
}

// Ctl is the sampler's row of engine.TopK's sampling control for its next draw: 1/T, and for
// temperature alone the Gumbel flag and the draw's keys.
func (p *Sampler) Ctl() [engine.SampleCtlWords]int32 {
	var c [engine.SampleCtlWords]int32
	if p.s.Temperature == 0 {
		return c
	}
	c[engine.SampleInvTemp] = int32(math.Float32bits(float32(p.invTemp())))
	if p.s.TopK == 0 && p.s.TopP >= 1 {
		k0, k1 := p.gumbelKeys()
		c[engine.SampleGumbel], c[engine.SampleKey0], c[engine.SampleKey1] = 1, int32(k0), int32(k1)
	}
	return c
}

// NextCandidate returns the next token from a step's candidates, as (logit, id) pairs, at least
// Candidates() of them: for greedy, top-k and top-p the top logits, best first, ties by id; for
// temperature alone the best Gumbel scores under Ctl's keys. mass is the row's Σ exp((logit −
// max)/T) (engine.TopK's Sample, within engine.MassTol), which top-p alone needs. It draws from the
// random stream exactly as Next does on the whole row, and so returns the same token, or reports
// false, having drawn nothing, when the candidates cannot settle the draw: top-p's nucleus reaches
// past them or its edge lies within the mass's error; or a Gumbel winner is within the device's
// error (engine.GumbelTol) of a token outside them. The caller then gives Next the whole row.
func (p *Sampler) NextCandidate(cand []float32, mass float64) (int32, bool) {
	if p.s.Temperature == 0 {
		p.draws++
		return int32(cand[1]), true
	}
	n := len(cand) / 2
	for j := range n {
		if cand[2*j+1] < 0 {
			return 0, false // fewer values than candidates (NaNs): the host decides
		}
	}
	var tok int32
	var ok bool
	switch {
	case p.s.TopK > 0:
		tok, ok = p.fromTop(cand[:2*min(p.s.TopK, n)], true), true
	case p.s.TopP < 1:
		tok, ok = p.nucleusCandidate(cand, mass)
	default:
		tok, ok = p.gumbelCandidate(cand)
	}
	if ok {
		p.draws++
	}
	return tok, ok
}

// gumbelCandidate is the Gumbel-max draw among the candidates, exact when the winner's float64
// score beats the last candidate's by more than the device's error on both: every token outside
// had a device score at most the last candidate's (see engine.GumbelTol; a token whose logit/T is
// larger than mag would have outranked it, and one below −mag cannot reach the winner).
func (p *Sampler) gumbelCandidate(cand []float32) (int32, bool) {
	invT := p.invTemp()
	k0, k1 := p.gumbelKeys()
	n := len(cand) / 2
	best, bestS := -1, math.Inf(-1)
	for j := range n {
		id := int(cand[2*j+1])
		if sc := gumbelScore(cand[2*j], invT, k0, k1, id); sc > bestS || (sc == bestS && id < best) {
			best, bestS = id, sc
		}
	}
	last := gumbelScore(cand[2*(n-1)], invT, k0, k1, int(cand[2*n-1]))
	mag := 2 * (math.Abs(last) + 40)
	if !(bestS > last+engine.GumbelTol(math.Abs(float64(cand[2*(n-1)])*invT))+engine.GumbelTol(mag)) {
		return 0, false
	}
	return int32(best), true
}

// nucleusCandidate is top-p alone from the top logits and the row's mass: the nucleus's edge is
// where the candidates' cumulative weight reaches p of the mass, taken only where the mass's
// error cannot move it.
func (p *Sampler) nucleusCandidate(cand []float32, mass float64) (int32, bool) {
	if !(mass > 0) {
		return 0, false
	}
	n := len(cand) / 2
	mx := float64(cand[0])
	// z, the host's sum over the whole row, lies in [lo, hi]; 1e-9 covers the host's own rounding.
	lo, hi := mass/(1+engine.MassTol), mass/(1-engine.MassTol)
	top, sum := p.s.TopP*(1+1e-9), 0.0
	for j := range n {
		sum += math.Exp((float64(cand[2*j]) - mx) / p.s.Temperature)
		switch {
		case sum/hi >= top:
			return p.fromTop(cand[:2*(j+1)], false), true
		case sum/lo >= p.s.TopP*(1-1e-9):
			return 0, false // the edge is within the mass's error
		}
	}
	return 0, false // the nucleus reaches past the candidates
}

// fromTop draws from the top candidates (logit, id pairs, best first) as Next does from its kept
// tokens, after top-p among them with topP (top-k's cut; top-p alone has cut its nucleus): one
// uniform number over their weights at the temperature, relative to the largest logit.
func (p *Sampler) fromTop(cand []float32, topP bool) int32 {
	k := len(cand) / 2
	mx := float64(cand[0])
	if cap(p.probs) < k {
		p.probs = make([]float64, k)
	}
	w := p.probs[:k]
	z := 0.0
	for j := range k {
		w[j] = math.Exp((float64(cand[2*j]) - mx) / p.s.Temperature)
		z += w[j]
	}
	// Top-p: the smallest prefix whose mass (among the candidates) reaches P.
	n, mass := k, 0.0
	for j := range k {
		mass += w[j] / z
		if topP && mass >= p.s.TopP {
			n = j + 1
			break
		}
	}
	total := 0.0
	for j := range n {
		total += w[j]
	}
	r := p.rng.Float64() * total
	for j := range n {
		r -= w[j]
		if r < 0 {
			return int32(cand[2*j+1])
		}
	}
	return int32(cand[2*(n-1)+1])
}

// deviceK is how many candidates a decode step of jobs reads back a sequence when every job
// samples from them (Sampler.Candidates): 1 when all are greedy, else maxDeviceK (with the row's
// mass and each row's sampling control); 0 when some job needs the whole row (penalties,
// log-probabilities, top-k above maxDeviceK) or the output layer is padded past the tokenizer's
// vocabulary.
func (g *Generator) deviceK(jobs []*job) int {
	if g.HostSampling {
		return 0
	}
	vocab := g.Model.Cfg.VocabSize
	if n := g.Tok.VocabSize(); n > 0 && n < vocab {
		return 0
	}
	k := 1
	for _, j := range jobs {
		need, ok := j.sampler.Candidates()
		if !ok || need > maxDeviceK || need > vocab {
			return 0
		}
		if need > 1 {
			k = maxDeviceK
		}
	}
	return min(k, vocab)
}
