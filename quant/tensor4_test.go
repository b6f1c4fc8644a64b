package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func up(x float32) float32 { return math.Nextafter32(x, float32(math.Inf(1))) }

// TestNF4KnownAnswers checks the NF4 decision tree and the nibble order on a hand-built block
// whose absmax is 1, so that the normalised values are the inputs themselves.
func TestNF4KnownAnswers(t *testing.T) {
	cases := []struct {
		x    float32
		code uint8
	}{
		{1.0, 15},
		{-1.0, 0},
		{0, 7},
		{0.03979014977812767, 7}, // on the 7|8 threshold: strict >, so the lower code
		{up(0.03979014977812767), 8},
		{0.3893125355243683, 11}, // on 11|12
		{0.8614784181118011, 14}, // on 14|15
		{up(0.8614784181118011), 15},
		{-0.8480964004993439, 0}, // on 0|1
		{up(-0.8480964004993439), 1},
		{-0.045525018125772476, 6}, // on 6|7
		{up(-0.045525018125772476), 7},
		{0.5, 12},
		{-0.5, 2},
		{-0.33967943489551544, 3}, // on 3|4
		{0.25, 10},
	}
	data := make([]float32, 64)
	want := make([]uint8, 64)
	for i, c := range cases {
		data[i], want[i] = c.x, c.code
		require.Equal(t, c.code, NF4.Encode(c.x), "Encode(%v)", c.x)
	}
	// Every NF4 value maps to its own code.
	for k, v := range NF4Code {
		i := len(cases) + k
		data[i], want[i] = v, uint8(k)
	}
	// The rest: -0.2 lies between -0.2844 (4) and -0.1848 (5), threshold -0.2346 -> 5.
	for i := len(cases) + 16; i < 64; i++ {
		data[i], want[i] = -0.2, 5
	}
	q, err := Quantize(data, []int{64}, NF4, 64, false)
	require.NoError(t, err)
	require.Equal(t, []float32{1}, q.Absmax)
	require.Len(t, q.Packed, 32)
	// Hand-packed: first element high nibble.
	require.Equal(t, []byte{0xF0, 0x77, 0x8B, 0xEF, 0x01, 0x67, 0xC2, 0x3A}, q.Packed[:8])
	for i := range 64 {
		b := q.Packed[i/2]
		got := b >> 4
		if i%2 == 1 {
			got = b & 0xF
		}
		require.Equal(t, want[i], got, "element %d (%v)", i, data[i])
	}
	// Bytes 8..15 hold codes 0..15 in order.
	require.Equal(t, []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF}, q.Packed[8:16])
	require.Equal(t, byte(0x55), q.Packed[31])

	deq, err := q.Dequantize()
	require.NoError(t, err)
	for i := range 64 {
		require.Equal(t, NF4Code[want[i]], deq[i], "element %d", i)
	}
}

// TestNF4ScaledBlock uses absmax -4 (a power of two, so x*(1/absmax) is exact) in a second block
// and checks the per-block absmax and the threshold behaviour after scaling.
func TestNF4ScaledBlock(t *testing.T) {
	data := make([]float32, 128)
	for i := range 64 {
		data[i] = 0.5 // block 0: absmax 0.5, all at 1.0 -> code 15
	}
	data[64] = -4                              // absmax 4, normalised -1 -> 0
	data[65] = 4 * float32(0.3893125355243683) // exactly on 11|12 after scaling -> 11
	data[66] = 4 * up(0.3893125355243683)
	data[67] = 0.1 // 0.025 -> 7
	for i := 68; i < 128; i++ {
		data[i] = 2 // 0.5 -> 12
	}
	q, err := Quantize(data, []int{2, 64}, NF4, 64, false)
	require.NoError(t, err)
	require.Equal(t, []float32{0.5, 4}, q.Absmax)
	require.Equal(t, byte(0xFF), q.Packed[0])
	require.Equal(t, []byte{0x0B, 0xC7, 0xCC}, q.Packed[32:35])
}

