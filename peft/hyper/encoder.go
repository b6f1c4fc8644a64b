package hyper

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// Encoder embeds a task description as a vector of Dim values: a sentence encoder, or the base
// model itself (ModelEncoder).
type Encoder interface {
	Encode(text string) ([]float32, error)
	Dim() int
	// Name says which encoder made the vectors (saved in the hypernetwork's config, so that
	// generation uses the same one).
	Name() string
}

// ModelEncoder embeds a text with a frozen decoder: the mean over the text's tokens of its last
// hidden states (after the final norm), with no adapter.
type ModelEncoder struct {
	Model *model.Model
	Tok   *tokenizer.Tokenizer
}

// NewModelEncoder loads m's tokenizer from its folder.
func NewModelEncoder(m *model.Model) (*ModelEncoder, error) {
	tok, err := tokenizer.Load(m.Dir)
	if err != nil {
		return nil, fmt.Errorf("hyper: the task encoder needs the model's tokenizer: %w", err)
	}
	return &ModelEncoder{Model: m, Tok: tok}, nil
}

// Dim is the model's hidden size.
func (e *ModelEncoder) Dim() int { return e.Model.Cfg.HiddenSize }

// Name is "base-model-mean-pool".
func (e *ModelEncoder) Name() string { return "base-model-mean-pool" }

// Encode tokenizes text (with the tokenizer's special tokens), keeps at most the model's context,
// and returns the mean of the last hidden states.
func (e *ModelEncoder) Encode(text string) ([]float32, error) {
	ids, err := e.Tok.Encode(text, true)
	if err != nil {
		return nil, fmt.Errorf("hyper: encode task: %w", err)
	}
	if limit := e.Model.Cfg.MaxPositionEmbeddings; limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("hyper: the task description %q has no token", text)
	}
	n := len(ids)
	g := engine.NewGraph()
	idsN := g.Input("enc.ids", engine.I32, engine.Shape{n})
	posN := g.Input("enc.pos", engine.I32, engine.Shape{n})
	h := e.Model.Declare(g).ForwardHidden(idsN, posN, 1, n, nil)
	p, err := engine.Compile(g, e.Model.Backend, []*engine.Node{h}, engine.CompileOptions{})
	if err != nil {
		return nil, fmt.Errorf("hyper: encode task: %w", err)
	}
	defer p.Release()
	if err := e.Model.Bind(p); err != nil {
		return nil, fmt.Errorf("hyper: encode task: %w", err)
	}
	ids32, pos32 := make([]int32, n), make([]int32, n)
	for i, id := range ids {
		ids32[i], pos32[i] = int32(id), int32(i)
	}
	for _, in := range []struct {
		node *engine.Node
		v    []int32
	}{{idsN, ids32}, {posN, pos32}} {
		t, err := engine.FromInt32(e.Model.Backend, engine.Shape{n}, in.v)
		if err != nil {
			return nil, fmt.Errorf("hyper: encode task: %w", err)
		}
		defer t.Release()
		if err := p.Bind(in.node, t); err != nil {
			return nil, fmt.Errorf("hyper: encode task: %w", err)
		}
	}
	if err := p.Run(); err != nil {
		return nil, fmt.Errorf("hyper: encode task: %w", err)
	}
	hs, err := p.Float32(h)
	if err != nil {
		return nil, fmt.Errorf("hyper: encode task: %w", err)
	}
	d := e.Dim()
	out := make([]float32, d)
	for i := range n {
		for j := range d {
			out[j] += hs[i*d+j]
		}
	}
	for j := range out {
		out[j] /= float32(n)
	}
	return out, nil
}
