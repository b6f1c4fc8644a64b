// Package serve generates text from a base model with any number of adapters: continuous batching
// over a KV cache of slots (requests for different adapters share each step), sampling, streaming,
// hot-swapped adapters, and an OpenAI-compatible HTTP server.
package serve

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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
func (p *Sampler) Next(logits []float32, seen []int32, generated int) int32 {
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
	// Candidates by descending logit (ties by id, for determinism), cut by top-k.
	p.idx = p.idx[:0]
	for i := range logits {
		p.idx = append(p.idx, i)
	}
	sort.Slice(p.idx, func(a, b int) bool {
		la, lb := logits[p.idx[a]], logits[p.idx[b]]
		return la > lb || (la == lb && p.idx[a] < p.idx[b])
	})
	if p.s.TopK > 0 && p.s.TopK < len(p.idx) {
		p.idx = p.idx[:p.s.TopK]
	}
	// Softmax at the temperature, in float64.
	p.probs = p.probs[:0]
	mx := float64(logits[p.idx[0]])
	z := 0.0
	for _, i := range p.idx {
		e := math.Exp((float64(logits[i]) - mx) / p.s.Temperature)
		p.probs = append(p.probs, e)
		z += e
	}
	// Top-p: the smallest prefix whose mass reaches P.
	n, mass := len(p.probs), 0.0
	for j, e := range p.probs {
		mass += e / z
		if mass >= p.s.TopP {
			n = j + 1
			break
		}
	}
	total := 0.0
	for _, e := range p.probs[:n] {
		total += e
	}
	r := p.rng.Float64() * total
	for j, e := range p.probs[:n] {
		r -= e
		if r < 0 {
			return int32(p.idx[j])
		}
	}
	return int32(p.idx[n-1])
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
		idx := make([]int32, len(logits))
		for i := range idx {
			idx[i] = int32(i)
		}
		sort.Slice(idx, func(a, b int) bool {
			la, lb := logits[idx[a]], logits[idx[b]]
			return la > lb || (la == lb && idx[a] < idx[b])
		})
		ids = idx[:min(k, len(idx))]
		for _, i := range ids {
			lps = append(lps, float64(logits[i])-lse)
		}
	}
	return float64(logits[tok]) - lse, ids, lps
}
