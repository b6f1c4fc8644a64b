package serve

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

func TestSamplingValidate(t *testing.T) {
	ok := DefaultSampling()
	require.NoError(t, ok.Validate())
	for _, c := range []struct {
		edit func(*Sampling)
		msg  string
	}{
		{func(s *Sampling) { s.Temperature = -1 }, "temperature"},
		{func(s *Sampling) { s.TopP = 0 }, "top_p"},
		{func(s *Sampling) { s.TopP = 1.5 }, "top_p"},
		{func(s *Sampling) { s.TopK = -2 }, "top_k"},
		{func(s *Sampling) { s.MaxTokens = 0 }, "max_tokens"},
		{func(s *Sampling) { s.RepetitionPenalty = 0 }, "repetition_penalty"},
		{func(s *Sampling) { s.PresencePenalty = 2.5 }, "presence_penalty"},
		{func(s *Sampling) { s.FrequencyPenalty = -3 }, "frequency_penalty"},
		{func(s *Sampling) { s.Stop = []string{""} }, "stop"},
	} {
		s := DefaultSampling()
		c.edit(&s)
		require.ErrorContains(t, s.Validate(), c.msg)
	}
}

func TestSamplerDistribution(t *testing.T) {
	logits := []float32{2, 1, 0, -1, 3}
	// Greedy is the argmax; the repetition penalty can move it.
	s := NewSampler(DefaultSampling())
	require.Equal(t, int32(4), s.Next(append([]float32(nil), logits...), nil, 0))
	pen := DefaultSampling()
	pen.RepetitionPenalty = 2
	require.Equal(t, int32(0), NewSampler(pen).Next(append([]float32(nil), logits...), []int32{4}, 0), "3/2 < 2")
	// Presence and frequency penalties count generated tokens only: 3 − 0.5 − 2·0.4 = 1.7 < 2.
	pf := DefaultSampling()
	pf.PresencePenalty, pf.FrequencyPenalty = 0.5, 0.4
	require.Equal(t, int32(4), NewSampler(pf).Next(append([]float32(nil), logits...), []int32{4, 4, 1}, 1), "4 is in the prompt only")
	require.Equal(t, int32(0), NewSampler(pf).Next(append([]float32(nil), logits...), []int32{1, 4, 4}, 2))

	// Temperature 1 sampling follows the softmax; top-k 2 keeps only the two best.
	counts := func(sp Sampling, n int) []float64 {
		c := make([]float64, len(logits))
		smp := NewSampler(sp)
		for i := 0; i < n; i++ {
			c[smp.Next(append([]float32(nil), logits...), nil, 0)]++
		}
		for i := range c {
			c[i] /= float64(n)
		}
		return c
	}
	sp := DefaultSampling()
	sp.Temperature, sp.Seed = 1, 42
	got := counts(sp, 40000)
	z := 0.0
	for _, l := range logits {
		z += math.Exp(float64(l))
	}
	for i, l := range logits {
		require.InDelta(t, math.Exp(float64(l))/z, got[i], 0.01, "token %d", i)
	}
	sp.TopK = 2
	got = counts(sp, 20000)
	require.Zero(t, got[1]+got[2]+got[3])
	require.InDelta(t, math.Exp(3)/(math.Exp(3)+math.Exp(2)), got[4], 0.015)
	sp.TopK, sp.TopP = 0, 0.5 // token 4 alone has p ≈ 0.64
	got = counts(sp, 1000)
	require.Equal(t, 1.0, got[4])
	// The same seed gives the same draws.
	sp.TopP = 1
	require.Equal(t, counts(sp, 50), counts(sp, 50))
}

func TestStableHoldsBackPartialCharactersAndStopPrefixes(t *testing.T) {
	require.Equal(t, 5, stable("hello", nil))
	require.Equal(t, 3, stable("hel\uFFFD", nil))
	require.Equal(t, 5, stable("hello\n\n", []string{"\n\nUser:"}))
	require.Equal(t, 5, stable("hello\n", []string{"\nUser:"}))
	cut, ok := firstStop("a story. The end. More", []string{"The end", "More"})
	require.True(t, ok)
	require.Equal(t, 9, cut)
}

