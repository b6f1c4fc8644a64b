package model_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// eachBackend runs f in a subtest per backend, the CPU and the best WebGPU adapter, opening each
// inside its subtest: a machine without a GPU skips (or under LATHE_REQUIRE_GPU=1 fails) the
// WebGPU half only, never the CPU one.
func eachBackend(t *testing.T, f func(t *testing.T, b engine.Backend)) {
	t.Run("cpu", func(t *testing.T) { f(t, cpu.New()) })
	t.Run("webgpu", func(t *testing.T) { f(t, testdevice.WebGPU(t)) })
	// The core-only backend serves mixes through the decomposed gathers.
	t.Run("core-only", func(t *testing.T) { f(t, enginetest.CoreOnly(cpu.New())) })
}

// randomize gives every parameter of a an arbitrary value, so that it changes the output (a fresh
// LoRA adapter is the identity).
func randomize(t *testing.T, a *peft.Adapter, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 3))
	for _, k := range a.Keys() {
		x, ok := a.Tensor(k)
		require.True(t, ok)
		v := make([]float32, x.Shape().Numel())
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.2)
			if a.Config.PeftType == peft.TypeIA3 {
				v[i] += 1
			}
		}
		require.NoError(t, x.SetFloat32(v))
	}
}

// Sequences of different lengths, in any slots, each with its own adapter (LoRA, IA3 or none),
// decoded together in one step, get the logits each gets decoded alone with its adapter's fused
// layers and no padding, on every backend, dense and NF4.
func TestRaggedMixedAdapterBatchEqualsEachAlone(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 12})
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	prompts := []int{4, 9, 6}
	const decode = 3
	eachBackend(t, func(t *testing.T, b engine.Backend) {
		for _, o := range []model.LoadOptions{{}, {Quantize: "nf4"}} {
			t.Run(fmt.Sprintf("quant=%s", o.Quantize), func(t *testing.T) {
				m, err := model.Load(dir, b, o)
				require.NoError(t, err)
				defer m.Release()
				lcfg := peft.LoRAConfig()
				lcfg.TargetModules = peft.Names("q_proj", "v_proj", "down_proj", "lm_head")
				lora, err := peft.New(lcfg, cfg, b, 1)
				require.NoError(t, err)
				randomize(t, lora, 1)
				ia3, err := peft.New(peft.IA3Config(), cfg, b, 2)
				require.NoError(t, err)
				randomize(t, ia3, 2)
				adapters := []model.Adapter{lora, nil, ia3}

				ids := make([][]int32, len(prompts))
				for s, n := range prompts {
					ids[s] = testIDs(cfg.VocabSize, 100)[s*11 : s*11+n+decode]
				}
				// Alone: each sequence in a cache of its own, every token's logits.
				alone := make([][]float32, len(prompts)) // logits of the decode steps' tokens
				for s, n := range prompts {
					c, err := m.NewCache(1, 32)
					require.NoError(t, err)
					l, err := c.StepAll([]model.Seq{{Slot: 0, Pos: 0, IDs: ids[s][:n], Adapter: adapters[s]}})
					require.NoError(t, err)
					alone[s] = append(alone[s], l[(n-1)*cfg.VocabSize:]...)
					for i := n; i < n+decode-1; i++ {
						l, err := c.StepAll([]model.Seq{{Slot: 0, Pos: i, IDs: ids[s][i : i+1], Adapter: adapters[s]}})
						require.NoError(t, err)
						alone[s] = append(alone[s], l...)
					}
					c.Release()
				}
				// Together: prompts 0 and 1 prefilled in one step (padded to a common bucket), 2
				// alone, into slots 3, 0, 2 of a 4-slot cache, then decoded in one batch.
				slots := []int{3, 0, 2}
				c, err := m.NewCache(4, 32)
				require.NoError(t, err)
				defer c.Release()
				together := make([][]float32, len(prompts))
				l, err := c.Step([]model.Seq{{Slot: slots[0], IDs: ids[0][:prompts[0]], Adapter: adapters[0]},
					{Slot: slots[1], IDs: ids[1][:prompts[1]], Adapter: adapters[1]}})
				require.NoError(t, err)
				together[0] = append(together[0], l[:cfg.VocabSize]...)
				together[1] = append(together[1], l[cfg.VocabSize:]...)
				l, err = c.Step([]model.Seq{{Slot: slots[2], IDs: ids[2][:prompts[2]], Adapter: adapters[2]}})
				require.NoError(t, err)
				together[2] = append(together[2], l...)
				for d := 0; d < decode-1; d++ {
					var seqs []model.Seq
					for s, n := range prompts {
						seqs = append(seqs, model.Seq{Slot: slots[s], Pos: n + d, IDs: ids[s][n+d : n+d+1], Adapter: adapters[s]})
					}
					l, err := c.Step(seqs)
					require.NoError(t, err)
					for s := range prompts {
						together[s] = append(together[s], l[s*cfg.VocabSize:(s+1)*cfg.VocabSize]...)
					}
				}
				for s := range prompts {
					want := make([]float64, len(alone[s]))
					for i, v := range alone[s] {
						want[i] = float64(v)
					}
					requireLogitsClose(t, want, together[s], 1e-4)
				}
				// The adapters matter: the LoRA sequence's logits differ from the base model's.
				base, err := m.NewCache(1, 32)
				require.NoError(t, err)
				defer base.Release()
				l, err = base.Step([]model.Seq{{IDs: ids[0][:prompts[0]]}})
				require.NoError(t, err)
				require.NotEqual(t, l, together[0][:cfg.VocabSize])
			})
		}
	})
}