// TestReciprocalNotDivision pins bitsandbytes' x * (1/absmax): for absmax 3 this x lands above
// the 7|8 threshold by multiplication but on it by division.
func TestReciprocalNotDivision(t *testing.T) {
	x := math.Float32frombits(1039431807) // 0.11937045
	require.Greater(t, x*(1/float32(3)), float32(0.03979014977812767))
	require.LessOrEqual(t, x/3, float32(0.03979014977812767))
	data := []float32{3, x}
	q, err := Quantize(append(data, make([]float32, 62)...), []int{64}, NF4, 64, false)
	require.NoError(t, err)
	require.Equal(t, byte(0xF8), q.Packed[0])
}

func TestFP4KnownAnswers(t *testing.T) {
	cases := []struct {
		x    float32
		code uint8
	}{
		{1.0, 0b0011},
		{-1.0, 0b1011},
		{0, 0b0000},
		{-0.001, 0b1000}, // tiny negative: sign bit, magnitude code 0
		{0.29166667, 0b0111},
		{up(0.29166667), 0b0100},
		{0.5, 0b0101},
		{-0.25, 0b1111},
		{0.0859375, 0b0001},
		{0.00260417, 0b0000},
		{up(0.00260417), 0b0001},
		{0.8333333, 0b0010},
		{-0.583333, 0b1101},
		{-0.7, 0b1010},
	}
	data := make([]float32, 32)
	want := make([]uint8, 32)
	for i, c := range cases {
		data[i], want[i] = c.x, c.code
		require.Equal(t, c.code, FP4.Encode(c.x), "Encode(%v)", c.x)
	}
	for k := range 16 {
		if k == 8 {
			continue // -0 is +0 here and encodes as 0
		}
		data[len(cases)+k], want[len(cases)+k] = FP4Code[k], uint8(k)
	}
	q, err := Quantize(data, []int{4, 8}, FP4, 32, false)
	require.NoError(t, err)
	require.Equal(t, []float32{1}, q.Absmax)
	require.Equal(t, []byte{0x3B, 0x08, 0x74, 0x5F, 0x10, 0x12, 0xDA}, q.Packed[:7])
	for i := range 32 {
		b := q.Packed[i/2]
		got := b >> 4
		if i%2 == 1 {
			got = b & 0xF
		}
		require.Equal(t, want[i], got, "element %d (%v)", i, data[i])
	}
	deq, err := q.Dequantize()
	require.NoError(t, err)
	require.Equal(t, float32(-0.25), deq[7])
	require.Equal(t, float32(8.0/12), deq[14+2])
}

// TestOddCountPadding: bitsandbytes quantizes a zero-padded last block, so the spare low nibble
// holds the code of 0.0 (7 for NF4, 0 for FP4).
func TestOddCountPadding(t *testing.T) {
	q, err := Quantize([]float32{1, -1, 0.5}, []int{3}, NF4, 64, false)
	require.NoError(t, err)
	require.Equal(t, []byte{0xF0, 0xC7}, q.Packed)
	q, err = Quantize([]float32{1, -1, 0.5}, []int{3}, FP4, 64, false)
	require.NoError(t, err)
	require.Equal(t, []byte{0x3B, 0x50}, q.Packed)
	deq, err := q.Dequantize()
	require.NoError(t, err)
	require.Equal(t, []float32{1, -1, 0.5}, deq)
}

// TestZeroBlock is the one explicit all-zero case: a zero block stores absmax 0 and the code of
// 0.0, and dequantizes to exact zeros, while its neighbour is unaffected.
func TestZeroBlock(t *testing.T) {
	data := make([]float32, 96)
	for i := 64; i < 96; i++ {
		data[i] = float32(i-80) / 16
	}
	for _, typ := range []Type{NF4, FP4} {
		q, err := Quantize(data, []int{96}, typ, 64, false)
		require.NoError(t, err)
		require.Equal(t, float32(0), q.Absmax[0])
		z := typ.Encode(0)
		for i := range 32 {
			require.Equal(t, z<<4|z, q.Packed[i])
		}
		deq, err := q.Dequantize()
		require.NoError(t, err)
		for i := range 64 {
			require.Zero(t, deq[i])
		}
		require.Equal(t, float32(1), q.Absmax[1])
		require.Equal(t, float32(-1), deq[64])
		require.Equal(t, float32(1), deq[95])
	}
}