// storiesDir converts the shared stories260K checkpoint into a Hugging Face folder.
func storiesDir(t *testing.T) string {
	dir := testdata.Path(t, "stories260K")
	out := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(dir, "stories260K.bin"), filepath.Join(dir, "tok512.bin"), out)
	require.NoError(t, err)
	return out
}

// stories is a generator over stories260K on the CPU backend.
func stories(t *testing.T) *Generator {
	out := storiesDir(t)
	m, err := model.Load(out, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(m.Release)
	tok, err := tokenizer.Load(out)
	require.NoError(t, err)
	return newGenerator(t, m, tok)
}

// newGenerator is a generator of 4 slots closed (its loop waited for) when the test ends, before
// the model it uses is released.
func newGenerator(t *testing.T, m *model.Model, tok *tokenizer.Tokenizer) *Generator {
	g := &Generator{Model: m, Tok: tok, Slots: 4}
	t.Cleanup(g.Close)
	return g
}

func TestGreedyStories260KReproducesThePublishedText(t *testing.T) {
	g := stories(t)
	s := DefaultSampling()
	s.MaxTokens = 40
	var streamed strings.Builder
	res, err := g.Generate(context.Background(), Request{Sampling: s}, func(piece string) error {
		streamed.WriteString(piece)
		return nil
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(res.Text, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."), "%q", res.Text)
	require.Equal(t, res.Text, streamed.String(), "the stream adds up to the text")
	require.Equal(t, 40, res.Tokens)
	require.Equal(t, "length", res.FinishReason)

	s.Stop = []string{" park"}
	res, err = g.Generate(context.Background(), Request{Sampling: s}, nil)
	require.NoError(t, err)
	require.Equal(t, "Once upon a time, there was a little girl named Lily. She loved to play outside in the", res.Text)
	require.Equal(t, "stop", res.FinishReason)
}

// A prompt longer than a prefill chunk is prefilled a chunk a turn while another request keeps
// decoding, and both get the text they get alone.
func TestChunkedPrefillEqualsWholePrompt(t *testing.T) {
	g := stories(t)
	s := DefaultSampling()
	s.MaxTokens = 16
	long := Request{Prompt: "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friend Ben.", Sampling: s}
	short := Request{Prompt: "One day", Sampling: s}
	var want []string
	for _, r := range []Request{long, short} {
		res, err := g.Generate(context.Background(), r, nil)
		require.NoError(t, err)
		want = append(want, res.Text)
	}
	ids, err := g.PromptIDs(long)
	require.NoError(t, err)
	require.Greater(t, len(ids), 20)

	chunked := newGenerator(t, g.Model, g.Tok)
	chunked.PrefillChunk = 7
	got := make([]string, 2)
	var wg sync.WaitGroup
	for i, r := range []Request{long, short} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := chunked.Generate(context.Background(), r, nil)
			assert.NoError(t, err)
			got[i] = res.Text
		}()
	}
	wg.Wait()
	require.Equal(t, want, got)
	st := chunked.Stats()
	require.Equal(t, 2, st.Prefills)
	require.GreaterOrEqual(t, st.PrefillSteps, (len(ids)+6)/7, "the long prompt took a step a chunk: %+v", st)
}

// An output layer padded past the tokenizer's vocabulary never yields an id without text.
func TestPaddedVocabularyIsNeverSampled(t *testing.T) {
	dir := t.TempDir()
	p := synth.Presets["tiny"]
	p.Vocab = 4096 // the tokenizer has a few hundred tokens
	_, err := synth.Write(dir, synth.Options{Preset: p, Seed: 3})
	require.NoError(t, err)
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(m.Release)
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	require.Less(t, tok.VocabSize(), p.Vocab)
	g := newGenerator(t, m, tok)
	s := DefaultSampling()
	s.Temperature, s.MaxTokens, s.Seed = 5, 64, 9 // flat: any id could come up
	res, err := g.Generate(context.Background(), Request{Prompt: "Once", Sampling: s}, nil)
	require.NoError(t, err)
	require.Positive(t, res.Tokens)
}

// generation_config.json's eos_token_id list ends generation as transformers' generate ends it
// (chat models end a turn with a token other than the tokenizer's end of text).
func TestGenerationConfigStopIDs(t *testing.T) {
	dir := storiesDir(t)
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(m.Release)
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	s := DefaultSampling()
	s.MaxTokens = 12
	full, err := newGenerator(t, m, tok).Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)
	ids, err := tok.Encode(full.Text, false)
	require.NoError(t, err)
	require.Greater(t, len(ids), 6)

	// The same model with the 5th generated token declared an end of turn.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(fmt.Sprintf(`{"eos_token_id": [2, %d]}`, ids[4])), 0o644))
	res, err := newGenerator(t, m, tok).Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)
	require.Equal(t, "stop", res.FinishReason)
	require.Less(t, res.Tokens, full.Tokens)
	require.True(t, strings.HasPrefix(full.Text, res.Text), "%q / %q", res.Text, full.Text)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"eos_token_id": "x"}`), 0o644))
	_, err = newGenerator(t, m, tok).Generate(context.Background(), Request{Prompt: "Once", Sampling: s}, nil)
	require.ErrorContains(t, err, "eos_token_id")
}

// Log-probabilities: each generated token's under the model (checked against the whole-sequence
// forward), and greedy decoding picks the most likely alternative.
func TestLogprobs(t *testing.T) {
	g := stories(t)
	s := DefaultSampling()
	s.MaxTokens, s.Logprobs, s.TopLogprobs = 8, true, 3
	res, err := g.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)
	require.Len(t, res.Logprobs, res.Tokens)
	prompt, err := g.PromptIDs(Request{Prompt: "Once upon a time"})
	require.NoError(t, err)
	seq := append([]int32(nil), prompt...)
	vocab := g.Model.Cfg.VocabSize
	var text strings.Builder
	for _, lp := range res.Logprobs {
		require.Len(t, lp.Top, 3)
		require.Equal(t, lp.ID, lp.Top[0].ID, "greedy takes the most likely token")
		require.InDelta(t, lp.Top[0].Logprob, lp.Logprob, 1e-9)
		require.GreaterOrEqual(t, lp.Top[0].Logprob, lp.Top[1].Logprob)
		// Against the full forward: log-softmax of the last position.
		full, err := g.Model.Logits(seq, 1, nil)
		require.NoError(t, err)
		last := full[len(full)-vocab:]
		mx, z := math.Inf(-1), 0.0
		for _, v := range last {
			mx = math.Max(mx, float64(v))
		}
		for _, v := range last {
			z += math.Exp(float64(v) - mx)
		}
		require.InDelta(t, float64(last[lp.ID])-mx-math.Log(z), lp.Logprob, 1e-4)
		seq = append(seq, lp.ID)
		text.WriteString(lp.Token)
	}
	require.Equal(t, res.Text, text.String(), "the tokens spell the text")
}

// A prompt that fills the context but one position gets the one or two tokens that fit, then
// "length"; one that fills it is refused.
func TestPromptAtTheContextLimit(t *testing.T) {
	g := stories(t)
	limit := g.Limit()
	s := DefaultSampling()
	s.MaxTokens = 5
	var prompt strings.Builder
	for {
		ids, err := g.PromptIDs(Request{Prompt: prompt.String() + " a"})
		require.NoError(t, err)
		if len(ids) >= limit {
			break
		}
		prompt.WriteString(" a")
	}
	ids, err := g.PromptIDs(Request{Prompt: prompt.String()})
	require.NoError(t, err)
	require.Equal(t, limit-1, len(ids))
	res, err := g.Generate(context.Background(), Request{Prompt: prompt.String(), Sampling: s}, nil)
	require.NoError(t, err)
	require.Equal(t, "length", res.FinishReason)
	require.LessOrEqual(t, res.Tokens, 2)
	require.Positive(t, res.Tokens)
	_, err = g.Generate(context.Background(), Request{Prompt: prompt.String() + " a", Sampling: s}, nil)
	require.ErrorContains(t, err, "context holds")
}

// Speed is timed where tokens are produced, not where a slow reader takes them. The reader is slow
// enough (4 pieces a second) that the bound holds with a wide margin on a loaded machine under
// -race (89 tokens/s measured there), and a reader-timed figure (about 4) fails it.
func TestTokensPerSecondIsProductionSpeed(t *testing.T) {
	g := stories(t)
	s := DefaultSampling()
	s.MaxTokens = 12
	res, err := g.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, func(string) error {
		time.Sleep(250 * time.Millisecond) // a reader at most 4 pieces a second
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, res.TokensPerS, 20.0, "stories260K decodes far faster than its reader reads: %+v", res)
	require.Less(t, res.TimeToFirstToken, 1.0)
}

// The next turn of a conversation reuses the keys and values its previous turn left in its slot,
// and generates what it generates from scratch.
func TestPrefixReuse(t *testing.T) {
	g := stories(t)
	s := DefaultSampling()
	s.MaxTokens = 16
	first, err := g.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)
	next := Request{Prompt: "Once upon a time" + first.Text + " Then", Sampling: s}
	reused, err := g.Generate(context.Background(), next, nil)
	require.NoError(t, err)
	st := g.Stats()
	require.Greater(t, st.ReusedTokens, 10, "%+v", st)

	fresh := newGenerator(t, g.Model, g.Tok)
	fresh.NoPrefixReuse = true
	want, err := fresh.Generate(context.Background(), next, nil)
	require.NoError(t, err)
	require.Equal(t, want.Text, reused.Text)
	require.Zero(t, fresh.Stats().ReusedTokens)

	// The same prompt again: everything but its last token is reused.
	again, err := g.Generate(context.Background(), next, nil)
	require.NoError(t, err)
	require.Equal(t, want.Text, again.Text)
	ids, err := g.PromptIDs(next)
	require.NoError(t, err)
	require.Equal(t, st.ReusedTokens+len(ids)-1, g.Stats().ReusedTokens)
}

// The nucleus found through heaps is the one a full sort gives, for top-k, top-p and both, on
// random logits with ties.
func TestNucleusEqualsFullSort(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	logits := make([]float32, 3001)
	for i := range logits {
		logits[i] = float32(math.Round(r.NormFloat64()*30) / 10) // ties
	}
	for _, c := range []struct {
		temp, p float64
		k       int
	}{{1, 0.9, 0}, {0.7, 0.5, 0}, {1.3, 1, 50}, {0.8, 0.8, 200}, {1, 0.99, 3001}} {
		sp := DefaultSampling()
		sp.Temperature, sp.TopP, sp.TopK = c.temp, c.p, c.k
		mx := math.Inf(-1)
		for _, v := range logits {
			mx = math.Max(mx, float64(v))
		}
		w, z := make([]float64, len(logits)), 0.0
		for i, v := range logits {
			w[i] = math.Exp((float64(v) - mx) / c.temp)
			z += w[i]
		}
		got := append([]int(nil), NewSampler(sp).nucleus(logits, w, z)...)
		// Reference: sort everything, cut to k, renormalize, cut at mass p.
		idx := make([]int, len(logits))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool {
			return logits[idx[a]] > logits[idx[b]] || (logits[idx[a]] == logits[idx[b]] && idx[a] < idx[b])
		})
		if c.k > 0 && c.k < len(idx) {
			idx = idx[:c.k]
		}
		zk := 0.0
		for _, i := range idx {
			zk += w[i]
		}
		want, mass := idx, 0.0
		for j, i := range idx {
			mass += w[i] / zk
			if mass >= c.p {
				want = idx[:j+1]
				break
			}
		}
		require.Equal(t, want, got, "%+v", c)
	}
}