// paddingBackend is the CPU backend claiming costly programs, as a GPU's: steps pad prompts to
// their Bucket.
type paddingBackend struct{ *cpu.Backend }

func (b paddingBackend) Caps() engine.Caps {
	c := b.Backend.Caps()
	c.CheapPrograms = false
	return c
}

// A step's program is compiled once and reused: slots and positions are inputs. Where programs
// are costly (paddingBackend), prompts of one Bucket share one; on the CPU each prompt length
// gets its own (no padded rows), with the same logits.
func TestStepReusesPrograms(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 13})
	require.NoError(t, err)
	prompts := [][]int32{{1, 2, 3}, {1, 2, 3, 4, 5}} // one bucket
	var logits [2][][]float32
	for i, be := range []engine.Backend{cpu.New(), paddingBackend{cpu.New()}} {
		m, err := model.Load(dir, be, model.LoadOptions{})
		require.NoError(t, err)
		defer m.Release()
		c, err := m.NewCache(2, 64)
		require.NoError(t, err)
		defer c.Release()
		for slot, ids := range prompts {
			l, err := c.Step([]model.Seq{{Slot: slot, IDs: ids}})
			require.NoError(t, err)
			logits[i] = append(logits[i], l)
		}
		for pos := 3; pos < 10; pos++ {
			_, err = c.Step([]model.Seq{{Slot: 0, Pos: pos, IDs: []int32{7}}, {Slot: 1, Pos: pos + 2, IDs: []int32{8}}})
			require.NoError(t, err)
		}
		require.Equal(t, 3-i, c.Programs(), "backend %d: prefill programs (two on the CPU, one padded) and one decode program", i)
	}
	for p := range prompts {
		require.InDeltaSlice(t, logits[0][p], logits[1][p], 1e-5, "prompt %d: exact and padded widths", p)
	}
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	c, err := m.NewCache(2, 64)
	require.NoError(t, err)
	defer c.Release()
	_, err = c.Step([]model.Seq{{Slot: 0, IDs: prompts[0]}, {Slot: 1, IDs: prompts[1]}})
	require.NoError(t, err)
	for pos := 3; pos < 10; pos++ {
		_, err = c.Step([]model.Seq{{Slot: 0, Pos: pos, IDs: []int32{7}}, {Slot: 1, Pos: pos + 2, IDs: []int32{8}}})
		require.NoError(t, err)
	}
	require.Equal(t, 2, c.Programs(), "one prefill and one decode program")
	// Adapters of one recipe (one signature) share programs, whichever of them a step uses.
	var ads []*peft.Adapter
	for seed := range uint64(3) {
		a, err := peft.New(peft.LoRAConfig(), m.Cfg, m.Backend, seed)
		require.NoError(t, err)
		defer a.Release()
		ads = append(ads, a)
	}
	require.Equal(t, ads[0].Signature(), ads[1].Signature())
	for _, pair := range [][2]int{{0, 1}, {1, 2}, {2, 0}} {
		_, err = c.Step([]model.Seq{{Slot: 0, Pos: 10, IDs: []int32{7}, Adapter: ads[pair[0]]}, {Slot: 1, Pos: 12, IDs: []int32{8}, Adapter: ads[pair[1]]}})
		require.NoError(t, err)
	}
	require.Equal(t, 3, c.Programs(), "one more program for two adapters a step")
	other := peft.LoRAConfig()
	other.R = 4
	a4, err := peft.New(other, m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer a4.Release()
	require.NotEqual(t, ads[0].Signature(), a4.Signature())

	// Bad steps are errors.
	for _, seqs := range [][]model.Seq{
		nil,
		{{Slot: 2, IDs: []int32{1}}},
		{{Slot: 0, IDs: []int32{1}}, {Slot: 0, Pos: 1, IDs: []int32{1}}},
		{{Slot: 0, Pos: 63, IDs: []int32{1, 2}}},
		{{Slot: 0, Pos: 60, IDs: []int32{1, 2}}, {Slot: 1, IDs: make([]int32, 10)}}, // the first's padding would pass its slot
		{{Slot: 0, IDs: nil}},
	} {
		_, err := c.Step(seqs)
		require.Error(t, err, "%+v", seqs)
	}
	_, err = c.StepAll([]model.Seq{{Slot: 0, IDs: []int32{1}}, {Slot: 1, IDs: []int32{1, 2}}})
	require.Error(t, err, "StepAll feeds every sequence the same number of tokens")
}

