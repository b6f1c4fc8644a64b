package lathe

import (
	"context"
	"fmt"
	"iter"

	"github.com/lathe-ml/lathe/model/tokenizer"
	"github.com/lathe-ml/lathe/serve"
)

// Sampling holds the decoding parameters: temperature, top-k, top-p, penalties, seed, the most
// tokens and stop strings.
type Sampling = serve.Sampling

// DefaultSampling is greedy decoding of up to 128 tokens.
func DefaultSampling() Sampling { return serve.DefaultSampling() }

// Message is one turn of a chat.
type Message = tokenizer.Message

// Result is what a generation produced: the text, token counts, why it finished and its speed.
type Result = serve.Result

// Request is one generation.
type Request struct {
	// Prompt is the text to continue; empty starts from the beginning-of-text token.
	Prompt string
	// Messages, if set, is a chat rendered through the model's chat template (Prompt is not read).
	Messages []Message
	// Adapter names a loaded adapter (LoadAdapter, CombineAdapters); "" is the base model.
	Adapter string
	// Sampling is nil for DefaultSampling.
	Sampling *Sampling
}

// Generate runs a generation to its end. onText, if not nil, receives the text as it is produced
// (an error it returns stops the generation). Generations from several goroutines are batched
// together on the device.
func (lm *Model) Generate(ctx context.Context, r Request, onText func(string) error) (Result, error) {
	if err := lm.check(); err != nil {
		return Result{}, err
	}
	if lm.gen == nil {
		return Result{}, fmt.Errorf("lathe: generate: %w", lm.tokErr)
	}
	req, err := r.serveRequest()
	if err != nil {
		return Result{}, fmt.Errorf("lathe: generate: %w", err)
	}
	if r.Adapter != "" {
		a, release, ok := lm.reg.Acquire(r.Adapter)
		if !ok {
			return Result{}, fmt.Errorf("lathe: generate: no adapter named %q is loaded", r.Adapter)
		}
		defer release()
		req.Adapter = a
	}
	return lm.gen.Generate(ctx, req, onText)
}

// Stream is Generate as an iterator over the pieces of text as they are produced. A failed
// generation yields its error last (with an empty piece); breaking out of the loop stops it.
func (lm *Model) Stream(ctx context.Context, r Request) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		stopped := false
		_, err := lm.Generate(ctx, r, func(piece string) error {
			if !yield(piece, nil) {
				stopped = true
				return errStop
			}
			return nil
		})
		if err != nil && !stopped {
			yield("", err)
		}
	}
}

// errStop ends a generation whose stream's reader stopped reading.
var errStop = fmt.Errorf("lathe: the stream's reader stopped")

// serveRequest is r for serve, less the adapter.
func (r Request) serveRequest() (serve.Request, error) {
	req := serve.Request{Prompt: r.Prompt, Messages: r.Messages, Sampling: DefaultSampling()}
	if r.Sampling != nil {
		req.Sampling = *r.Sampling
	}
	return req, req.Sampling.Validate()
}
