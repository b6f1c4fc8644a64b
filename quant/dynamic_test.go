package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDynamicCode spot-checks create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).
// The float32 bit patterns were worked out from the formula and agree with torch's output.
func TestDynamicCode(t *testing.T) {
	c := DynamicCode
	for i := 1; i < 256; i++ {
		require.Less(t, c[i-1], c[i], "sorted, no duplicates at %d", i)
	}
	// 127 negatives, 0, 127 positives, and 1.
	require.Equal(t, float32(0), c[127])
	require.Equal(t, float32(1), c[255])
	for i := range 127 {
		require.Equal(t, -c[128+i], c[126-i], "symmetric at %d", i)
	}
	want := map[int]uint32{
		0:   3212718899, // -0.99296874 = -(0.9859375+1)/2
		2:   3212247040, // -0.96484375
		3:   3212011110, // -0.95078123
		126: 3037963191, // -5.5e-07
		128: 890479543,  // 5.5e-07 = 1e-6 * (0.1+1)/2, the smallest positive value
		129: 911874708,  // 3.25e-06 = 1e-5 * (0.1+0.55)/2
		130: 922879487,  // 7.75e-06 = 1e-5 * (0.55+1)/2
		140: 977037952,  // 0.00071875
		160: 1013511619, // 0.01421875
		254: 1065235251, // 0.99296874
		255: 1065353216, // 1.0
	}
	for i, bits := range want {
		require.Equal(t, bits, math.Float32bits(c[i]), "DynamicCode[%d] = %v", i, c[i])
	}
	require.InDelta(t, 5.5e-7, c[128], 1e-12)
	require.InDelta(t, -0.99296875, c[0], 1e-7)
	// Per exponent 10^(i-6), 2^i values: 1 at 1e-6, 2 at 1e-5, ..., 64 at 1.
	var counts [7]int
	for _, v := range c[128:255] {
		e := int(math.Floor(math.Log10(float64(v)))) + 7
		counts[e]++
	}
	require.Equal(t, [7]int{1, 2, 4, 8, 16, 32, 64}, counts)
}

func TestLinspace32(t *testing.T) {
	require.Equal(t, []float32{0.1, 1}, linspace32(0.1, 1, 2))
	require.Equal(t, []float32{0.1, 0.55, 1}, linspace32(0.1, 1, 3))
	b := linspace32(0.1, 1, 65)
	require.Equal(t, float32(0.1), b[0])
	require.Equal(t, float32(1), b[64])
	require.InDelta(t, 0.55, b[32], 1e-7)
}

// TestQuantize8Nearest: bitsandbytes' binary search returns a nearest code index.
func TestQuantize8Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	xs := []float32{-1, 1, 0, -0.99296874, 0.99296874, 1e-9, -1e-9, 5.5e-7, 0.5}
	for range 20000 {
		x := float32(r.Float64()*2 - 1)
		if r.IntN(2) == 0 {
			x *= float32(math.Pow(10, -float64(r.IntN(7)))) // exercise the small exponents
		}
		xs = append(xs, x)
	}
	for _, x := range xs {
		q := Quantize8(&DynamicCode, x)
		best := math.Inf(1)
		for _, c := range DynamicCode {
			best = min(best, math.Abs(float64(x)-float64(c)))
		}
		require.LessOrEqual(t, math.Abs(float64(x)-float64(DynamicCode[q])), best+1e-9, "x=%v q=%d", x, q)
	}
	require.Equal(t, uint8(127), Quantize8(&DynamicCode, 0))
	require.Equal(t, uint8(255), Quantize8(&DynamicCode, 1))
	require.Equal(t, uint8(0), Quantize8(&DynamicCode, -1))
	require.Equal(t, uint8(128), Quantize8(&DynamicCode, 5.5e-7))
}

func TestQuantizeBlockwise8(t *testing.T) {
	x := []float32{0.5, -2, 1, 0, 0, 0}
	q, absmax := quantizeBlockwise8(x, 3, &DynamicCode)
	require.Equal(t, []float32{2, 0}, absmax)
	// 0.5/2 = 0.25, -1, 0.5; then a zero block -> index of 0.
	require.Equal(t, uint8(0), q[1])
	require.Equal(t, []uint8{127, 127, 127}, q[3:])
	require.InDelta(t, 0.25, DynamicCode[q[0]], 0.01)
	require.InDelta(t, 0.5, DynamicCode[q[2]], 0.01)
}

// TestDynamicCodeUnsigned spot-checks create_dynamic_map(signed=False, max_exponent_bits=7,
// total_bits=8), the code of bitsandbytes' 8-bit optimizers' second moment: 0, 254 midpoints with
// twice the signed code's count per decade, and 1.
func TestDynamicCodeUnsigned(t *testing.T) {
	c := DynamicCodeUnsigned
	for i := 1; i < 256; i++ {
		require.Less(t, c[i-1], c[i], "sorted, no duplicates at %d", i)
	}
	require.Equal(t, float32(0), c[0])
	require.Equal(t, float32(1), c[255])
	// Decade i (scale 1e(i-6)) holds 2^(i+1) midpoints of linspace(0.1, 1, 2^(i+1)+1).
	require.InDelta(t, 3.25e-7, c[1], 1e-13)      // 1e-6·(0.1+0.55)/2
	require.InDelta(t, 7.75e-7, c[2], 1e-13)      // 1e-6·(0.55+1)/2
	require.InDelta(t, 1e-5*0.2125, c[3], 1e-12)  // the first midpoint of linspace(0.1, 1, 5)
	require.InDelta(t, 0.996484375, c[254], 1e-7) // 1 − 0.9/256, the last midpoint of 129 points
	require.InDelta(t, 0.103515625, c[127], 1e-7) // the first midpoint of the last decade
	// Nearest-value quantization works on it as on the signed code.
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		x := float32(math.Pow(10, -7*r.Float64()))
		q := Quantize8(&c, x)
		best := math.Inf(1)
		for _, v := range c {
			best = math.Min(best, math.Abs(float64(x)-float64(v)))
		}
		require.LessOrEqual(t, math.Abs(float64(x)-float64(c[q])), best+1e-9, "x=%v q=%d", x, q)
	}
	require.Equal(t, uint8(0), Quantize8(&c, 0))
	require.Equal(t, uint8(255), Quantize8(&c, 1))
}