// The pool of a cache with two slots serves a stream of adapter pairs: adapters of other ranks
// and layers grow it, new ones evict the least recently used, and every row gets its own
// adapter's logits (against the whole-sequence forward with the adapter's fused layers).
func TestAdapterPoolGrowsAndEvicts(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 14})
	require.NoError(t, err)
	eachBackend(t, func(t *testing.T, b engine.Backend) {
		m, err := model.Load(dir, b, model.LoadOptions{Quantize: "nf4"})
		require.NoError(t, err)
		defer m.Release()
		lora := func(r int, targets ...string) *peft.Adapter {
			cfg := peft.LoRAConfig()
			cfg.R, cfg.LoraAlpha = r, 2*float64(r)
			cfg.TargetModules = peft.Names(targets...)
			a, err := peft.New(cfg, m.Cfg, b, uint64(r))
			require.NoError(t, err)
			randomize(t, a, uint64(r))
			t.Cleanup(a.Release)
			return a
		}
		l8, l4 := lora(8, "q_proj", "v_proj"), lora(4, "q_proj", "v_proj")
		l16 := lora(16, "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
		ia3, err := peft.New(peft.IA3Config(), m.Cfg, b, 5)
		require.NoError(t, err)
		randomize(t, ia3, 5)
		defer ia3.Release()

		vocab := m.Cfg.VocabSize
		// A pool of IA3 adapters only (no LoRA rank at all), then the stream below.
		c, err := m.NewCache(2, 32)
		require.NoError(t, err)
		defer c.Release()
		for step, pair := range [][2]model.Adapter{{ia3, nil}, {l8, nil}, {l8, l4}, {l4, l16}, {ia3, l8}, {l16, ia3}, {nil, l4}} {
			ids := [][]int32{testIDs(vocab, 40)[step : step+5], testIDs(vocab, 40)[step+7 : step+11]}
			got, err := c.Step([]model.Seq{{Slot: 0, IDs: ids[0], Adapter: pair[0]}, {Slot: 1, IDs: ids[1], Adapter: pair[1]}})
			require.NoError(t, err)
			for i := range 2 {
				full, err := m.Logits(ids[i], 1, pair[i])
				require.NoError(t, err)
				want := full[len(full)-vocab:]
				w64 := make([]float64, vocab)
				for j, v := range want {
					w64[j] = float64(v)
				}
				requireLogitsClose(t, w64, got[i*vocab:(i+1)*vocab], 1e-4)
			}
		}
		// An adapter evicted and freed, then a larger rank that rebuilds the pool.
		c.Evict(l8)
		l8.Release()
		l32 := lora(32, "q_proj", "o_proj")
		ids := testIDs(vocab, 9)
		got, err := c.Step([]model.Seq{{Slot: 1, IDs: ids, Adapter: l32}, {Slot: 0, IDs: ids, Adapter: l4}})
		require.NoError(t, err)
		for i, a := range []model.Adapter{l32, l4} {
			full, err := m.Logits(ids, 1, a)
			require.NoError(t, err)
			w64 := make([]float64, vocab)
			for j, v := range full[len(full)-vocab:] {
				w64[j] = float64(v)
			}
			requireLogitsClose(t, w64, got[i*vocab:(i+1)*vocab], 1e-4)
		}
	})
}

