package engine

import "fmt"

// TopK keeps the K largest values of each row of x: [rows, V] f32 (K ≤ V), best first, ties by the
// lower index: out [rows, K, 2] f32 holds (value, index) pairs, the index as an f32 (exact below
// 2²⁴). Decoding reads back K candidates a row instead of the whole vocabulary: greedy is K = 1,
// and top-k sampling needs only the top k logits. NaN values are never kept (their slots, and
// those past the row's finite values, hold −inf and index −1).
type TopK struct{ K int }

func (o TopK) Name() string { return "top_k" }

func (o TopK) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	if o.K < 1 || o.K > in[0].Shape.Last() {
		return nil, fmt.Errorf("k %d is not in 1..%d", o.K, in[0].Shape.Last())
	}
	if in[0].Shape.Last() >= 1<<24 {
		return nil, fmt.Errorf("rows of %d values: indices past 2^24 are not exact in f32", in[0].Shape.Last())
	}
	return []Meta{{Shape{in[0].Shape.Rows(), o.K, 2}, F32}}, nil
}

// TopK records the top k (value, index) pairs of each row of x.
func (g *Graph) TopK(x *Node, k int) *Node { return g.Apply1(TopK{K: k}, x) }
