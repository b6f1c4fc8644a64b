package bench

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// E2ESizes describe the synthetic checkpoint and the generation measured end to end.
type E2ESizes struct {
	Preset synth.Preset
	// Label says what the checkpoint stands for ("Llama-3.2-1B layer shapes, 2 layers").
	Label        string
	Layers       int
	PromptTokens int
	DecodeTokens int
	// Repeats is how many times time-to-first-token is measured (a fresh cache each time).
	Repeats int
	// Weights lists the weight formats loaded: "f32", "nf4" (its generation head bf16, the
	// default), "nf4/head-nf4" (the head NF4 too, as an exported Q4_0 GGUF has its output Q4_0;
	// batch 1 only), "nf4/head-nf4/bf16" (that, its products in bfloat16: model.LoadOptions.Compute;
	// batch 1), "nf4/head-nf4/i8" (that with 8-bit products allowed; batch 1, on a CPU with
	// AVX512_VNNI), "nf4/bf16" ("nf4" with bfloat16 products, every batch); the bfloat16 and
	// 8-bit runs on the CPU only, where the allowance changes the kernels.
	Weights []string
	// Batches lists the numbers of sequences decoded in lockstep (default 1 and 8).
	Batches []int
	// Adapters, if positive, adds for each batch over 1 a run in which the sequences use that
	// many different LoRA adapters (rank 16 on every linear layer) in the same steps.
	Adapters int
}

// E2E1B is a checkpoint with Llama-3.2-1B's layer shapes but only layers layers and the given
// vocabulary (the real 128256-entry one would make the output projection dominate).
func E2E1B(prompt, vocab, layers int) E2ESizes {
	m := Models[1]
	return E2ESizes{
		Preset: synth.Preset{Name: "llama-3.2-1b-shaped", Vocab: vocab, Hidden: m.Hidden, Intermediate: m.Intermediate,
			Layers: layers, Heads: m.Heads, KVHeads: m.KVHeads, MaxPos: 4096, Tied: true},
		Label:  fmt.Sprintf("%s layer shapes, %d layers, vocab %d (synthetic)", m.Name, layers, vocab),
		Layers: layers, PromptTokens: prompt, DecodeTokens: 32, Repeats: 3, Weights: []string{"f32", "nf4", nf4BF16, nf4Head4, nf4Head4BF16, nf4Head4I8}, Adapters: 8,
	}
}

// nf4Head4 is the weight format of NF4 linear layers with an NF4 output layer for decoding
// (model.LoadOptions.Head "nf4"): the bytes of llama.cpp's Q4_0 file as lathe exports it.
const nf4Head4 = "nf4/head-nf4"

// nf4Head4BF16 is nf4Head4 with bfloat16 products (model.LoadOptions.Compute "bf16"), and
// nf4BF16 the default NF4 load (its head bf16) with them.
const (
	nf4Head4BF16 = nf4Head4 + "/bf16"
	nf4BF16      = "nf4/bf16"
)

// nf4Head4I8 is nf4Head4 with 8-bit products allowed (model.LoadOptions.Compute "i8").
const nf4Head4I8 = nf4Head4 + "/i8"

// qwen3Vocab is Qwen3's vocabulary size.
const qwen3Vocab = 151936

// Qwen3Train is a checkpoint with Qwen3-1.7B's shapes (hidden 2048, MLP 6144, 16 heads of 128, 8
// KV heads, tied embeddings; 28 layers in the real model) in lathe's Llama architecture (no QK
// norm), with layers layers and vocabulary vocab: QVAC Fabric's published training shape, which
// runTrain times at context 128.
func Qwen3Train(layers, vocab int) E2ESizes {
	p := synth.Preset{Name: "qwen3-1.7b-shaped", Vocab: vocab, Hidden: 2048, Intermediate: 6144, Layers: layers, Heads: 16, KVHeads: 8, MaxPos: 4096, Tied: true}
	return E2ESizes{Preset: p, Label: fmt.Sprintf("Qwen3-1.7B layer shapes (Llama architecture, no QK norm), %d of 28 layers, vocab %d (synthetic)", layers, vocab), Layers: layers}
}

