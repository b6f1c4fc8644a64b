package cpu

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// Attention on the CPU is flash attention (flash.go): the queries of one sequence and KV head,
// every query head of the group together (so that each key and value row is loaded once for all
// of them), a tile of positions at a time against blocks of keys, with an online softmax; scores
// and their products are small GEMMs through the blocked SGEMM and the exponentials run vectorised
// (gemm.ExpSub). Nothing of size queries × keys is ever held. Prefill, decoding (a few queries
// against a KV cache) and the backward pass share it.

// attentionRows runs attention over a KV cache of KVStride-row slots (engine.Attention with
// KVStride): each run of queries of one sequence whose rows follow each other in one slot is an
// ordinary causal attention over the slot's first rows, computed as such.
func attentionRows(a engine.Attention, out, lse, q, k, v []float32, rows []int32) error {
	S, H, D := a.KVStride, a.Heads, a.HeadDim
	slots := len(k) / (S * a.KVHeads * D)
	qd, kd := H*D, a.KVHeads*D
	var runLSE []float32
	for b := 0; b < a.Batch; b++ {
		for i0 := 0; i0 < a.QLen; {
			t0 := b*a.QLen + i0
			r0 := int(rows[t0])
			if r0 < 0 || r0 >= slots*S {
				return fmt.Errorf("query %d: row %d is outside the cache's %d", t0, r0, slots*S)
			}
			i1 := i0 + 1
			for i1 < a.QLen && int(rows[b*a.QLen+i1]) == r0+(i1-i0) && (r0+i1-i0)%S != 0 {
				i1++
			}
			n := i1 - i0
			start := r0 - r0%S
			last := r0 + n - 1
			one := engine.Attention{Batch: 1, QLen: n, KVLen: last - start + 1, Heads: H, KVHeads: a.KVHeads, HeadDim: D, Scale: a.Scale}
			if cap(runLSE) < H*n {
				runLSE = make([]float32, H*n)
			}
			l := runLSE[:H*n]
			attentionForward(one, out[t0*qd:(t0+n)*qd], l, q[t0*qd:(t0+n)*qd], k[start*kd:(last+1)*kd], v[start*kd:(last+1)*kd], nil)
			for h := 0; h < H; h++ {
				copy(lse[(b*H+h)*a.QLen+i0:], l[h*n:(h+1)*n])
			}
			i0 = i1
		}
	}
	return nil
}

// fastAttentionQueries is the query tile the conformance suite sizes its shapes around
// (Caps().Tiles.AttentionQ): decoding steps have fewer queries, prefill more.
const fastAttentionQueries = 8

// attentionForward runs attention; starts (nil or per query) isolates packed documents.
func attentionForward(a engine.Attention, out, lse, q, k, v []float32, starts []int32) {
	flashForward(a, out, lse, q, k, v, starts)
}

// attentionBackward computes attention's gradients; starts (nil or per query) as in the forward.
func attentionBackward(a engine.Attention, dq, dk, dv, dout, q, k, v, out, lse []float32, starts []int32) {
	flashBackward(a, dq, dk, dv, dout, q, k, v, out, lse, starts)
}

// validStarts says whether every query's document start lies in [0, its own key]: data from a
// device buffer is checked before a kernel indexes with it.
func validStarts(starts []int32, a engine.Attention) bool {
	for t, s := range starts {
		if s < 0 || int(s) > a.KVLen-a.QLen+t%a.QLen {
			return false
		}
	}
	return true
}
