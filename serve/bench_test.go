package serve

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/bench"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/model/tokenizer"
	"github.com/lathe-ml/lathe/peft"
)

// BenchmarkEightAdapters serves eight requests, each with its own LoRA adapter (rank 16 on every
// linear layer), on two layers of Llama-3.2-1B's shapes with an NF4 base (vocab 8192): one after
// another, then all at once (continuous batching: shared prefill and decode steps). It reports
// the generated tokens a second over the whole run, prefill included.
//
//	go test -run '^$' -bench EightAdapters -benchtime 2x ./serve/
func BenchmarkEightAdapters(b *testing.B) {
	m, tok := benchModel(b)
	var reqs []Request
	for i := range 8 {
		cfg := peft.LoRAConfig()
		cfg.R, cfg.LoraAlpha, cfg.TargetModules = 16, 32, peft.Modules{Pattern: peft.AllLinear}
		cfg.InitLoraWeights = false
		a, err := peft.New(cfg, m.Cfg, m.Backend, uint64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		defer a.Release()
		s := DefaultSampling()
		s.MaxTokens = 32
		reqs = append(reqs, Request{Prompt: fmt.Sprintf("Story %d: once upon a time a small fox found a key.", i), Sampling: s, Adapter: a})
	}
	for _, together := range []bool{false, true} {
		name := map[bool]string{false: "one_at_a_time", true: "together"}[together]
		b.Run(name, func(b *testing.B) {
			g := &Generator{Model: m, Tok: tok, Slots: 8, Context: 256}
			defer g.Close()
			run := func() int {
				var mu sync.Mutex
				var wg sync.WaitGroup
				tokens := 0
				for _, r := range reqs {
					one := func() {
						res, err := g.Generate(context.Background(), r, nil)
						if err != nil {
							b.Error(err)
						}
						mu.Lock()
						tokens += res.Tokens
						mu.Unlock()
					}
					if !together {
						one()
						continue
					}
					wg.Add(1)
					go func() { defer wg.Done(); one() }()
				}
				wg.Wait()
				return tokens
			}
			run() // compiles the step programs
			b.ResetTimer()
			start, tokens := time.Now(), 0
			for range b.N {
				tokens += run()
			}
			b.ReportMetric(float64(tokens)/time.Since(start).Seconds(), "tokens/s")
			b.ReportMetric(float64(g.Stats().MaxBatch), "max-batch")
		})
	}
}

// BenchmarkChatTurn times the first token of a chat's next turn (its prompt repeats the previous
// turn's prompt, about 370 tokens) with the previous turn's keys and values reused,
// and prefilled again, on two layers of Llama-3.2-1B's shapes with an NF4 base.
//
//	go test -run '^$' -bench ChatTurn -benchtime 5x ./serve/
func BenchmarkChatTurn(b *testing.B) {
	m, tok := benchModel(b)
	history := strings.Repeat("the small fox found a key under the old oak tree and ran home. ", 10)
	s := DefaultSampling()
	s.MaxTokens = 4
	for _, reuse := range []bool{false, true} {
		b.Run(map[bool]string{false: "prefill_again", true: "reuse"}[reuse], func(b *testing.B) {
			g := &Generator{Model: m, Tok: tok, Slots: 1, Context: 1024, NoPrefixReuse: !reuse}
			defer g.Close()
			ttft := 0.0
			for i := range b.N + 1 {
				// The previous turn, then the next one: the history plus a new question.
				if _, err := g.Generate(context.Background(), Request{Prompt: history, Sampling: s}, nil); err != nil {
					b.Fatal(err)
				}
				res, err := g.Generate(context.Background(), Request{Prompt: history + fmt.Sprintf(" question %d?", i), Sampling: s}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if i > 0 { // the first pass compiles
					ttft += res.TimeToFirstToken
				}
			}
			b.ReportMetric(ttft/float64(b.N)*1e3, "ttft-ms")
		})
	}
}

// benchModel is two layers of Llama-3.2-1B's shapes (vocab 8192) with an NF4 base on the CPU,
// and its tokenizer, released when the benchmark ends.
func benchModel(b *testing.B) (*model.Model, *tokenizer.Tokenizer) {
	dir := b.TempDir()
	p := bench.E2E1B(16, 8192, 2).Preset // two layers of Llama-3.2-1B, as lathe bench
	if _, err := synth.Write(dir, synth.Options{Preset: p, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New(), model.LoadOptions{Quantize: "nf4"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Release)
	tok, err := tokenizer.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	return m, tok
}
