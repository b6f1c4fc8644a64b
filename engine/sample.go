package engine

import (
	"fmt"
	"math"
)

// TopK keeps the K largest values of each row of x: [rows, V] f32 (K ≤ V), best first, ties by the
// lower index: out [rows, K, 2] f32 holds (value, index) pairs, the index as an f32 (exact below
// 2²⁴). Decoding reads back K candidates a row instead of the whole vocabulary: greedy is K = 1,
// and top-k sampling needs only the top k logits. NaN values are never kept (their slots, and
// those past the row's finite values, hold −inf and index −1).
//
// With Sample, a second operand ctl: i32 [rows, SampleCtlWords] steers each row for sampling (see
// SampleInvTemp): a Gumbel row ranks its values by the score value·(1/T) + GumbelNoise (the pairs
// still hold the values), so that its first pair is a draw from softmax(x/T); and every row ends
// with one more pair, (mass, 0), mass = Σ exp((x − max x)·(1/T)) over the row's non-NaN values
// (out [rows, K+1, 2]): what top-p needs to know whether its nucleus lies inside the K.
type TopK struct {
	K      int
	Sample bool
}

func (o TopK) Name() string { return "top_k" }

func (o TopK) Infer(in []Meta) ([]Meta, error) {
	n := 1
	if o.Sample {
		n = 2
	}
	if err := wantN(in, n); err != nil {
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
	if !o.Sample {
		return []Meta{{Shape{in[0].Shape.Rows(), o.K, 2}, F32}}, nil
	}
	if in[1].DType != I32 || !in[1].Shape.Equal(Shape{in[0].Shape.Rows(), SampleCtlWords}) {
		return nil, fmt.Errorf("ctl must be i32 [%d %d], got %s", in[0].Shape.Rows(), SampleCtlWords, in[1])
	}
	return []Meta{{Shape{in[0].Shape.Rows(), o.K + 1, 2}, F32}}, nil
}

// TopK records the top k (value, index) pairs of each row of x.
func (g *Graph) TopK(x *Node, k int) *Node { return g.Apply1(TopK{K: k}, x) }

// SampleTopK records TopK with Sample: ctl is i32 [rows, SampleCtlWords].
func (g *Graph) SampleTopK(x, ctl *Node, k int) *Node {
	return g.Apply1(TopK{K: k, Sample: true}, x, ctl)
}

// The words of a row of TopK's sampling control (ctl).
const (
	// SampleInvTemp holds the bits of the f32 1/T: the temperature of the row's mass and of its
	// Gumbel score.
	SampleInvTemp = iota
	// SampleGumbel is non-zero for a row ranked by its Gumbel score.
	SampleGumbel
	// SampleKey0 and SampleKey1 are the keys of the row's draw (GumbelNoise).
	SampleKey0
	SampleKey1
	// SampleCtlWords is the number of words a row.
	SampleCtlWords
)

// Hash32 is lowbias32, a 32-bit integer mix: the counter-based hash behind dropout masks and
// Gumbel noise, computed bit for bit the same in Go and in every kernel.
func Hash32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	h *= 0x846ca68b
	h ^= h >> 16
	return h
}

// GumbelBits is the 23-bit uniform integer behind token i's Gumbel noise under a draw's keys.
func GumbelBits(k0, k1, i uint32) uint32 { return Hash32(Hash32(i*0x9E3779B9^k0)^k1) >> 9 }

// GumbelNoise is token i's Gumbel(0, 1) noise under the draw's keys, −log(−log U) with U =
// (GumbelBits + ½)/2²³ (never 0 or 1), in float64. The token whose value/T + noise is the largest
// is a draw from softmax(values/T) (the Gumbel-max trick): sampling needs one maximum, not the
// row's sum. Kernels compute it in f32 within GumbelTol.
func GumbelNoise(k0, k1, i uint32) float64 {
	m := GumbelBits(k0, k1, i)
	d := (float64(1<<23-m) - 0.5) / (1 << 23) // 1 − U, exact
	return -math.Log(-math.Log1p(-d))
}

// GumbelTol bounds how far a kernel's f32 Gumbel score of a token, value·(1/T) + noise, may lie
// from the float64 one when |value·(1/T)| ≤ mag: the rounding of the product and the sum, and the
// noise's own error (about 10⁻⁶; kernels compute logarithms from + − × ÷ alone, with a known
// accuracy, because a device's log() is only loosely specified).
func GumbelTol(mag float64) float64 { return 1e-6*mag + 1e-4 }

// MassTol bounds the relative error of a kernel's f32 TopK mass (an f32 sum of f32 exponentials).
const MassTol = 1e-3
