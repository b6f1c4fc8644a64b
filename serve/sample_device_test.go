package serve

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// topCandidates runs engine.TopK on b over one row.
func topCandidates(t *testing.T, b engine.Backend, row []float32, k int) []float32 {
	t.Helper()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{1, len(row)})
	y := g.TopK(x, k)
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	xt, err := engine.FromFloat32(b, x.Shape(), row)
	require.NoError(t, err)
	defer xt.Release()
	require.NoError(t, p.Bind(x, xt))
	require.NoError(t, p.Run())
	out, err := p.Float32(y)
	require.NoError(t, err)
	return out
}

// sampleProgram runs engine.TopK with Sample on b over one row, its control rebound each draw.
type sampleProgram struct {
	p     *engine.Program
	y     *engine.Node
	ctl   *engine.Tensor
	cands int
	last  [engine.SampleCtlWords]int32 // the control of out
	out   []float32
}

func newSampleProgram(t *testing.T, b engine.Backend, row []float32, k int) *sampleProgram {
	t.Helper()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{1, len(row)})
	c := g.Input("ctl", engine.I32, engine.Shape{1, engine.SampleCtlWords})
	y := g.SampleTopK(x, c, k)
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	t.Cleanup(p.Release)
	xt, err := engine.FromFloat32(b, x.Shape(), row)
	require.NoError(t, err)
	t.Cleanup(xt.Release)
	ct, err := engine.NewTensor(b, engine.I32, c.Shape())
	require.NoError(t, err)
	t.Cleanup(ct.Release)
	require.NoError(t, p.Bind(x, xt))
	require.NoError(t, p.Bind(c, ct))
	return &sampleProgram{p: p, y: y, ctl: ct, cands: k}
}

// next is one device draw: the candidates and mass for the sampler's control, then NextCandidate.
func (sp *sampleProgram) next(t *testing.T, s *Sampler) (int32, bool) {
	// Only Gumbel rows change their control every draw: the others run once.
	if c := s.Ctl(); sp.out == nil || c != sp.last {
		require.NoError(t, sp.ctl.SetInt32(c[:]))
		require.NoError(t, sp.p.Run())
		out, err := sp.p.Float32(sp.y)
		require.NoError(t, err)
		sp.out, sp.last = out, c
	}
	return s.NextCandidate(sp.out[:2*sp.cands], float64(sp.out[2*sp.cands]))
}

