package cpu

import (
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// The attention the CPU backend ran before flash attention (kept here, for the benchmarks, as the
// previous path beside the new one in the same run): the scores S = scale·Q·Kᵀ and P = softmax(S)
// materialised a (sequence, head) at a time through the SGEMM, O = P·V; decoding (fewer than 8
// queries) ran the query heads of a KV head as one small GEMM over all visible keys.

// gemmUseFast says whether the GEMM path runs for a.

func gemmUseFast(a engine.Attention) bool {
	return a.QLen >= 8 && a.QLen*a.KVLen <= 1<<22
}

// gemmAttentionForward runs attention; starts (nil or per query) isolates packed documents.
func gemmAttentionForward(a engine.Attention, out, lse, q, k, v []float32, starts []int32) {
	if a.QLen < 8 {
		gemmAttentionDecode(a, out, lse, q, k, v, starts)
		return
	}
	if !gemmUseFast(a) {
		kernels.Attention(out, lse, q, k, v, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
		return
	}
	H, KVH, D, Q, K := a.Heads, a.KVHeads, a.HeadDim, a.QLen, a.KVLen
	s := make([]float32, Q*K)
	for b := 0; b < a.Batch; b++ {
		for h := 0; h < H; h++ {
			kh := h / (H / KVH)
			qh := q[b*Q*H*D+h*D:]
			kk := k[b*K*KVH*D+kh*D:]
			vv := v[b*K*KVH*D+kh*D:]
			gemm.Sgemm(false, true, Q, K, D, a.Scale, qh, H*D, kk, KVH*D, 0, s, K)
			l := lse[(b*H+h)*Q : (b*H+h+1)*Q]
			gemmSoftmaxCausal(s, l, Q, K, gemmRowStarts(starts, b, Q))
			gemm.Sgemm(false, false, Q, D, K, 1, s, K, vv, KVH*D, 0, out[b*Q*H*D+h*D:], H*D)
		}
	}
}

// gemmRowStarts is sequence b's slice of starts (nil stays nil).
func gemmRowStarts(starts []int32, b, Q int) []int32 {
	if starts == nil {
		return nil
	}
	return starts[b*Q : (b+1)*Q]
}

// gemmSoftmaxCausal turns the scores of each query row into probabilities over the keys it may see
// (starts[i] ≤ key j ≤ KVLen−QLen+i; starts nil: from 0), zero elsewhere, and writes each row's
// log-sum-exp.
func gemmSoftmaxCausal(s, lse []float32, Q, K int, starts []int32) {
	off := K - Q
	for i := 0; i < Q; i++ {
		row := s[i*K : (i+1)*K]
		j0, n := 0, off+i+1
		if starts != nil {
			j0 = int(starts[i])
		}
		lse[i] = gemmSoftmaxRow(row[j0:n])
		clear(row[:j0])
		for j := n; j < K; j++ {
			row[j] = 0
		}
	}
}

// gemmSoftmaxRow turns a row of scores into probabilities in place and returns its log-sum-exp: the
// maximum, then the exponentials shifted by it and their sum in one vectorised pass (gemm.ExpSub),
// then the division.
func gemmSoftmaxRow(row []float32) float32 {
	mx := float32(math.Inf(-1))
	for _, x := range row {
		mx = max(mx, x)
	}
	sum := gemm.ExpSub(row, row, mx)
	inv := 1 / sum
	for j := range row {
		row[j] *= inv
	}
	return mx + float32(math.Log(float64(sum)))
}

// gemmAttentionDecode is attention for a few queries a sequence (decoding against a KV cache): for
// each sequence and KV head, in parallel, and each query, the query heads that share the KV head
// (GQA) are one small GEMM against the visible keys, so each key and value row is loaded once for
// all of them: S = scale·Q_g·Kᵀ (group × keys, which stays in L1/L2), a softmax row by row, then
// O_g = P·V.
func gemmAttentionDecode(a engine.Attention, out, lse, q, k, v []float32, starts []int32) {
	H, KVH, D, Q, K := a.Heads, a.KVHeads, a.HeadDim, a.QLen, a.KVLen
	group, off, kvStride := H/KVH, K-Q, KVH*D
	gemm.Parallel(a.Batch*KVH, func(t int) {
		b, kh := t/KVH, t%KVH
		s := make([]float32, group*K)
		for i := 0; i < Q; i++ {
			j0, n := 0, off+i+1 // keys j0..n-1 are visible
			if starts != nil {
				j0 = int(starts[b*Q+i])
			}
			vis := n - j0
			qg := q[((b*Q+i)*H+kh*group)*D:]
			kv := (b*K+j0)*kvStride + kh*D
			sg := s[:group*vis]
			gemm.Sgemm(false, true, group, vis, D, a.Scale, qg, D, k[kv:], kvStride, 0, sg, vis)
			for r := 0; r < group; r++ {
				lse[(b*H+kh*group+r)*Q+i] = gemmSoftmaxRow(sg[r*vis : (r+1)*vis])
			}
			gemm.Sgemm(false, false, group, D, vis, 1, sg, vis, v[kv:], kvStride, 0, out[((b*Q+i)*H+kh*group)*D:], D)
		}
	})
}

// gemmAttentionBackward computes attention's gradients; starts (nil or per query) as in the forward.
func gemmAttentionBackward(a engine.Attention, dq, dk, dv, dout, q, k, v, out, lse []float32, starts []int32) {
	if !gemmUseFast(a) {
		kernels.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, a.Batch, a.QLen, a.KVLen, a.Heads, a.KVHeads, a.HeadDim, a.Scale, starts)
		return
	}
	H, KVH, D, Q, K := a.Heads, a.KVHeads, a.HeadDim, a.QLen, a.KVLen
	group := H / KVH
	p := make([]float32, Q*K)
	dp := make([]float32, Q*K)
	rowDot := make([]float32, Q)
	off := K - Q
	for b := 0; b < a.Batch; b++ {
		for h := 0; h < H; h++ {
			kh := h / group
			first := h%group == 0 // the first query head of a kv head starts its dk, dv sums
			beta := float32(1)
			if first {
				beta = 0
			}
			qh, oh, doh := q[b*Q*H*D+h*D:], out[b*Q*H*D+h*D:], dout[b*Q*H*D+h*D:]
			kk, vv := k[b*K*KVH*D+kh*D:], v[b*K*KVH*D+kh*D:]
			// P from the saved log-sum-exp.
			gemm.Sgemm(false, true, Q, K, D, a.Scale, qh, H*D, kk, KVH*D, 0, p, K)
			l := lse[(b*H+h)*Q:]
			st := gemmRowStarts(starts, b, Q)
			for i := 0; i < Q; i++ {
				row := p[i*K : (i+1)*K]
				j0, n := 0, off+i+1
				if st != nil {
					j0 = int(st[i])
				}
				gemm.ExpSub(row[j0:n], row[j0:n], l[i])
				clear(row[:j0])
				for j := n; j < K; j++ {
					row[j] = 0
				}
				// D_i = Σ_c dO[i,c]·O[i,c]
				s := 0.0
				for c := 0; c < D; c++ {
					s += float64(doh[i*H*D+c]) * float64(oh[i*H*D+c])
				}
				rowDot[i] = float32(s)
			}
			// dV += Pᵀ·dO
			gemm.Sgemm(true, false, K, D, Q, 1, p, K, doh, H*D, beta, dv[b*K*KVH*D+kh*D:], KVH*D)
			// dS = P ⊙ (dO·Vᵀ − D)
			gemm.Sgemm(false, true, Q, K, D, 1, doh, H*D, vv, KVH*D, 0, dp, K)
			for i := 0; i < Q; i++ {
				pr, dr := p[i*K:(i+1)*K], dp[i*K:(i+1)*K]
				for j := range dr {
					dr[j] = pr[j] * (dr[j] - rowDot[i])
				}
			}
			// dQ = scale·dS·K, dK += scale·dSᵀ·Q
			gemm.Sgemm(false, false, Q, D, K, a.Scale, dp, K, kk, KVH*D, 0, dq[b*Q*H*D+h*D:], H*D)
			gemm.Sgemm(true, false, K, D, Q, a.Scale, dp, K, qh, H*D, beta, dk[b*K*KVH*D+kh*D:], KVH*D)
		}
	}
}
