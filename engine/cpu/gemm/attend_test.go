package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAttendAgainstFloat64 checks AttendScores and AttendValues, on every instruction set, against
// the float64 reference on decoding shapes that are no multiple of the kernels' tiles: 1 to 17 rows
// (the scores kernel takes four rows against four keys, the value kernels 8 rows, or 4 rows of 64 or
// 32 columns, the last few padded), key counts around those groups and the 16-key block,
// head sizes the AVX-512 kernels take (multiples of 32) and one they leave to Sgemm (80); key and
// value rows strided as in a KV cache of several heads, and out's padding NaN (never to be
// written).
func TestAttendAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	withAVX2(t, func(t *testing.T) {
		for _, d := range []int{32, 64, 128, 80} {
			for _, n := range []int{1, 4, 6, 15, 16, 37, 130} {
				for _, rows := range []int{1, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17} {
					name := fmt.Sprintf("d=%d n=%d rows=%d", d, n, rows)
					ldk, lds, ldo := 3*d, n+5, d+3
					q, k := randn(r, rows*d), randn(r, n*ldk)
					s := make([]float32, rows*lds)
					for i := range s {
						s[i] = float32(math.NaN())
					}
					AttendScores(rows, n, d, 0.3, q, k, ldk, s, lds)
					want, mag := refGemm(false, true, rows, n, d, 0.3, q, d, k, ldk, 0, nil, 0)
					for i := 0; i < rows; i++ {
						for j := 0; j < n; j++ {
							require.InDelta(t, want[i*n+j], s[i*lds+j], 1e-5*(mag[i*n+j]+1e-3), "%s scores[%d,%d]", name, i, j)
						}
						for j := n; j < lds && i < rows-1; j++ {
							require.True(t, math.IsNaN(float64(s[i*lds+j])), "%s: scores padding written", name)
						}
					}

					p, v := randn(r, rows*lds), randn(r, n*ldk)
					out := randn(r, rows*ldo)
					for i := 0; i < rows; i++ {
						for c := d; c < ldo; c++ {
							out[i*ldo+c] = float32(math.NaN())
						}
					}
					want, mag = refGemm(false, false, rows, d, n, 1, p, lds, v, ldk, 1, out, ldo)
					AttendValues(rows, n, d, p, lds, v, ldk, out, ldo)
					for i := 0; i < rows; i++ {
						for c := 0; c < d; c++ {
							require.InDelta(t, want[i*d+c], out[i*ldo+c], 1e-5*(mag[i*d+c]+1e-3), "%s values[%d,%d]", name, i, c)
						}
						for c := d; c < ldo; c++ {
							require.True(t, math.IsNaN(float64(out[i*ldo+c])), "%s: out padding written", name)
						}
					}
				}
			}
		}
	})
}

// TestMax checks Max on every instruction set against a plain loop, with the largest value at
// every position of lengths around the 16- and 64-float steps, and all values negative.
func TestMax(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	withAVX2(t, func(t *testing.T) {
		for _, n := range []int{1, 7, 15, 16, 17, 63, 64, 65, 130} {
			x := randn(r, n)
			for i := range x {
				x[i] = -1 - float32(math.Abs(float64(x[i])))
			}
			for at := 0; at < n; at++ {
				y := append([]float32(nil), x...)
				y[at] = 0.5
				require.Equal(t, float32(0.5), Max(y), "n=%d largest at %d", n, at)
			}
			want := x[0]
			for _, v := range x {
				want = max(want, v)
			}
			require.Equal(t, want, Max(x), "n=%d", n)
		}
	})
}

// TestAddScaled checks AddScaled on every instruction set against float64, on lengths around
// the 16-float step, with x longer than y.
func TestAddScaled(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	withAVX2(t, func(t *testing.T) {
		for _, n := range []int{1, 15, 16, 17, 64, 70} {
			x, y := randn(r, n+3), randn(r, n)
			got := append([]float32(nil), y...)
			AddScaled(got, x, -0.37)
			for i := range y {
				want := float64(y[i]) + -0.37*float64(x[i])
				require.InDelta(t, want, got[i], 1e-6*(math.Abs(want)+1), "n=%d [%d]", n, i)
			}
		}
	})
}

// TestScale checks Scale on every instruction set, on lengths around the 16-float step.
func TestScale(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	withAVX2(t, func(t *testing.T) {
		for _, n := range []int{1, 15, 16, 17, 64, 70} {
			x := randn(r, n)
			y := append([]float32(nil), x...)
			Scale(y, -0.37)
			for i := range x {
				require.Equal(t, x[i]*-0.37, y[i], "n=%d [%d]", n, i)
			}
		}
	})
}
