package engine

import (
	"math"
	"testing"
)

// gumbelNoise32 is top_k.wgsl's gumbel_noise, step for step in f32: the WGSL kernel's algorithm
// (logarithms from + − × ÷ alone), whose accuracy GumbelTol promises.
func gumbelNoise32(k0, k1, i uint32) float32 {
	atanh2 := func(t float32) float32 {
		t2 := t * t
		s := float32(1.0 / 21.0)
		for n := 9; n >= 0; n-- {
			s = s*t2 + 1/float32(2*n+1)
		}
		return 2 * t * s
	}
	ln := func(v float32) float32 {
		b := math.Float32bits(v)
		e := int32((b>>23)&0xff) - 127
		m := math.Float32frombits((b & 0x7fffff) | 0x3f800000)
		if m > 1.4142135 {
			m *= 0.5
			e++
		}
		return float32(e)*0.6931472 + atanh2((m-1)/(m+1))
	}
	m := GumbelBits(k0, k1, i)
	d := (float32(8388608-m) - 0.5) * (1.0 / 8388608.0)
	var e float32
	if d <= 0.5 {
		e = atanh2(d / (2 - d))
	} else {
		e = -ln((float32(m) + 0.5) * (1.0 / 8388608.0))
	}
	return -ln(e)
}

// The kernel's f32 noise stays within a tenth of GumbelTol's allowance of the float64 noise, over a
// million draws and at the extremes of the uniform number (U next to 0, ½ and 1); and the float64
// noise has the Gumbel distribution's mean (Euler's γ) and variance (π²/6).
func TestGumbelNoise(t *testing.T) {
	worst := 0.0
	sum, sq := 0.0, 0.0
	const n = 1 << 20
	for i := range uint32(n) {
		g := GumbelNoise(0x1234567, 0x89abcdef, i)
		sum += g
		sq += g * g
		worst = max(worst, math.Abs(float64(gumbelNoise32(0x1234567, 0x89abcdef, i))-g))
	}
	mean := sum / n
	variance := sq/n - mean*mean
	if math.Abs(mean-0.5772157) > 0.005 || math.Abs(variance-math.Pi*math.Pi/6) > 0.01 {
		t.Fatalf("mean %v (want 0.5772), variance %v (want %v)", mean, variance, math.Pi*math.Pi/6)
	}
	// Keys that put U at its extremes: search the ids for the smallest, middle and largest bits.
	for _, want := range []uint32{0, 1, 1 << 22, 1<<22 - 1, 1<<23 - 1, 1<<23 - 2} {
		for i := range uint32(1 << 26) {
			if GumbelBits(5, 6, i) == want {
				worst = max(worst, math.Abs(float64(gumbelNoise32(5, 6, i))-GumbelNoise(5, 6, i)))
				break
			}
		}
	}
	if worst > GumbelTol(0)/10 {
		t.Fatalf("f32 noise off by %g, more than a tenth of %g", worst, GumbelTol(0))
	}
	t.Logf("worst f32 error %.3g; mean %.4f, variance %.4f", worst, mean, variance)
}