// Sampling from the device's candidates gives the host sampler's tokens for the same seed, over
// a row with ties: greedy, top-k at several temperatures, top-k with top-p, top-p alone (from the
// top 64 and the row's mass) and temperature alone (the Gumbel-max draw on the device), each for
// 300 tokens; a draw the candidates cannot settle says so and the whole row gives the host's
// token. A nucleus wider than the candidates always falls back; the others rarely do.
func TestCandidateSamplingEqualsHost(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	row := make([]float32, 3001)
	for i := range row {
		row[i] = float32(math.Round(r.NormFloat64()*30) / 10) // ties
	}
	backends := map[string]engine.Backend{"cpu": cpu.New(), "webgpu": testdevice.WebGPU(t)}
	for name, b := range backends {
		greedy := topCandidates(t, b, row, 1)
		sp := newSampleProgram(t, b, row, maxDeviceK)
		for _, c := range []struct {
			temp, p float64
			k       int
			wide    bool // the nucleus reaches past the candidates
		}{{0, 1, 0, false}, {1, 1, 40, false}, {0.7, 1, 5, false}, {1.3, 0.8, 64, false}, {0.9, 0.5, 20, false}, {2, 0.95, 1, false},
			{0.5, 0.9, 0, false}, {1, 0.3, 0, false}, {1, 1, 0, false}, {0.6, 1, 0, false}, {3, 1, 0, false}, {3, 0.99, 0, true}} {
			s := DefaultSampling()
			s.Temperature, s.TopP, s.TopK, s.Seed = c.temp, c.p, c.k, 99
			host, dev := NewSampler(s), NewSampler(s)
			need, ok := dev.Candidates()
			require.True(t, ok)
			require.LessOrEqual(t, need, maxDeviceK)
			distinct := map[int32]bool{}
			fallbacks := 0
			for range 300 {
				want := host.Next(append([]float32(nil), row...), nil, 0)
				var got int32
				if need == 1 {
					got, ok = dev.NextCandidate(greedy, 0)
				} else {
					got, ok = sp.next(t, dev)
				}
				if !ok {
					fallbacks++
					got = dev.Next(append([]float32(nil), row...), nil, 0)
				}
				require.Equal(t, want, got, "%s %+v", name, c)
				distinct[got] = true
			}
			if c.wide {
				require.Equal(t, 300, fallbacks, "%s %+v: a nucleus past the candidates needs the row", name, c)
			} else {
				require.LessOrEqual(t, fallbacks, 3, "%s %+v", name, c)
			}
			if c.temp > 0 && c.k != 1 && c.p > 0.5 {
				require.Greater(t, len(distinct), 1, "sampling, not argmax: %+v", c)
			}
			t.Logf("%s %+v: %d distinct tokens, %d fallbacks", name, c, len(distinct), fallbacks)
		}
	}
	for _, sp := range []Sampling{
		{Temperature: 0, TopP: 1, RepetitionPenalty: 1.2},               // a penalty changes logits
		{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Logprobs: true}, // log-probabilities
		{Temperature: 1, TopP: 1, RepetitionPenalty: 1, PresencePenalty: 0.5},
	} {
		_, ok := NewSampler(sp).Candidates()
		require.False(t, ok, "%+v", sp)
	}
}

// The candidates refuse the draws they cannot settle: a Gumbel winner within the device's error
// of the last candidate, and a top-p edge within the mass's error.
func TestCandidatesRefuseUnsettledDraws(t *testing.T) {
	s := DefaultSampling()
	s.Temperature, s.Seed = 0.8, 4
	sm := NewSampler(s)
	k0, k1 := sm.gumbelKeys()
	// Logits that give tokens 3 and 9 the same Gumbel score (to f32 rounding).
	l := func(id uint32) float32 { return float32((5 - engine.GumbelNoise(k0, k1, id)) * s.Temperature) }
	_, ok := sm.NextCandidate([]float32{l(3), 3, l(9), 9}, 0)
	require.False(t, ok, "a near tie with a token outside")
	require.Zero(t, sm.draws, "a refused draw draws nothing")
	_, ok = sm.NextCandidate([]float32{l(3) + 1, 3, l(9), 9}, 0)
	require.True(t, ok, "a clear winner")

	s = DefaultSampling()
	s.Temperature, s.TopP = 1, 0.5
	sm = NewSampler(s)
	// Weights 1 and 1 of a mass 4: the two reach exactly p, within the mass's error.
	_, ok = sm.NextCandidate([]float32{0.5, 7, 0.5, 2}, 4)
	require.False(t, ok)
	tok, ok := sm.NextCandidate([]float32{0.5, 7, 0.5, 2}, 3.5)
	require.True(t, ok)
	require.Contains(t, []int32{7, 2}, tok)
	_, ok = sm.NextCandidate([]float32{0.5, 7, 0.5, 2}, 40)
	require.False(t, ok, "the nucleus reaches past the candidates")
}

