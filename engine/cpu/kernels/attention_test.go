package kernels

import (
	"fmt"
	"math"
	"testing"
)

type attnShape struct {
	batch, qLen, kvLen, heads, kvHeads, headDim int
	docs                                        bool // packed documents (starts)
}

func (s attnShape) String() string {
	d := ""
	if s.docs {
		d = "_docs"
	}
	return fmt.Sprintf("b%d_q%d_kv%d_h%d_kvh%d_d%d%s", s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, d)
}

// starts packs documents of varied lengths (1 to 4 keys, differing per sequence) into each
// sequence and returns every query's document start, nil unless s.docs.
func (s attnShape) starts() []int32 {
	if !s.docs {
		return nil
	}
	st := make([]int32, s.batch*s.qLen)
	for b := 0; b < s.batch; b++ {
		docStart := make([]int32, s.kvLen)
		cur, left := 0, 0
		for j := 0; j < s.kvLen; j++ {
			if left == 0 {
				cur, left = j, 1+(j*5+b*3)%4
			}
			docStart[j] = int32(cur)
			left--
		}
		for i := 0; i < s.qLen; i++ {
			st[b*s.qLen+i] = docStart[s.kvLen-s.qLen+i]
		}
	}
	return st
}

// The shapes: GQA with 3 and 2 query heads per kv head, plain multi-head, causal training
// (qLen == kvLen), a chunk against a cache (qLen < kvLen) and one-token decoding; then packed
// documents (causal within each) in training and against a cache.
var attnShapes = []attnShape{
	{2, 5, 9, 6, 2, 10, false},
	{2, 7, 7, 6, 3, 6, false},
	{2, 5, 9, 6, 3, 6, false},
	{1, 4, 4, 3, 3, 10, false},
	{2, 1, 9, 6, 2, 6, false},
	{2, 7, 7, 6, 3, 6, true},
	{2, 5, 9, 6, 2, 10, true},
	{1, 11, 11, 4, 2, 5, true},
}

// refAttention is attention written out: every score, the causal mask as −Inf, softmax, then the
// weighted sum of values; lse = log Σ exp(score) over the visible keys. With documents, keys
// before the query's document start are masked as well.
func refAttention(q, k, v []float64, s attnShape, scale float64) (out, lse []float64) {
	starts := s.starts()
	out = make([]float64, s.batch*s.qLen*s.heads*s.headDim)
	lse = make([]float64, s.batch*s.heads*s.qLen)
	qAt := func(b, i, h, d int) float64 { return q[((b*s.qLen+i)*s.heads+h)*s.headDim+d] }
	kvAt := func(x []float64, b, j, h, d int) float64 { return x[((b*s.kvLen+j)*s.kvHeads+h)*s.headDim+d] }
	for b := 0; b < s.batch; b++ {
		for h := 0; h < s.heads; h++ {
			kvh := h / (s.heads / s.kvHeads)
			for i := 0; i < s.qLen; i++ {
				score := make([]float64, s.kvLen)
				for j := 0; j < s.kvLen; j++ {
					if j > s.kvLen-s.qLen+i || (starts != nil && j < int(starts[b*s.qLen+i])) {
						score[j] = math.Inf(-1)
						continue
					}
					for d := 0; d < s.headDim; d++ {
						score[j] += qAt(b, i, h, d) * kvAt(k, b, j, kvh, d)
					}
					score[j] *= scale
				}
				m := math.Inf(-1)
				for _, x := range score {
					m = math.Max(m, x)
				}
				sum := 0.0
				for _, x := range score {
					sum += math.Exp(x - m)
				}
				lse[(b*s.heads+h)*s.qLen+i] = m + math.Log(sum)
				for j := 0; j < s.kvLen; j++ {
					p := math.Exp(score[j]-m) / sum
					for d := 0; d < s.headDim; d++ {
						out[((b*s.qLen+i)*s.heads+h)*s.headDim+d] += p * kvAt(v, b, j, kvh, d)
					}
				}
			}
		}
	}
	return out, lse
}

func TestAttention(t *testing.T) {
	for n, s := range attnShapes {
		t.Run(s.String(), func(t *testing.T) {
			r := newRand(uint64(10 + n))
			q := randn(r, s.batch*s.qLen*s.heads*s.headDim)
			k := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
			v := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
			scale := float32(1 / math.Sqrt(float64(s.headDim)))
			out, lse := nans(len(q)), nans(s.batch*s.heads*s.qLen)
			Attention(out, lse, q, k, v, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, scale, s.starts())
			wantOut, wantLse := refAttention(to64(q), to64(k), to64(v), s, float64(scale))
			requireClose(t, "out", out, wantOut, fwdTol)
			requireClose(t, "lse", lse, wantLse, fwdTol)
		})
	}
}

func TestAttentionBackward(t *testing.T) {
	for n, s := range attnShapes {
		t.Run(s.String(), func(t *testing.T) {
			r := newRand(uint64(20 + n))
			q := randn(r, s.batch*s.qLen*s.heads*s.headDim)
			k := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
			v := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
			dout := randn(r, len(q))
			scale := float32(1 / math.Sqrt(float64(s.headDim)))
			out, lse := nans(len(q)), nans(s.batch*s.heads*s.qLen)
			Attention(out, lse, q, k, v, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, scale, s.starts())

			q64, k64, v64 := to64(q), to64(k), to64(v)
			loss := func() float64 {
				o, _ := refAttention(q64, k64, v64, s, float64(scale))
				return dot(o, dout)
			}
			dq, dk, dv := nans(len(q)), nans(len(k)), nans(len(v))
			AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, scale, s.starts())
			requireClose(t, "dq", dq, fdGrad(q64, loss), bwdTol)
			requireClose(t, "dk", dk, fdGrad(k64, loss), bwdTol)
			requireClose(t, "dv", dv, fdGrad(v64, loss), bwdTol)
		})
	}
}

// Scores of several hundred (float64's exp overflows past 709, float32's past 88): the softmax
// must subtract each row's maximum, which leaves the result unchanged on ordinary scores and so
// only scores like these can tell.
func TestAttentionLargeScores(t *testing.T) {
	s := attnShape{1, 6, 9, 4, 2, 8, false}
	r := newRand(77)
	q := randn(r, s.batch*s.qLen*s.heads*s.headDim)
	for i := range q {
		q[i] *= 300
	}
	k := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
	v := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
	scale := float32(1 / math.Sqrt(float64(s.headDim)))
	out, lse := nans(len(q)), nans(s.batch*s.heads*s.qLen)
	Attention(out, lse, q, k, v, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, scale, nil)
	wantOut, wantLse := refAttention(to64(q), to64(k), to64(v), s, float64(scale))
	big := 0.0
	for _, l := range wantLse {
		big = math.Max(big, l)
	}
	if big < 750 {
		t.Fatalf("the largest score is %.0f: too small to overflow exp", big)
	}
	requireClose(t, "out", out, wantOut, fwdTol)
	requireClose(t, "lse", lse, wantLse, fwdTol)
}