func randNormal(r *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64() * scale)
	}
	return out
}

func maxHalfGap(code []float32) float64 {
	s := append([]float32(nil), code...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	var g float64
	for i := 1; i < len(s); i++ {
		g = max(g, float64(s[i]-s[i-1])/2)
	}
	return g
}

// TestRoundTripBound quantizes random normal data of odd sizes with every blocksize and checks
// that each element decodes to the nearest code value of its block, within absmax * half the
// largest gap of the code.
func TestRoundTripBound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []Type{NF4, FP4} {
		code := typ.Code()
		half := maxHalfGap(code[:])
		for _, n := range []int{1000, 4097, 65*3 + 1} {
			data := randNormal(r, n, 0.02)
			for bs := MinBlocksize; bs <= MaxBlocksize; bs *= 2 {
				plain, err := Quantize(data, []int{n}, typ, bs, false)
				require.NoError(t, err)
				require.Len(t, plain.Packed, (n+1)/2)
				require.Equal(t, (n+bs-1)/bs, plain.NumBlocks())
				deq, err := plain.Dequantize()
				require.NoError(t, err)
				for i, x := range data {
					a := float64(plain.Absmax[i/bs])
					require.LessOrEqual(t, math.Abs(float64(x-deq[i])), a*half+1e-7, "%v n=%d bs=%d i=%d", typ, n, bs, i)
					// The code value is a nearest one to x/absmax.
					v := float64(x) / a
					best := math.Inf(1)
					for _, c := range code {
						best = min(best, math.Abs(v-float64(c)))
					}
					require.LessOrEqual(t, math.Abs(v-float64(deq[i])/a), best+1e-6, "%v n=%d bs=%d i=%d", typ, n, bs, i)
				}

				dq, err := Quantize(data, []int{n}, typ, bs, true)
				require.NoError(t, err)
				require.Equal(t, plain.Packed, dq.Packed)
				deq, err = dq.Dequantize()
				require.NoError(t, err)
				am, err := dq.BlockAbsmax()
				require.NoError(t, err)
				for i, x := range data {
					a := float64(plain.Absmax[i/bs])
					// Double quant adds the error of the decoded absmax.
					bound := a*half + math.Abs(a-float64(am[i/bs])) + 1e-7
					require.LessOrEqual(t, math.Abs(float64(x-deq[i])), bound, "%v n=%d bs=%d i=%d dq", typ, n, bs, i)
				}
			}
		}
	}
}

// TestDoubleQuant checks the decoded absmax against the plain one and the bits per parameter.
func TestDoubleQuant(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 64 * 256 * 8
	data := randNormal(r, n, 1)
	plain, err := Quantize(data, []int{256, n / 256}, NF4, 64, false)
	require.NoError(t, err)
	dq, err := Quantize(data, []int{256, n / 256}, NF4, 64, true)
	require.NoError(t, err)
	require.True(t, dq.DoubleQuant())
	require.Nil(t, dq.Absmax)
	require.Len(t, dq.QAbsmax, n/64)
	require.Len(t, dq.NestedAbsmax, n/64/256)
	require.Equal(t, plain.Packed, dq.Packed, "the 4-bit codes do not depend on double quant")

	var sum float64
	for _, a := range plain.Absmax {
		sum += float64(a)
	}
	require.InDelta(t, sum/float64(len(plain.Absmax)), float64(dq.Offset), 1e-6)

	dec, err := dq.BlockAbsmax()
	require.NoError(t, err)
	nestedHalf := maxHalfGap(DynamicCode[:])
	for i, a := range plain.Absmax {
		na := float64(dq.NestedAbsmax[i/256])
		require.InDelta(t, a, dec[i], na*nestedHalf+1e-6, "block %d", i)
		require.InEpsilon(t, a, dec[i], 0.01, "block %d", i)
		// Each 8-bit index is a nearest code to the centred, normalised absmax.
		v := float64(a-dq.Offset) / na
		best := math.Inf(1)
		for _, c := range DynamicCode {
			best = min(best, math.Abs(v-float64(c)))
		}
		require.LessOrEqual(t, math.Abs(v-float64(DynamicCode[dq.QAbsmax[i]])), best+1e-6, "block %d", i)
	}
	require.InDelta(t, 4.127, dq.BitsPerParam(), 0.001)
	require.Equal(t, 4.5, plain.BitsPerParam())
	require.Equal(t, int64(n/2+4*n/64), plain.StorageBytes())
}

