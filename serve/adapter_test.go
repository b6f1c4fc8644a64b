package serve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
	"github.com/lathe-ml/lathe/peft"
)

// randomLoRA is a LoRA adapter on every linear layer of stories260K with non-zero B, saved to dir.
func randomLoRA(t *testing.T, m *model.Model, seed uint64, dir string) *peft.Adapter {
	cfg := peft.LoRAConfig()
	cfg.R, cfg.LoraAlpha = 4, 8
	cfg.TargetModules = peft.Modules{Pattern: peft.AllLinear}
	a, err := peft.New(cfg, m.Cfg, m.Backend, seed)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(seed, 1))
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.1)
		}
		require.NoError(t, p.Tensor.SetFloat32(v))
	}
	require.NoError(t, a.Save(dir))
	return a
}

// A request with an adapter gives the text of the model with that adapter merged into its weights.
func TestAdapterEqualsMergedModel(t *testing.T) {
	g := stories(t)
	out, tok, base, b := g.Model.Dir, g.Tok, g.Model, g.Model.Backend
	dir := t.TempDir()
	s := DefaultSampling()
	s.MaxTokens = 30
	gen := newGenerator(t, base, tok)
	plain, err := gen.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)

	for seed := uint64(1); seed <= 2; seed++ {
		adir := filepath.Join(dir, "adapter")
		randomLoRA(t, base, seed, adir)
		a, err := peft.Load(adir, base.Cfg, b)
		require.NoError(t, err)
		withAdapter, err := gen.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s, Adapter: a}, nil)
		require.NoError(t, err)
		require.NotEqual(t, plain.Text, withAdapter.Text, "the adapter changes the text")

		merged, err := model.Load(out, b, model.LoadOptions{})
		require.NoError(t, err)
		require.NoError(t, peft.Merge(merged, a))
		mg := &Generator{Model: merged, Tok: tok}
		defer mg.Close()
		want, err := mg.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
		require.NoError(t, err)
		merged.Release()
		require.Equal(t, want.Text, withAdapter.Text, "adapter %d", seed)
	}
}

// Combining adapters gives the text of the model with all of them merged in, weighted.
func TestCombinedAdaptersEqualWeightedMerge(t *testing.T) {
	g := stories(t)
	out, tok, base, b := g.Model.Dir, g.Tok, g.Model, g.Model.Backend
	dir := t.TempDir()
	a1 := randomLoRA(t, base, 1, filepath.Join(dir, "a1"))
	a2 := randomLoRA(t, base, 2, filepath.Join(dir, "a2"))
	combined, err := peft.Combine([]float64{0.7, -0.4}, a1, a2)
	require.NoError(t, err)
	require.Equal(t, 8, combined.Config.R)

	s := DefaultSampling()
	s.MaxTokens = 30
	got, err := newGenerator(t, base, tok).Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s, Adapter: combined}, nil)
	require.NoError(t, err)

	// The same composition made by a registry from the folders, as POST /v1/adapters does.
	reg := NewRegistry(func(d string) (model.Adapter, error) { return peft.Load(d, base.Cfg, b) })
	reg.Combine = func(w []float64, parts []model.Adapter) (model.Adapter, error) {
		return peft.Combine(w, parts[0].(*peft.Adapter), parts[1].(*peft.Adapter))
	}
	require.NoError(t, reg.LoadCombined("c", []string{filepath.Join(dir, "a1"), filepath.Join(dir, "a2")}, []float64{0.7, -0.4}))
	fromReg, ok := reg.Get("c")
	require.True(t, ok)
	viaReg, err := newGenerator(t, base, tok).Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s, Adapter: fromReg}, nil)
	require.NoError(t, err)
	require.Equal(t, got.Text, viaReg.Text)
	require.ErrorContains(t, reg.LoadCombined("d", []string{filepath.Join(dir, "a1")}, []float64{1, 2}), "1 paths for 2 weights")

	merged, err := model.Load(out, b, model.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(merged.Release)
	for i, a := range []*peft.Adapter{a1, a2} {
		w := []float32{0.7, -0.4}[i]
		for _, p := range a.Params() { // scale B by the weight, then merge
			if strings.HasSuffix(p.Key, "lora_B.weight") {
				v, err := p.Tensor.Float32()
				require.NoError(t, err)
				for j := range v {
					v[j] *= w
				}
				require.NoError(t, p.Tensor.SetFloat32(v))
			}
		}
		require.NoError(t, peft.Merge(merged, a))
	}
	want, err := newGenerator(t, merged, tok).Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: s}, nil)
	require.NoError(t, err)
	require.Equal(t, want.Text, got.Text)
}

