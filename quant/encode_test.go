package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The encoders walk bitsandbytes' decision trees without branches: every code must be the tree's,
// above all on and beside the thresholds, where a wrong comparison shows.
func TestEncodeMatchesTree(t *testing.T) {
	down := func(x float32) float32 { return math.Nextafter32(x, float32(math.Inf(-1))) }
	var xs []float32
	for _, th := range nf4Thresholds[:15] {
		xs = append(xs, th, up(th), down(th))
	}
	for _, p := range fp4Pivots[:7] {
		for _, th := range []float32{p, -p} {
			xs = append(xs, th, up(th), down(th))
		}
	}
	zero := float32(0)
	xs = append(xs, 0, -zero, 1, -1, 2, -2, 1e-30, -1e-30, float32(math.Inf(1)), float32(math.Inf(-1)))
	r := rand.New(rand.NewPCG(7, 8))
	for range 1 << 18 {
		xs = append(xs, float32(r.Float64()*2.2-1.1))
	}
	for _, x := range xs {
		require.Equal(t, treeNF4(x), encodeNF4(x), "NF4 code of %v", x)
		require.Equal(t, treeFP4(x), encodeFP4(x), "FP4 code of %v", x)
	}
}

// treeNF4 is bitsandbytes' dQuantizeNF4 as csrc/kernels.cu writes it, a tree of branches: the
// reference encodeNF4 must match.
func treeNF4(x float32) uint8 {
	if x > 0.03979014977812767 {
		if x > 0.3893125355243683 {
			if x > 0.6427869200706482 {
				if x > 0.8614784181118011 {
					return 0b1111
				}
				return 0b1110
			}
			if x > 0.5016634166240692 {
				return 0b1101
			}
			return 0b1100
		}
		if x > 0.2035212516784668 {
			if x > 0.2920137718319893 {
				return 0b1011
			}
			return 0b1010
		}
		if x > 0.1202552504837513 {
			return 0b1001
		}
		return 0b1000
	}
	if x > -0.33967943489551544 {
		if x > -0.13791173323988914 {
			if x > -0.045525018125772476 {
				return 0b0111
			}
			return 0b0110
		}
		if x > -0.23460740596055984 {
			return 0b0101
		}
		return 0b0100
	}
	if x > -0.6106329262256622 {
		if x > -0.4599952697753906 {
			return 0b0011
		}
		return 0b0010
	}
	if x > -0.8480964004993439 {
		return 0b0001
	}
	return 0b0000
}

// treeFP4 is bitsandbytes' dQuantizeFP4 as csrc/kernels.cu writes it: the reference of encodeFP4.
func treeFP4(x float32) uint8 {
	var sign uint8
	if x < 0 {
		sign = 0b1000
		x = -x
	}
	if x > 0.29166667 {
		if x > 0.583333 {
			if x > 0.8333333 {
				return 0b0011 + sign
			}
			return 0b0010 + sign
		}
		if x > 0.4166667 {
			return 0b0101 + sign
		}
		return 0b0100 + sign
	}
	if x > 0.0859375 {
		if x > 0.20833333 {
			return 0b0111 + sign
		}
		return 0b0110 + sign
	}
	if x > 0.00260417 {
		return 0b0001 + sign
	}
	return 0b0000 + sign
}

// Quantize splits a tensor into chunks of blocks over the cores: each block comes out as it does
// alone, and a NaN or an infinity is reported at its first index whichever chunk holds it.
func TestQuantizeChunks(t *testing.T) {
	const bs = 64
	n := 3*quantizeChunk + 5*bs + 17 // chunks, then a last chunk with an odd, partial block
	data := randNormal(rand.New(rand.NewPCG(9, 10)), n, 1)
	for b := 0; b < 40; b++ { // some all-zero blocks, in several chunks
		clear(data[b*quantizeChunk/13/bs*bs : b*quantizeChunk/13/bs*bs+bs])
	}
	for _, typ := range []Type{NF4, FP4} {
		q, err := Quantize(data, []int{n}, typ, bs, false)
		require.NoError(t, err)
		for lo := 0; lo < n; lo += bs {
			blk := data[lo:min(lo+bs, n)]
			one, err := Quantize(blk, []int{len(blk)}, typ, bs, false)
			require.NoError(t, err)
			require.Equal(t, one.Absmax[0], q.Absmax[lo/bs], "%s block %d absmax", typ, lo/bs)
			require.Equal(t, one.Packed, q.Packed[lo/2:lo/2+len(one.Packed)], "%s block %d codes", typ, lo/bs)
		}
	}
	bad := append([]float32(nil), data...)
	bad[2*quantizeChunk+100] = float32(math.Inf(1))
	bad[quantizeChunk+3] = float32(math.NaN())
	bad[3*quantizeChunk+1] = float32(math.NaN())
	_, err := Quantize(bad, []int{n}, NF4, bs, false)
	require.ErrorContains(t, err, "element 65539 is NaN")
	bad[quantizeChunk+3] = 1
	_, err = Quantize(bad, []int{n}, FP4, bs, true)
	require.ErrorContains(t, err, "element 131172 is +Inf")
}