// E2ETiny is synth's tiny preset, for software adapters.
func E2ETiny() E2ESizes {
	p := synth.Presets["tiny"]
	return E2ESizes{Preset: p, Label: fmt.Sprintf("synth tiny (hidden %d, %d layers, vocab %d)", p.Hidden, p.Layers, p.Vocab),
		Layers: p.Layers, PromptTokens: 16, DecodeTokens: 8, Repeats: 2, Weights: []string{"f32", "nf4"}, Adapters: 4}
}

// runE2E writes the synthetic checkpoint and measures prompt processing (time to first token) and
// decoding through Model.Step with the KV cache, once per weight format. after, when not nil, runs
// on the checkpoint folder and the results before the folder is removed (the llama.cpp reference).
func runE2E(be engine.Backend, s E2ESizes, log io.Writer, after func(dir string, res []E2EResult)) []E2EResult {
	dir, err := os.MkdirTemp("", "lathe-bench-e2e-")
	if err != nil {
		return []E2EResult{{Name: "decode", Model: s.Label, Err: err.Error()}}
	}
	defer os.RemoveAll(dir)
	if _, err := synth.Write(dir, synth.Options{Preset: s.Preset, Seed: 1}); err != nil {
		return []E2EResult{{Name: "decode", Model: s.Label, Err: err.Error()}}
	}
	var out []E2EResult
	batches := s.Batches
	if len(batches) == 0 {
		batches = []int{1, 8}
	}
	for _, w := range s.Weights {
		for _, b := range batches {
			if (w == nf4Head4 || w == nf4Head4BF16 || w == nf4Head4I8) && b != 1 {
				continue
			}
			if (w == nf4Head4BF16 || w == nf4BF16 || w == nf4Head4I8) && be.Device().Backend != "cpu" {
				continue // GPU backends compute in f32 or f16 whatever the allowance
			}
			if w == nf4Head4I8 && !gemm.HasI8() {
				continue // without AVX512_VNNI it is the bfloat16 run again
			}
			adapters := []int{0}
			if b > 1 && s.Adapters > 0 {
				adapters = append(adapters, min(s.Adapters, b))
			}
			for _, a := range adapters {
				r := e2eOne(be, dir, s, w, b, a)
				if r.Err != "" {
					fmt.Fprintf(log, "  e2e %-4s batch %d adapters %d error: %s\n", w, b, a, r.Err)
				} else {
					fmt.Fprintf(log, "  e2e %-4s batch %d adapters %d TTFT %s (%d tokens), decode %.2f tokens/s, %g submissions, %g reads (%.0f B) a step\n", w, b, a, fmtDur(r.TTFT.Median), r.PromptTokens, r.TokensPerSec, r.Submissions, r.Reads, r.ReadBytes)
				}
				out = append(out, r)
			}
		}
	}
	if after != nil {
		after(dir, out)
	}
	return out
}

