package lathe

import (
	"fmt"

	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// EvalResult is a model's mean next-token loss on a dataset, its perplexity, and the tokens
// scored.
type EvalResult struct {
	Loss       float64 `json:"loss"`
	Perplexity float64 `json:"perplexity"`
	Tokens     int64   `json:"tokens"`
}

// Evaluate scores the model, with the loaded adapter of that name ("": the base model), on the
// JSONL dataset at path (the formats training reads), in rows of seq tokens (0: the model's
// context, at most 512).
func (lm *Model) Evaluate(path, adapter string, seq int) (EvalResult, error) {
	if err := lm.check(); err != nil {
		return EvalResult{}, err
	}
	var a *peft.Adapter
	if adapter != "" {
		ma, release, ok := lm.reg.Acquire(adapter)
		if !ok {
			return EvalResult{}, fmt.Errorf("lathe: evaluate: no adapter named %q is loaded", adapter)
		}
		defer release()
		if a, ok = ma.(*peft.Adapter); !ok {
			return EvalResult{}, fmt.Errorf("lathe: evaluate: adapter %q is not a PEFT adapter", adapter)
		}
	}
	loss, tokens, err := train.EvalDataset(lm.m, a, path, seq)
	if err != nil {
		return EvalResult{}, err
	}
	return EvalResult{Loss: loss, Perplexity: train.Perplexity(loss), Tokens: tokens}, nil
}