// One step that continues one sequence's prompt (from position 5) and starts another's (from 0),
// of different lengths: each gets the logits of its whole prompt computed alone.
func TestStepContinuesAndStartsPromptsTogether(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 15})
	require.NoError(t, err)
	eachBackend(t, func(t *testing.T, b engine.Backend) {
		m, err := model.Load(dir, b, model.LoadOptions{})
		require.NoError(t, err)
		vocab := m.Cfg.VocabSize
		a := testIDs(vocab, 30)[:8]
		bb := testIDs(vocab, 30)[10:16]
		c, err := m.NewCache(2, 32)
		require.NoError(t, err)
		_, err = c.Step([]model.Seq{{Slot: 1, IDs: a[:5]}})
		require.NoError(t, err)
		got, err := c.Step([]model.Seq{{Slot: 1, Pos: 5, IDs: a[5:]}, {Slot: 0, IDs: bb}})
		require.NoError(t, err)
		for i, ids := range [][]int32{a, bb} {
			full, err := m.Logits(ids, 1, nil)
			require.NoError(t, err)
			w64 := make([]float64, vocab)
			for j, v := range full[len(full)-vocab:] {
				w64[j] = float64(v)
			}
			requireLogitsClose(t, w64, got[i*vocab:(i+1)*vocab], 1e-4)
		}
		c.Release()
		m.Release()
	})
}

// TestBucket: a prompt's width is at least its length, a multiple of 16, four widths an octave
// past 128, with padding under an eighth of the next power of two.
func TestBucket(t *testing.T) {
	for n, want := range map[int]int{1: 16, 16: 16, 17: 32, 33: 48, 70: 80, 128: 128, 129: 160, 257: 320, 1000: 1024, 1025: 1280} {
		require.Equal(t, want, model.Bucket(n), "n=%d", n)
	}
	widths := map[int]bool{}
	for n := 1; n <= 4096; n++ {
		b, p := model.Bucket(n), 16
		for p < n {
			p *= 2
		}
		require.GreaterOrEqual(t, b, n)
		require.Zero(t, b%16, "n=%d: width %d", n, b)
		require.Less(t, b-n, max(16, p/8), "n=%d: width %d", n, b)
		widths[b] = true
	}
	require.Len(t, widths, 8+4*5, "widths for prompts up to 4096 tokens")
}
