package model

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// Adapter is what inference needs of an adapter (peft.Adapter satisfies it): the linear layers it
// wraps and the binding of its parameters.
type Adapter interface {
	LinearFunc(g *engine.Graph, dropoutSeed *engine.Node) LinearFunc
	Bind(p *engine.Program) error
}

// Cache is the key/value cache of Batch sequences decoded in lockstep, on the model's backend.
type Cache struct {
	K, V   []*engine.Tensor
	MaxLen int
	Batch  int
	// Len is the number of positions cached so far (in every sequence).
	Len int
}

// NewCache allocates a cache for one sequence of up to maxLen tokens.
func (m *Model) NewCache(maxLen int) (*Cache, error) { return m.NewBatchCache(1, maxLen) }

// NewBatchCache allocates a cache for batch sequences of up to maxLen tokens each.
func (m *Model) NewBatchCache(batch, maxLen int) (*Cache, error) {
	if maxLen <= 0 || batch <= 0 {
		return nil, fmt.Errorf("cache: batch %d and length %d must be positive", batch, maxLen)
	}
	c := &Cache{MaxLen: maxLen, Batch: batch}
	kv := engine.Shape{batch * maxLen, m.Cfg.NumKVHeads * m.Cfg.HeadDim}
	for range m.Cfg.NumLayers {
		k, err := engine.NewTensor(m.Backend, engine.F32, kv)
		if err != nil {
			c.Release()
			return nil, fmt.Errorf("cache: %w", err)
		}
		v, err := engine.NewTensor(m.Backend, engine.F32, kv)
		if err != nil {
			k.Release()
			c.Release()
			return nil, fmt.Errorf("cache: %w", err)
		}
		c.K, c.V = append(c.K, k), append(c.V, v)
	}
	return c, nil
}

// Release frees the cache.
func (c *Cache) Release() {
	for _, t := range append(c.K, c.V...) {
		t.Release()
	}
	c.K, c.V = nil, nil
}

// Step feeds ids (the prompt, then one token at a time; with a batch cache, [Batch, n] row-major:
// the same number of tokens for every sequence) at the cache's next positions, appends their keys
// and values, and returns the logits of every fed token, [len(ids)·vocab]. adapter may be nil.
func (m *Model) Step(c *Cache, ids []int32, adapter Adapter) ([]float32, error) {
	if len(ids) == 0 || len(ids)%c.Batch != 0 {
		return nil, fmt.Errorf("step: %d tokens for %d sequences", len(ids), c.Batch)
	}
	n := len(ids) / c.Batch
	if c.Len+n > c.MaxLen {
		return nil, fmt.Errorf("step: %d cached + %d new tokens exceed the cache's %d", c.Len, n, c.MaxLen)
	}
	g := engine.NewGraph()
	mg := m.Declare(g)
	idn := g.Input("ids", engine.I32, engine.Shape{len(ids)})
	posn := g.Input("pos", engine.I32, engine.Shape{len(ids)})
	kv := &KVCache{Offset: c.Len}
	shape := c.K[0].Shape()
	for l := range m.Cfg.NumLayers {
		kv.K = append(kv.K, g.Input(fmt.Sprintf("cache.%d.k", l), engine.F32, shape))
		kv.V = append(kv.V, g.Input(fmt.Sprintf("cache.%d.v", l), engine.F32, shape))
	}
	var lin LinearFunc
	if adapter != nil {
		lin = adapter.LinearFunc(g, nil)
	}
	logits := mg.ForwardCached(idn, posn, c.Batch, n, lin, kv)
	p, err := engine.Compile(g, m.Backend, []*engine.Node{logits}, engine.CompileOptions{})
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	defer p.Release()
	if err := m.Bind(p); err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	if adapter != nil {
		if err := adapter.Bind(p); err != nil {
			return nil, fmt.Errorf("step: %w", err)
		}
	}
	for l := range m.Cfg.NumLayers {
		if err := p.Bind(kv.K[l], c.K[l]); err != nil {
			return nil, err
		}
		if err := p.Bind(kv.V[l], c.V[l]); err != nil {
			return nil, err
		}
	}
	pos := make([]int32, len(ids))
	for i := range pos {
		pos[i] = int32(c.Len + i%n)
	}
	for node, v := range map[*engine.Node][]int32{idn: ids, posn: pos} {
		t, err := engine.FromInt32(m.Backend, engine.Shape{len(v)}, v)
		if err != nil {
			return nil, fmt.Errorf("step: %w", err)
		}
		defer t.Release()
		if err := p.Bind(node, t); err != nil {
			return nil, err
		}
	}
	if err := p.Run(); err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	out, err := p.Float32(logits)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	c.Len += n
	return out, nil
}
