package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// runAll runs every parallelized kernel on shapes big enough to split across goroutines (each well
// past minWork per goroutine at 7 goroutines) and returns every output by name.
func runAll(t *testing.T) map[string][]float32 {
	res := map[string][]float32{}
	r := newRand(90)

	const rows, dim = 301, 257
	x, w, dy := randn(r, rows*dim), randn(r, dim), randn(r, rows*dim)
	y := nans(rows * dim)
	RMSNorm(y, x, w, rows, dim, 1e-6)
	dx, dw := nans(rows*dim), nans(dim)
	RMSNormBackward(dx, dw, dy, x, w, rows, dim, 1e-6)
	res["rmsnorm"], res["rmsnorm dx"], res["rmsnorm dw"] = y, dx, dw

	y = nans(rows * dim)
	Softmax(y, x, rows, dim)
	dx = nans(rows * dim)
	SoftmaxBackward(dx, dy, y, rows, dim)
	res["softmax"], res["softmax dx"] = y, dx

	y, dx = nans(rows*dim), nans(rows*dim)
	SiLU(y, x)
	SiLUBackward(dx, dy, x)
	res["silu"], res["silu dx"] = y, dx
	y, dx, dg := nans(rows*dim), nans(rows*dim), nans(rows*dim)
	SwiGLU(y, x, dy)
	SwiGLUBackward(dg, dx, y, x, dy)
	res["swiglu"], res["swiglu dgate"], res["swiglu dup"] = y, dg, dx

	const tokens, heads, headDim = 301, 6, 32
	xr := randn(r, tokens*heads*headDim)
	pos := randPos(91, tokens)
	inv := RoPEInvFreq(headDim, 10000)
	y, dx = nans(len(xr)), nans(len(xr))
	RoPE(y, xr, tokens, heads, headDim, pos, inv, 1)
	RoPEBackward(dx, xr, tokens, heads, headDim, pos, inv, 1)
	res["rope"], res["rope dx"] = y, dx

	s := attnShape{2, 48, 64, 8, 2, 32, true}
	q := randn(r, s.batch*s.qLen*s.heads*s.headDim)
	k := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
	v := randn(r, s.batch*s.kvLen*s.kvHeads*s.headDim)
	dout := randn(r, len(q))
	out, lse := nans(len(q)), nans(s.batch*s.heads*s.qLen)
	Attention(out, lse, q, k, v, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, 0.17, s.starts())
	dq, dk, dv := nans(len(q)), nans(len(k)), nans(len(v))
	AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, s.batch, s.qLen, s.kvLen, s.heads, s.kvHeads, s.headDim, 0.17, s.starts())
	res["attn out"], res["attn lse"], res["attn dq"], res["attn dk"], res["attn dv"] = out, lse, dq, dk, dv

	const vocab, n = 1000, 3001
	table := randn(r, vocab*dim)
	ids := embedIDs(92, n, vocab)
	y = nans(n * dim)
	require.NoError(t, Embedding(y, table, ids, vocab, dim))
	dt := nans(vocab * dim)
	EmbeddingBackward(dt, randn(r, n*dim), ids, vocab, dim)
	res["embedding"], res["embedding dtable"] = y, dt

	logits := randn(r, rows*vocab)
	targets := embedIDs(93, rows, vocab)
	targets[7] = ignore
	loss, count, err := CrossEntropy(logits, targets, rows, vocab, ignore)
	require.NoError(t, err)
	dl := nans(rows * vocab)
	CrossEntropyBackward(dl, logits, targets, rows, vocab, ignore, 1, count)
	res["ce"], res["ce dlogits"] = []float32{loss}, dl

	const big = 2001
	xb, db, l := randn(r, big*dim), randn(r, big*dim), randn(r, dim)
	y, dx, dls, sr := nans(big*dim), nans(big*dim), nans(dim), nans(dim)
	ScaleCols(y, xb, l, big, dim)
	ScaleColsBackward(dx, dls, db, xb, l, big, dim)
	SumRows(sr, db, big, dim)
	res["scalecols"], res["scalecols dx"], res["scalecols dl"], res["sumrows"] = y, dx, dls, sr
	y = append([]float32(nil), xb...)
	AddBias(y, l, big, dim)
	res["addbias"] = y
	for name, f := range map[string]func(y []float32){
		"add":       func(y []float32) { Add(y, xb, db) },
		"mul":       func(y []float32) { Mul(y, xb, db) },
		"scale":     func(y []float32) { Scale(y, xb, 0.3) },
		"addscaled": func(y []float32) { copy(y, db); AddScaled(y, xb, 0.3) },
	} {
		y = nans(big * dim)
		f(y)
		res[name] = y
	}
	res["sum"] = bits64(Sum(xb), SumSquares(xb))

	p, m, vv := append([]float32(nil), xb...), append([]float32(nil), db...), make([]float32, len(xb))
	AdamW(p, db, m, vv, 3, 1e-3, 0.9, 0.999, 1e-8, 0.01)
	res["adamw p"], res["adamw m"], res["adamw v"] = p, m, vv
	return res
}

// bits64 holds float64 results as pairs of exactly representable float32 (the upper and lower
// 26 bits of each float64's bit pattern) so that a difference in any bit shows.
func bits64(xs ...float64) []float32 {
	var res []float32
	for _, x := range xs {
		b := math.Float64bits(x)
		res = append(res, float32(b>>38), float32(b&(1<<38-1)>>12), float32(b&(1<<12-1)))
	}
	return res
}

// TestParallelMatchesSerial checks every parallel kernel gives the same bits on one goroutine and
// on seven (an odd split that does not divide the work evenly).
func TestParallelMatchesSerial(t *testing.T) {
	var serial, parallel map[string][]float32
	withProcs(1, func() { serial = runAll(t) })
	withProcs(7, func() { parallel = runAll(t) })
	require.Equal(t, len(serial), len(parallel))
	for name, a := range serial {
		requireBits(t, name, a, parallel[name])
		for i, v := range a {
			if math.IsNaN(float64(v)) {
				require.Failf(t, name, "NaN at %d: an element went unwritten", i)
			}
		}
	}
}
