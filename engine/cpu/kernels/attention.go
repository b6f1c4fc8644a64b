package kernels

import "math"

// attnDims checks the shapes shared by Attention and AttentionBackward and panics on a mistake.
func attnDims(op string, batch, qLen, kvLen, heads, kvHeads, headDim int) {
	if heads <= 0 || kvHeads <= 0 || heads%kvHeads != 0 || qLen > kvLen || qLen < 0 || batch < 0 || headDim < 0 {
		panic("kernels." + op + ": need heads % kvHeads == 0 and 0 <= qLen <= kvLen")
	}
}

// dot64 is Σ a[i]·b[i] in float64; len(b) >= len(a).
func dot64(a, b []float32) float64 {
	b = b[:len(a)]
	var s float64
	for i, v := range a {
		s += float64(v) * float64(b[i])
	}
	return s
}

// Attention is causal scaled-dot-product attention with grouped-query heads.
//
//	out: [batch, qLen, heads, headDim] (output), lse: [batch, heads, qLen] (output),
//	q: [batch, qLen, heads, headDim], k, v: [batch, kvLen, kvHeads, headDim]
//
// Query head h reads kv head h/(heads/kvHeads). Query i sits at absolute position kvLen−qLen+i and
// attends to keys j ≤ that position: qLen == kvLen is ordinary causal training, qLen < kvLen is
// decoding against a KV cache. Scores are scale·q·k (scale usually 1/sqrt(headDim)); lse is the
// log-sum-exp of each query's scaled scores, kept for AttentionBackward.
//
// starts, when not nil (i32 [batch·qLen]), isolates packed documents: query i of sequence b sees
// only keys j ≥ starts[b·qLen+i] (the index of its document's first key in the sequence).
//
// Each query row is computed in float64: all its scores, their maximum, then the exponentials
// shifted by it (so nothing overflows), the denominator and the weighted sum of values. Panics on
// inconsistent dimensions or a short slice.
func Attention(out, lse, q, k, v []float32, batch, qLen, kvLen, heads, kvHeads, headDim int, scale float32, starts []int32) {
	attnDims("Attention", batch, qLen, kvLen, heads, kvHeads, headDim)
	checkStarts("Attention", starts, batch, qLen, kvLen)
	nq, nkv := batch*qLen*heads*headDim, batch*kvLen*kvHeads*headDim
	need("Attention", "out", len(out), nq)
	need("Attention", "lse", len(lse), batch*heads*qLen)
	need("Attention", "q", len(q), nq)
	need("Attention", "k", len(k), nkv)
	need("Attention", "v", len(v), nkv)
	group, off, sc := heads/kvHeads, kvLen-qLen, float64(scale)
	kvStride := kvHeads * headDim
	// One item is one query row (b, i, h), in the order of out's layout.
	parallelFor(batch*qLen*heads, grain(2*kvLen*headDim), func(lo, hi int) {
		s := make([]float64, kvLen)
		acc := make([]float64, headDim)
		for row := lo; row < hi; row++ {
			h, bi := row%heads, row/heads
			b, i := bi/qLen, bi%qLen
			qr := q[row*headDim : (row+1)*headDim]
			kvBase := b*kvLen*kvStride + (h/group)*headDim
			j0, n := first(starts, bi), off+i+1 // keys j0..off+i are visible
			m := math.Inf(-1)
			for j := j0; j < n; j++ {
				s[j] = sc * dot64(qr, k[kvBase+j*kvStride:])
				m = max(m, s[j])
			}
			clear(acc)
			var l float64
			for j := j0; j < n; j++ {
				p := math.Exp(s[j] - m)
				l += p
				vr := v[kvBase+j*kvStride : kvBase+j*kvStride+headDim]
				for d, x := range vr {
					acc[d] += p * float64(x)
				}
			}
			or := out[row*headDim : (row+1)*headDim]
			for d, a := range acc {
				or[d] = float32(a / l)
			}
			lse[(b*heads+h)*qLen+i] = float32(m + math.Log(l))
		}
	})
}

// first is the first key query t (batch·qLen order) sees: 0, or its document's start.
func first(starts []int32, t int) int {
	if starts == nil {
		return 0
	}
	return int(starts[t])
}

// checkStarts panics unless starts is nil or one key index per query, each in [0, kvLen−qLen+i].
func checkStarts(op string, starts []int32, batch, qLen, kvLen int) {
	if starts == nil {
		return
	}
	need(op, "starts", len(starts), batch*qLen)
	for t, s := range starts[:batch*qLen] {
		if s < 0 || int(s) > kvLen-qLen+t%qLen {
			panic("kernels." + op + ": a query's document starts after it")
		}
	}
}