// Temperature alone draws by Gumbel-max: the frequencies of 40,000 draws over a small vocabulary
// match softmax(logits/T) (Pearson's chi-square below its 0.999 quantile), at two temperatures;
// and so do top-p's draws over its renormalised nucleus.
func TestSamplingFrequenciesMatchSoftmax(t *testing.T) {
	logits := []float32{1.5, -0.3, 0.8, 2.1, -1.7, 0.1, 1.1, -0.6}
	const draws = 40000
	const chi2at999 = 24.32 // 7 degrees of freedom
	softmax := func(temp float64, keep int) []float64 {
		ids := topK(logits, len(logits))
		p := make([]float64, len(logits))
		z := 0.0
		for _, i := range ids[:keep] {
			p[i] = math.Exp(float64(logits[i]) / temp)
			z += p[i]
		}
		for i := range p {
			p[i] /= z
		}
		return p
	}
	for _, c := range []struct {
		temp, topP float64
		keep       int // the tokens top-p keeps
	}{{1, 1, 8}, {0.6, 1, 8}, {1, 0.75, 3}} {
		s := DefaultSampling()
		s.Temperature, s.TopP, s.Seed = c.temp, c.topP, 7
		sm := NewSampler(s)
		count := make([]int, len(logits))
		for range draws {
			count[sm.Next(append([]float32(nil), logits...), nil, 0)]++
		}
		want := softmax(c.temp, c.keep)
		chi2, dof := 0.0, -1
		for i, p := range want {
			if p == 0 {
				require.Zero(t, count[i], "token %d is outside the nucleus", i)
				continue
			}
			e := p * draws
			chi2 += (float64(count[i]) - e) * (float64(count[i]) - e) / e
			dof++
		}
		require.Less(t, chi2, chi2at999, "%+v: counts %v, expected %v", c, count, want)
		t.Logf("%+v: chi-square %.2f (%d degrees of freedom)", c, chi2, dof)
	}
}

// The serving loop decodes greedy, top-k, top-p and temperature requests from candidates read
// back from the device (k a sequence instead of the vocabulary) and produces the texts of host
// sampling.
func TestDeviceSamplingServesTheHostTexts(t *testing.T) {
	out := storiesDir(t)
	tok, err := tokenizer.Load(out)
	require.NoError(t, err)
	run := func(b engine.Backend, host bool) ([]string, engine.Counts, Stats) {
		cb := engine.NewCounting(b)
		m, err := model.Load(out, cb, model.LoadOptions{})
		require.NoError(t, err)
		defer m.Release()
		g := &Generator{Model: m, Tok: tok, Slots: 4, HostSampling: host}
		defer g.Close()
		var texts []string
		for _, sp := range []Sampling{
			{Temperature: 0, TopP: 1, RepetitionPenalty: 1, MaxTokens: 24},
			{Temperature: 0.9, TopK: 40, TopP: 1, RepetitionPenalty: 1, MaxTokens: 24, Seed: 3},
			{Temperature: 1.2, TopK: 10, TopP: 0.7, RepetitionPenalty: 1, MaxTokens: 24, Seed: 5},
			{Temperature: 0.8, TopP: 0.9, RepetitionPenalty: 1, MaxTokens: 24, Seed: 6},
			{Temperature: 1.1, TopP: 1, RepetitionPenalty: 1, MaxTokens: 24, Seed: 8},
		} {
			res, err := g.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: sp}, nil)
			require.NoError(t, err)
			texts = append(texts, res.Text)
		}
		return texts, cb.Counts(), g.Stats()
	}
	want, hostCounts, _ := run(cpu.New(), true)
	got, devCounts, st := run(cpu.New(), false)
	require.Equal(t, want, got)
	// One read a step either way, and one more for each draw the candidates did not settle.
	require.Equal(t, hostCounts.Reads+int64(st.SampleFallbacks), devCounts.Reads)
	require.LessOrEqual(t, st.SampleFallbacks, st.DecodeTokens/10)
	require.Less(t, devCounts.ReadBytes, hostCounts.ReadBytes/3, "candidates, not the vocabulary (of 512 tokens here)")
	t.Logf("bytes read: %d sampling on the device, %d on the host; %d of %d decoded tokens fell back to the row",
		devCounts.ReadBytes, hostCounts.ReadBytes, st.SampleFallbacks, st.DecodeTokens)
	gpu, _, _ := run(testdevice.WebGPU(t), false)
	gpuHost, _, _ := run(testdevice.WebGPU(t), true)
	require.Equal(t, gpuHost, gpu, "webgpu: device sampling gives host sampling's texts")
	t.Logf("texts: %q", got)
}
