package enginetest

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/engine"
)

// ErrorCase is a launch that is well formed (its shapes fit) but whose values are bad: every
// backend must report it as an error, from Run or, when it runs asynchronously, from the next
// Read.
type ErrorCase struct {
	Name  string
	Build func(b *builder) []*engine.Node
}

// ErrorCases are the bad launches of error parity: indices outside what they index.
func ErrorCases() []ErrorCase {
	return []ErrorCase{
		{"cache_write/row_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.CacheWrite(b.f32(engine.Shape{4, 3}, 1), b.f32(engine.Shape{3, 3}, 1), b.i32([]int32{2, 4, 1}))}
		}},
		{"cache_write/row_negative", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.CacheWrite(b.f32(engine.Shape{4, 3}, 1), b.f32(engine.Shape{3, 3}, 1), b.i32([]int32{-1, 0, 1}))}
		}},
		{"cache_attention/row_past_end", func(b *builder) []*engine.Node {
			// A decode step: keys and values written at the queries' rows, then attention from them.
			a := engine.Attention{Batch: 2, QLen: 1, KVLen: 4, Heads: 2, KVHeads: 1, HeadDim: 4, Scale: 0.5, KVStride: 4}
			return cachedAttention(b, []int32{1, 8}, 8, 4, a)
		}},
		{"embedding/id_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Embedding(b.f32(engine.Shape{7, 5}, 1), b.i32([]int32{1, 7, 2}))}
		}},
		{"embedding/id_negative", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Embedding(b.f32(engine.Shape{7, 5}, 1), b.i32([]int32{1, -3, 2}))}
		}},
		{"gather/id_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Gather(b.f32(engine.Shape{7, 5}, 1), b.i32([]int32{-1, 7, 2}), 1)}
		}},
		{"embedding_backward/id_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Apply1(engine.EmbeddingBackward{Vocab: 7}, b.f32(engine.Shape{3, 5}, 1), b.i32([]int32{1, 9, 2}))}
		}},
		{"cross_entropy/target_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.CrossEntropy(b.f32(engine.Shape{3, 7}, 1), b.i32([]int32{1, 7, -100}), -100)}
		}},
		{"cross_entropy_backward/target_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Apply1(engine.CrossEntropyBackward{Ignore: -100}, b.pos(engine.Shape{1}, 0.5, 1), b.f32(engine.Shape{3, 7}, 1), b.i32([]int32{1, 8, -100}))}
		}},
		{"gather_lora/slot_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.GatherLoRA(b.f32(engine.Shape{3, 5}, 1), b.f32(engine.Shape{3, 4}, 1), b.i32([]int32{0, 2, -1}), b.f32(engine.Shape{2 * 2, 4}, 1), b.f32(engine.Shape{2 * 5, 2}, 1), 2)}
		}},
		{"gather_scale_cols/slot_past_end", func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.GatherScaleCols(b.f32(engine.Shape{3, 4}, 1), b.i32([]int32{0, 2, -1}), b.f32(engine.Shape{2, 4}, 1))}
		}},
	}
}

// VerifyError runs an ErrorCase on b and returns an error unless b reported the bad launch.
func VerifyError(c ErrorCase, be engine.Backend) error {
	g := engine.NewGraph()
	b := &builder{g: g, r: rand.New(rand.NewPCG(Seed(c.Name), 0xe44))}
	outs := c.Build(b)
	if err := g.Err(); err != nil {
		return fmt.Errorf("%s: build: %w", c.Name, err)
	}
	p, free, err := prepare(be, g, b.leaves, outs)
	if err != nil {
		return fmt.Errorf("%s: the launch must compile (only its values are bad): %w", c.Name, err)
	}
	defer free()
	if err := p.Run(); err != nil {
		return nil
	}
	if _, err := readAll(be, p, outs); err != nil {
		return nil
	}
	return fmt.Errorf("%s: %s ran a bad launch without an error", c.Name, be.Device().Backend)
}

// VerifyInPlace runs AdamWStep as a step program launches it, outputs over its operands' buffers
// (a kernel must bind each buffer once), and compares with ref.
func VerifyInPlace(b, ref engine.Backend) error {
	const n = 301
	op := engine.AdamWStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}
	r := rand.New(rand.NewPCG(Seed("adamw_in_place"), 1))
	vals := make([][]float32, 4)
	for k := range vals {
		vals[k] = make([]float32, n)
		for i := range vals[k] {
			vals[k][i] = float32(r.NormFloat64())
			if k == 3 {
				vals[k][i] = float32(r.Float64()+0.1) * 1e-3 // v > 0
			}
		}
	}
	var status [engine.StatusLen]float32
	status[engine.StatusCoef] = 0.7 // clipped
	var ctl [engine.CtlLen]float32
	ctl[engine.CtlLR], ctl[engine.CtlStep] = 1e-2, 5
	vals = append(vals, status[:], ctl[:])
	var res [2][][]float32
	for bi, be := range []engine.Backend{b, ref} {
		args := make([]engine.Arg, len(vals))
		ts := make([]*engine.Tensor, len(vals))
		metas := make([]engine.Meta, len(vals))
		for k := range ts {
			metas[k] = engine.Meta{Shape: engine.Shape{len(vals[k])}, DType: engine.F32}
			x, err := engine.FromFloat32(be, metas[k].Shape, vals[k])
			if err != nil {
				return err
			}
			defer x.Release()
			ts[k] = x
			args[k] = engine.Arg{Buf: x.Buffer(), Meta: metas[k]}
		}
		if err := be.Supports(op, metas); err != nil {
			return err
		}
		if err := be.Run([]engine.Launch{{Op: op, In: args, Out: []engine.Arg{args[0], args[2], args[3]}}}); err != nil {
			return fmt.Errorf("adamw_step in place on %s: %w", be.Device().Backend, err)
		}
		for _, k := range []int{0, 2, 3} {
			v, err := ts[k].Float32()
			if err != nil {
				return err
			}
			res[bi] = append(res[bi], v)
		}
	}
	for k := range res[0] {
		if err := Compare(res[1][k], res[0][k], 1e-5); err != nil {
			return fmt.Errorf("adamw_step in place, output %d: %w", k, err)
		}
	}
	for k, v := range res[1] {
		if k := []int{0, 2, 3}[k]; slices.Equal(v, vals[k]) {
			return fmt.Errorf("adamw_step in place: operand %d unchanged", k)
		}
	}
	return nil
}