// Concurrent requests for different adapters (two LoRAs, an IA3, none) are decoded together, in
// shared steps, and each gets the text it gets alone.
func TestConcurrentAdaptersShareDecodeSteps(t *testing.T) {
	g := stories(t)
	base := g.Model
	dir := t.TempDir()
	ia3, err := peft.New(peft.IA3Config(), base.Cfg, base.Backend, 3)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(3, 1))
	for _, p := range ia3.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for i := range v {
			v[i] = float32(1 + r.NormFloat64()*0.3)
		}
		require.NoError(t, p.Tensor.SetFloat32(v))
	}
	adapters := []model.Adapter{
		randomLoRA(t, base, 1, filepath.Join(dir, "a1")), nil,
		randomLoRA(t, base, 2, filepath.Join(dir, "a2")), ia3,
	}
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went to the", "One day"}
	s := DefaultSampling()
	s.MaxTokens = 24
	alone := make([]string, len(adapters))
	gen := newGenerator(t, base, g.Tok)
	for i, a := range adapters {
		res, err := gen.Generate(context.Background(), Request{Prompt: prompts[i], Sampling: s, Adapter: a}, nil)
		require.NoError(t, err)
		alone[i] = res.Text
	}
	require.Equal(t, 1, gen.Stats().MaxBatch, "one at a time")
	for i := 1; i < len(alone); i++ {
		require.NotEqual(t, alone[0], alone[i])
	}

	// How many overlap depends on when each arrives: 24 tokens of a 260K-parameter model can end
	// before the next request is admitted on a loaded machine (CI met that once). Each attempt
	// starts the four together on a fresh generator and must give every request its text alone;
	// one attempt in five must decode them in shared steps (the model's tests check mixed steps
	// exactly).
	for attempt := 0; ; attempt++ {
		tg := newGenerator(t, base, g.Tok)
		together := make([]string, len(adapters))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, a := range adapters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := tg.Generate(context.Background(), Request{Prompt: prompts[i], Sampling: s, Adapter: a}, nil)
				assert.NoError(t, err)
				together[i] = res.Text
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, alone, together)
		st := tg.Stats()
		require.Equal(t, len(adapters), st.Prefills)
		if st.MaxBatch >= 2 {
			break
		}
		require.Less(t, attempt, 4, "in five attempts no requests were decoded together: %+v", st)
	}
}

// A hot swap frees the replaced adapter once the request using it ends, which still finishes with
// it; requests naming it afterwards fail, and the cache drops the programs bound to it.
func TestHotSwapFreesTheReplacedAdapterAfterItsRequests(t *testing.T) {
	g := stories(t)
	base := g.Model
	dir := t.TempDir()
	dirs := []string{filepath.Join(dir, "a1"), filepath.Join(dir, "a2")}
	randomLoRA(t, base, 1, dirs[0]).Release()
	randomLoRA(t, base, 2, dirs[1]).Release()
	gen := newGenerator(t, base, g.Tok)
	reg := NewRegistry(func(d string) (model.Adapter, error) { return peft.Load(d, base.Cfg, base.Backend) })
	reg.OnRetire(gen.Retire)
	s := DefaultSampling()
	s.MaxTokens = 20
	req := Request{Prompt: "Once upon a time", Sampling: s}

	want := make([]string, 2)
	for i, d := range dirs {
		a, err := peft.Load(d, base.Cfg, base.Backend)
		require.NoError(t, err)
		req.Adapter = a
		res, err := gen.Generate(context.Background(), req, nil)
		require.NoError(t, err)
		want[i] = res.Text
		gen.Retire(a, true)
	}
	require.NotEqual(t, want[0], want[1])

	require.NoError(t, reg.Load("x", dirs[0]))
	first, _ := reg.Get("x")
	req.Adapter = first
	swapped := false
	res, err := gen.Generate(context.Background(), req, func(string) error {
		if !swapped { // mid-request: x now names the second adapter
			swapped = true
			require.NoError(t, reg.Load("x", dirs[1]))
		}
		return nil
	})
	require.NoError(t, err)
	require.True(t, swapped)
	require.Equal(t, want[0], res.Text, "the running request keeps its adapter")
	require.Eventually(t, func() bool { return gen.Stats().Retired == 3 }, 5*time.Second, 10*time.Millisecond, "the replaced adapter is retired")
	require.Zero(t, first.(*peft.Adapter).NumParams(), "and freed")
	_, err = gen.Generate(context.Background(), req, nil)
	require.ErrorContains(t, err, "unloaded")

	second, _ := reg.Get("x")
	req.Adapter = second
	res, err = gen.Generate(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, want[1], res.Text)
	require.True(t, reg.Unload("x"))
	require.Eventually(t, func() bool { return gen.Stats().Retired == 4 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, second.(*peft.Adapter).NumParams())
}

// The serving loop on WebGPU: two requests with different LoRA adapters and one without, at once
// (mixed steps through the adapter pool), give the texts they give on the CPU.
func TestWebGPUServingEqualsCPU(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	out := storiesDir(t)
	tok, err := tokenizer.Load(out)
	require.NoError(t, err)
	dir := t.TempDir()
	s := DefaultSampling()
	s.MaxTokens = 10
	prompts := []string{"Once upon a time", "The cat", "One day"}
	var texts [2][]string
	for bi, b := range []engine.Backend{cpu.New(), gpu} {
		m, err := model.Load(out, b, model.LoadOptions{})
		require.NoError(t, err)
		t.Cleanup(m.Release)
		var adapters []model.Adapter
		for i := range 2 {
			d := filepath.Join(dir, fmt.Sprint(i))
			if bi == 0 { // made and saved on the CPU, loaded by both
				randomLoRA(t, m, uint64(i+1), d).Release()
			}
			a, err := peft.Load(d, m.Cfg, b)
			require.NoError(t, err)
			t.Cleanup(a.Release)
			adapters = append(adapters, a)
		}
		adapters = append(adapters, nil)
		g := newGenerator(t, m, tok)
		got := make([]string, len(prompts))
		var wg sync.WaitGroup
		for i := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := g.Generate(context.Background(), Request{Prompt: prompts[i], Sampling: s, Adapter: adapters[i]}, nil)
				assert.NoError(t, err)
				got[i] = res.Text
			}()
		}
		wg.Wait()
		texts[bi] = got
	}
	require.Equal(t, texts[0], texts[1])
}
