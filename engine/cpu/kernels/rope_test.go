package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// refRoPE applies rotary embeddings the way Hugging Face writes them: emb = cat(freqs, freqs),
// out = x·cos(emb) + rotate_half(x)·sin(emb), rotate_half(x) = cat(−x2, x1), cos and sin times s.
// The angle is the float32 product pos·invFreq, as HF forms it.
func refRoPE(x []float64, tokens, heads, headDim int, pos []int32, invFreq []float32, s float64) []float64 {
	half := headDim / 2
	out := make([]float64, len(x))
	for t := 0; t < tokens; t++ {
		emb := make([]float64, headDim)
		for i := 0; i < half; i++ {
			emb[i] = float64(float32(pos[t]) * invFreq[i])
			emb[i+half] = emb[i]
		}
		for h := 0; h < heads; h++ {
			v := x[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			rot := append(neg(v[half:]), v[:half]...)
			for d := 0; d < headDim; d++ {
				out[(t*heads+h)*headDim+d] = v[d]*s*math.Cos(emb[d]) + rot[d]*s*math.Sin(emb[d])
			}
		}
	}
	return out
}

func neg(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = -v
	}
	return y
}

func randPos(seed uint64, n int) []int32 {
	r := newRand(seed)
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(r.IntN(5000))
	}
	return pos
}

func TestRoPEInvFreq(t *testing.T) {
	f := RoPEInvFreq(4, 10000)
	require.Equal(t, []float32{1, 0.01}, f)
	f = RoPEInvFreq(10, 500000)
	require.Len(t, f, 5)
	for i, v := range f {
		require.InDelta(t, math.Pow(500000, -float64(2*i)/10), float64(v), 1e-7*math.Abs(float64(v))+1e-12, "i=%d", i)
	}
}

func TestRoPE(t *testing.T) {
	for _, c := range []struct {
		heads, headDim int
		scale          float32
	}{{3, 6, 1}, {2, 10, 1}, {3, 10, 1.25}} {
		const tokens = 7
		r := newRand(3)
		x := randn(r, tokens*c.heads*c.headDim)
		pos := randPos(4, tokens)
		inv := RoPEInvFreq(c.headDim, 10000)
		y := nans(len(x))
		RoPE(y, x, tokens, c.heads, c.headDim, pos, inv, c.scale)
		requireClose(t, "y", y, refRoPE(to64(x), tokens, c.heads, c.headDim, pos, inv, float64(c.scale)), fwdTol)

		// In place gives the same bits.
		z := append([]float32(nil), x...)
		RoPE(z, z, tokens, c.heads, c.headDim, pos, inv, c.scale)
		requireBits(t, "in place", y, z)
	}
}

func TestRoPEPositionZeroIsIdentity(t *testing.T) {
	const tokens, heads, headDim = 5, 3, 10
	x := randn(newRand(5), tokens*heads*headDim)
	y := nans(len(x))
	RoPE(y, x, tokens, heads, headDim, make([]int32, tokens), RoPEInvFreq(headDim, 10000), 1)
	requireBits(t, "pos 0", x, y)
}

func TestRoPEBackward(t *testing.T) {
	const tokens, heads, headDim, scale = 7, 3, 10, 1.25
	r := newRand(6)
	x, dy := randn(r, tokens*heads*headDim), randn(r, tokens*heads*headDim)
	pos := randPos(7, tokens)
	inv := RoPEInvFreq(headDim, 10000)
	x64 := to64(x)
	want := fdGrad(x64, func() float64 { return dot(refRoPE(x64, tokens, heads, headDim, pos, inv, scale), dy) })
	dx := nans(len(x))
	RoPEBackward(dx, dy, tokens, heads, headDim, pos, inv, scale)
	requireClose(t, "dx", dx, want, bwdTol)
}
