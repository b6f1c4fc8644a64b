package kernels

import "math"

// RoPEInvFreq returns the rotary inverse frequencies invFreq[i] = 1/theta^(2i/headDim) for
// i < headDim/2, computed in float64 and rounded to float32.
func RoPEInvFreq(headDim int, theta float64) []float32 {
	f := make([]float32, headDim/2)
	for i := range f {
		f[i] = float32(1 / math.Pow(theta, float64(2*i)/float64(headDim)))
	}
	return f
}

// RoPE rotates queries or keys by position in Hugging Face's rotate_half convention. For token t
// with position p = pos[t], every head, and i < half = headDim/2, with angle a = p·invFreq[i]:
//
//	y[i]      = s·(x[i]·cos a − x[i+half]·sin a)
//	y[i+half] = s·(x[i+half]·cos a + x[i]·sin a)
//
// where s is attnScale (YaRN's attention factor; 1 normally).
//
//	y: [tokens, heads, headDim] (output; may be x itself), x: [tokens, heads, headDim],
//	pos: [tokens], invFreq: [headDim/2]
//
// The angle is the float32 product p·invFreq[i], as Hugging Face (and the GPU kernels) form it;
// its cosine and sine are taken in float64. Panics if headDim is odd or a slice is short.
func RoPE(y, x []float32, tokens, heads, headDim int, pos []int32, invFreq []float32, attnScale float32) {
	rope("RoPE", y, x, tokens, heads, headDim, pos, invFreq, attnScale, 1)
}

// RoPEBackward is the transpose of RoPE: the rotation by −angle, times attnScale.
//
//	dx[i]      = s·(dy[i]·cos a + dy[i+half]·sin a)
//	dx[i+half] = s·(dy[i+half]·cos a − dy[i]·sin a)
//
//	dx: [tokens, heads, headDim] (output; may be dy itself), dy: [tokens, heads, headDim],
//	pos: [tokens], invFreq: [headDim/2]
//
// Panics if headDim is odd or a slice is short.
func RoPEBackward(dx, dy []float32, tokens, heads, headDim int, pos []int32, invFreq []float32, attnScale float32) {
	rope("RoPEBackward", dx, dy, tokens, heads, headDim, pos, invFreq, attnScale, -1)
}

// rope rotates by sign·angle.
func rope(op string, y, x []float32, tokens, heads, headDim int, pos []int32, invFreq []float32, attnScale float32, sign float64) {
	if headDim%2 != 0 {
		panic("kernels." + op + ": head dim must be even")
	}
	half := headDim / 2
	n := tokens * heads * headDim
	need(op, "y", len(y), n)
	need(op, "x", len(x), n)
	need(op, "pos", len(pos), tokens)
	need(op, "invFreq", len(invFreq), half)
	s := float64(attnScale)
	parallelFor(tokens, grain(heads*headDim+8*half), func(lo, hi int) {
		cos, sin := make([]float64, half), make([]float64, half)
		for t := lo; t < hi; t++ {
			p := float32(pos[t])
			for i, f := range invFreq[:half] {
				a := float64(p * f)
				cos[i], sin[i] = s*math.Cos(a), sign*s*math.Sin(a)
			}
			for h := range heads {
				o := (t*heads + h) * headDim
				xr, yr := x[o:o+headDim], y[o:o+headDim]
				for i := range half {
					a, b := float64(xr[i]), float64(xr[i+half]) // read both before writing: y may be x
					yr[i] = float32(a*cos[i] - b*sin[i])
					yr[i+half] = float32(b*cos[i] + a*sin[i])
				}
			}
		}
	})
}