func TestQuantizeRejects(t *testing.T) {
	data := randNormal(rand.New(rand.NewPCG(5, 6)), 128, 1)
	for _, bs := range []int{48, 16, 8192, 0, -64} {
		_, err := Quantize(data, []int{128}, NF4, bs, false)
		require.ErrorContains(t, err, "invalid blocksize")
	}
	_, err := Quantize(data, []int{127}, NF4, 64, false)
	require.ErrorContains(t, err, "needs 127 values, got 128")
	_, err = Quantize(data, []int{0, 128}, NF4, 64, false)
	require.ErrorContains(t, err, "not positive")
	_, err = Quantize(data, nil, NF4, 64, false)
	require.ErrorContains(t, err, "empty shape")
	_, err = Quantize(data, []int{128}, Type(9), 64, false)
	require.ErrorContains(t, err, "unknown type")
	bad := append([]float32(nil), data...)
	bad[77] = float32(math.NaN())
	_, err = Quantize(bad, []int{128}, NF4, 64, false)
	require.ErrorContains(t, err, "element 77 is NaN")
	bad[77] = float32(math.Inf(-1))
	_, err = Quantize(bad, []int{128}, FP4, 64, true)
	require.ErrorContains(t, err, "element 77 is -Inf")
}

func TestValidate(t *testing.T) {
	data := randNormal(rand.New(rand.NewPCG(7, 8)), 1000, 1)
	fresh := func(dq bool) *Tensor4 {
		q, err := Quantize(data, []int{10, 100}, NF4, 64, dq)
		require.NoError(t, err)
		require.NoError(t, q.Validate())
		return q
	}
	q := fresh(false)
	q.Packed = q.Packed[:499]
	require.ErrorContains(t, q.Validate(), "packed data has 499 bytes, shape [10 100] needs 500")
	q = fresh(false)
	q.Absmax[3] = float32(math.NaN())
	require.ErrorContains(t, q.Validate(), "absmax[3] is NaN")
	_, err := q.Dequantize()
	require.ErrorContains(t, err, "absmax[3] is NaN")
	q = fresh(false)
	q.Absmax = q.Absmax[:5]
	require.ErrorContains(t, q.Validate(), "absmax has 5 values")
	q = fresh(false)
	q.Blocksize = 48
	require.ErrorContains(t, q.Validate(), "invalid blocksize 48")
	q = fresh(false)
	q.Shape = []int{10, 101}
	require.ErrorContains(t, q.Validate(), "needs 505")
	q = fresh(false)
	q.DType = "int8"
	require.ErrorContains(t, q.Validate(), `unsupported original dtype "int8"`)
	q = fresh(true)
	q.NestedAbsmax[0] = float32(math.Inf(1))
	require.ErrorContains(t, q.Validate(), "nested absmax[0] is +Inf")
	q = fresh(true)
	q.QAbsmax = q.QAbsmax[1:]
	require.ErrorContains(t, q.Validate(), "quantized absmax has 15 values")
	q = fresh(true)
	q.Offset = float32(math.NaN())
	require.ErrorContains(t, q.Validate(), "nested offset is NaN")
	q = fresh(true)
	q.Absmax = []float32{1}
	require.ErrorContains(t, q.Validate(), "both plain and double-quantized")
}

func TestParseType(t *testing.T) {
	for s, want := range map[string]Type{"nf4": NF4, "NF4": NF4, "fp4": FP4} {
		got, err := ParseType(s)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	require.Equal(t, "nf4", NF4.String())
	require.Equal(t, "fp4", FP4.String())
	_, err := ParseType("int4")
	require.ErrorContains(t, err, `unknown 4-bit quant type "int4"`)
}