// e2eOne measures batch sequences of the same prompt decoded in lockstep, sequence b with LoRA
// adapter b mod adapters (none when adapters is 0).
func e2eOne(be engine.Backend, dir string, s E2ESizes, weights string, batch, adapters int) E2EResult {
	r := E2EResult{Name: fmt.Sprintf("generate_%s_b%d", weights, batch), Model: s.Label, Weights: weights, Batch: batch,
		Adapters: adapters, PromptTokens: s.PromptTokens, DecodeTokens: s.DecodeTokens}
	if adapters > 0 {
		r.Name += fmt.Sprintf("_lora%d", adapters)
	}
	lo := model.LoadOptions{Head: model.HeadAuto}
	switch weights {
	case "nf4":
		lo.Quantize = "nf4"
	case nf4Head4:
		lo.Quantize, lo.Head = "nf4", "nf4"
	case nf4Head4BF16:
		lo.Quantize, lo.Head, lo.Compute = "nf4", "nf4", "bf16"
	case nf4BF16:
		lo.Quantize, lo.Compute = "nf4", "bf16"
	case nf4Head4I8:
		lo.Quantize, lo.Head, lo.Compute = "nf4", "nf4", "i8"
	}
	cb := engine.NewCounting(be)
	be = cb
	m, err := model.Load(dir, be, lo)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer m.Release()
	r.WeightBytes = m.WeightBytes()
	var loras []model.Adapter
	for i := range adapters {
		cfg := peft.LoRAConfig()
		cfg.R, cfg.LoraAlpha, cfg.TargetModules = 16, 32, peft.Modules{Pattern: peft.AllLinear}
		cfg.InitLoraWeights = false // B non-zero, as after training
		a, err := peft.New(cfg, m.Cfg, be, uint64(i+1))
		if err != nil {
			r.Err = err.Error()
			return r
		}
		defer a.Release()
		loras = append(loras, a)
	}
	adapterOf := func(b int) model.Adapter {
		if adapters == 0 {
			return nil
		}
		return loras[b%adapters]
	}
	prompt := make([]int32, batch*s.PromptTokens)
	for i := range prompt {
		prompt[i] = int32(3 + (i%s.PromptTokens)%(s.Preset.Vocab-3))
	}
	vocab := s.Preset.Vocab
	// lastTokens picks each sequence's next token from the logits of its last position.
	lastTokens := func(logits []float32) []int32 {
		next := make([]int32, batch)
		for b := range next {
			next[b] = argmax(logits[b*vocab : (b+1)*vocab])
		}
		return next
	}
	ctxLen := s.PromptTokens + s.DecodeTokens
	// One cache for every repeat, as a server keeps one: its step programs are compiled in the
	// warm-up pass and reused after.
	c, err := m.NewCache(batch, ctxLen)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c.Release()
	seqs := make([]model.Seq, batch)
	var ttft, tok []float64
	for rep := 0; rep < max(s.Repeats, 1)+1; rep++ { // the first pass warms up
		for b := range seqs {
			seqs[b] = model.Seq{Slot: b, IDs: prompt[b*s.PromptTokens : (b+1)*s.PromptTokens], Adapter: adapterOf(b)}
		}
		t0 := time.Now()
		logits, err := c.Step(seqs)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		if rep > 0 {
			ttft = append(ttft, time.Since(t0).Seconds())
		}
		next := lastTokens(logits)
		// Decode on the warm-up pass (compiling) and the last repeat: its per-token times are
		// the samples.
		if rep == 0 || rep == max(s.Repeats, 1) {
			start := cb.Counts()
			for i := range s.DecodeTokens {
				for b := range seqs {
					seqs[b] = model.Seq{Slot: b, Pos: s.PromptTokens + i, IDs: next[b : b+1], Adapter: adapterOf(b)}
				}
				// Greedy on the device, as the server decodes greedy requests: the top
				// candidate of each sequence comes back, not its logits.
				t0 := time.Now()
				cand, err := c.StepTopK(seqs, 1)
				if err != nil {
					r.Err = err.Error()
					return r
				}
				if rep > 0 {
					tok = append(tok, time.Since(t0).Seconds())
				}
				r.Launches = c.Launches()
				for b := range next {
					next[b] = int32(cand[2*b+1])
				}
			}
			if d := cb.Counts().Sub(start); s.DecodeTokens > 0 {
				r.Submissions, r.Reads = float64(d.Submissions)/float64(s.DecodeTokens), float64(d.Reads)/float64(s.DecodeTokens)
				r.ReadBytes = float64(d.ReadBytes) / float64(s.DecodeTokens)
			}
		}
	}
	if r.TTFT, err = Summarize(ttft); err != nil {
		r.Err = err.Error()
		return r
	}
	if len(tok) > 0 {
		if r.TokenTime, err = Summarize(tok); err != nil {
			r.Err = err.Error()
			return r
		}
		r.TokensPerSec = float64(batch) / r.TokenTime.Median
	}
	return r
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}
