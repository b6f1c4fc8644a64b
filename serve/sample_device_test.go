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

// Sampling from the device's candidates gives the host sampler's tokens for the same seed:
// greedy, top-k at several temperatures, top-k with top-p, over a row with ties; and the requests
// that need the whole row say so.
func TestCandidateSamplingEqualsHost(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	row := make([]float32, 3001)
	for i := range row {
		row[i] = float32(math.Round(r.NormFloat64()*30) / 10) // ties
	}
	backends := map[string]engine.Backend{"cpu": cpu.New(), "webgpu": testdevice.WebGPU(t)}
	for name, b := range backends {
		cand := topCandidates(t, b, row, maxDeviceK)
		for _, c := range []struct {
			temp, p float64
			k       int
		}{{0, 1, 0}, {1, 1, 40}, {0.7, 1, 5}, {1.3, 0.8, 64}, {0.9, 0.5, 20}, {2, 0.95, 1}} {
			sp := DefaultSampling()
			sp.Temperature, sp.TopP, sp.TopK, sp.Seed = c.temp, c.p, c.k, 99
			host, dev := NewSampler(sp), NewSampler(sp)
			need, ok := dev.Candidates()
			require.True(t, ok)
			require.LessOrEqual(t, need, maxDeviceK)
			distinct := map[int32]bool{}
			for range 200 {
				want := host.Next(append([]float32(nil), row...), nil, 0)
				got := dev.NextCandidate(cand)
				require.Equal(t, want, got, "%s %+v", name, c)
				distinct[got] = true
			}
			if c.temp > 0 && c.k > 1 && c.p == 1 {
				require.Greater(t, len(distinct), 1, "sampling, not argmax: %+v", c)
			}
		}
	}
	for _, sp := range []Sampling{
		{Temperature: 1, TopP: 0.9, RepetitionPenalty: 1},               // top-p alone: the whole row
		{Temperature: 1, TopP: 1, RepetitionPenalty: 1},                 // every token a candidate
		{Temperature: 0, TopP: 1, RepetitionPenalty: 1.2},               // a penalty changes logits
		{Temperature: 0, TopP: 1, RepetitionPenalty: 1, Logprobs: true}, // log-probabilities
	} {
		_, ok := NewSampler(sp).Candidates()
		require.False(t, ok, "%+v", sp)
	}
}

// The serving loop decodes greedy and top-k requests from candidates read back from the device
// (k a sequence instead of the vocabulary) and produces the texts of host sampling.
func TestDeviceSamplingServesTheHostTexts(t *testing.T) {
	out := storiesDir(t)
	tok, err := tokenizer.Load(out)
	require.NoError(t, err)
	run := func(b engine.Backend, host bool) ([]string, engine.Counts) {
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
		} {
			res, err := g.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: sp}, nil)
			require.NoError(t, err)
			texts = append(texts, res.Text)
		}
		return texts, cb.Counts()
	}
	want, hostCounts := run(cpu.New(), true)
	got, devCounts := run(cpu.New(), false)
	require.Equal(t, want, got)
	require.Equal(t, hostCounts.Reads, devCounts.Reads, "one read a step either way")
	require.Less(t, devCounts.ReadBytes, hostCounts.ReadBytes/4, "candidates, not the vocabulary")
	t.Logf("bytes read: %d sampling on the device, %d on the host", devCounts.ReadBytes, hostCounts.ReadBytes)
	gpu, _ := run(testdevice.WebGPU(t), false)
	gpuHost, _ := run(testdevice.WebGPU(t), true)
	require.Equal(t, gpuHost, gpu, "webgpu: device sampling gives host sampling's texts")
	t.Logf("texts: %q", got)
}
