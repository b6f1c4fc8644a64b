package model

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// Logits runs the whole decoder on batch sequences of equal length, ids row-major [batch·seq],
// each from position 0 and without a cache, and returns the logits of every token, [batch·seq·vocab].
// adapter may be nil. It compiles a graph for the call: for scoring and checks; generation goes
// through a Cache.
func (m *Model) Logits(ids []int32, batch int, adapter Adapter) ([]float32, error) {
	if batch <= 0 || len(ids) == 0 || len(ids)%batch != 0 {
		return nil, fmt.Errorf("logits: %d tokens do not split into %d sequences", len(ids), batch)
	}
	seq := len(ids) / batch
	g := engine.NewGraph()
	mg := m.Declare(g)
	idn := g.Input("ids", engine.I32, engine.Shape{len(ids)})
	posn := g.Input("pos", engine.I32, engine.Shape{len(ids)})
	var lin LinearFunc
	if adapter != nil {
		lin = adapter.LinearFunc(g, nil)
	}
	out := mg.Forward(idn, posn, batch, seq, lin)
	p, err := engine.Compile(g, m.Backend, []*engine.Node{out}, engine.CompileOptions{})
	if err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	defer p.Release()
	if err := m.Bind(p); err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	if adapter != nil {
		if err := adapter.Bind(p); err != nil {
			return nil, fmt.Errorf("logits: %w", err)
		}
	}
	pos := make([]int32, len(ids))
	for i := range pos {
		pos[i] = int32(i % seq)
	}
	for node, v := range map[*engine.Node][]int32{idn: ids, posn: pos} {
		t, err := engine.FromInt32(m.Backend, engine.Shape{len(v)}, v)
		if err != nil {
			return nil, fmt.Errorf("logits: %w", err)
		}
		defer t.Release()
		if err := p.Bind(node, t); err != nil {
			return nil, fmt.Errorf("logits: %w", err)
		}
	}
	if err := p.Run(); err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	return p.Float32(out)
}