// AttentionBackward computes the gradients of Attention, flash-attention style: the softmax is
// recomputed from lse, P[i,j] = exp(scale·q_i·k_j − lse_i), and with D_i = Σ dout_i ⊙ out_i,
//
//	dS[i,j] = P[i,j]·(dout_i·v_j − D_i)
//	dq_i = scale·Σ_j dS[i,j]·k_j
//	dk_j = scale·Σ_{h in group, i} dS[i,j]·q_i,  dv_j = Σ_{h in group, i} P[i,j]·dout_i
//
// dk and dv sum over every query head that shares the kv head. starts isolates documents as in
// Attention.
//
//	dq: [batch, qLen, heads, headDim] (output), dk, dv: [batch, kvLen, kvHeads, headDim] (outputs),
//	dout: [batch, qLen, heads, headDim], q: [batch, qLen, heads, headDim],
//	k, v: [batch, kvLen, kvHeads, headDim], out: [batch, qLen, heads, headDim] and
//	lse: [batch, heads, qLen] from Attention
//
// Two parallel passes, each writing only what it owns so no sum depends on the split: one over
// query rows for dq, one over keys for dk and dv. All sums run in float64. Panics on inconsistent dimensions or a short slice.
func AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse []float32, batch, qLen, kvLen, heads, kvHeads, headDim int, scale float32, starts []int32) {
	const op = "AttentionBackward"
	attnDims(op, batch, qLen, kvLen, heads, kvHeads, headDim)
	checkStarts(op, starts, batch, qLen, kvLen)
	nq, nkv := batch*qLen*heads*headDim, batch*kvLen*kvHeads*headDim
	need(op, "dq", len(dq), nq)
	need(op, "dk", len(dk), nkv)
	need(op, "dv", len(dv), nkv)
	need(op, "dout", len(dout), nq)
	need(op, "q", len(q), nq)
	need(op, "k", len(k), nkv)
	need(op, "v", len(v), nkv)
	need(op, "out", len(out), nq)
	need(op, "lse", len(lse), batch*heads*qLen)
	group, off, sc := heads/kvHeads, kvLen-qLen, float64(scale)
	kvStride := kvHeads * headDim
	rows := batch * qLen * heads

	// D, in out's row order (b, i, h).
	dd := make([]float64, rows)
	parallelFor(rows, grain(headDim), func(lo, hi int) {
		for row := lo; row < hi; row++ {
			dd[row] = dot64(dout[row*headDim:(row+1)*headDim], out[row*headDim:])
		}
	})

	// dq, one query row at a time.
	parallelFor(rows, grain(3*kvLen*headDim), func(lo, hi int) {
		acc := make([]float64, headDim)
		for row := lo; row < hi; row++ {
			h, bi := row%heads, row/heads
			b, i := bi/qLen, bi%qLen
			qr, dor := q[row*headDim:(row+1)*headDim], dout[row*headDim:(row+1)*headDim]
			kvBase := b*kvLen*kvStride + (h/group)*headDim
			l, di := float64(lse[(b*heads+h)*qLen+i]), dd[row]
			clear(acc)
			for j := first(starts, bi); j < off+i+1; j++ {
				kr := k[kvBase+j*kvStride : kvBase+j*kvStride+headDim]
				p := math.Exp(sc*dot64(qr, kr) - l)
				ds := p * (dot64(dor, v[kvBase+j*kvStride:]) - di)
				for d, x := range kr {
					acc[d] += ds * float64(x)
				}
			}
			dqr := dq[row*headDim : (row+1)*headDim]
			for d, a := range acc {
				dqr[d] = float32(sc * a)
			}
		}
	})

	// dk and dv, one key (b, j, kvh) at a time, summing over the group's heads, then queries.
	parallelFor(batch*kvLen*kvHeads, grain(4*group*qLen*headDim), func(lo, hi int) {
		ak, av := make([]float64, headDim), make([]float64, headDim)
		for key := lo; key < hi; key++ {
			kvh, bj := key%kvHeads, key/kvHeads
			b, j := bj/kvLen, bj%kvLen
			kr, vr := k[key*headDim:(key+1)*headDim], v[key*headDim:(key+1)*headDim]
			clear(ak)
			clear(av)
			for g := range group {
				h := kvh*group + g
				for i := max(0, j-off); i < qLen; i++ {
					if j < first(starts, b*qLen+i) {
						continue // another document's query
					}
					row := (b*qLen+i)*heads + h
					qr, dor := q[row*headDim:(row+1)*headDim], dout[row*headDim:(row+1)*headDim]
					p := math.Exp(sc*dot64(qr, kr) - float64(lse[(b*heads+h)*qLen+i]))
					ds := p * (dot64(dor, vr) - dd[row])
					for d := range headDim {
						av[d] += p * float64(dor[d])
						ak[d] += ds * float64(qr[d])
					}
				}
			}
			dkr, dvr := dk[key*headDim:(key+1)*headDim], dv[key*headDim:(key+1)*headDim]
			for d := range headDim {
				dkr[d] = float32(sc * ak[d])
				dvr[d] = float32(av[d])
			}
		}
	})
}
