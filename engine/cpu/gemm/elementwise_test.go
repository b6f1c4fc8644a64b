package gemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// SwiGLU against the float64 reference on every path, on lengths that are not multiples of 16 and
// one that spans several tasks, with gates from −95 to 20, in place and not.
func TestSwiGLUMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, n := range []int{1, 15, 16, 17, 333, 3*elemChunk + 5} {
			gate, up := make([]float32, n), randn(r, n)
			for i := range gate {
				gate[i] = float32(r.Float64()*115 - 95)
				if i%3 == 0 {
					gate[i] = float32(r.NormFloat64() * 3)
				}
			}
			want := make([]float32, n)
			kernels.SwiGLU(want, gate, up)
			for _, inPlace := range []bool{false, true} {
				g := append([]float32(nil), gate...)
				y := make([]float32, n)
				if inPlace {
					y = g
				}
				SwiGLU(y, g, up)
				for i := range want {
					if d := math.Abs(float64(y[i] - want[i])); d > 1e-6*math.Abs(float64(want[i]))+1e-35 { // below −88.7 the vector path clamps: values under 1e-35 differ
						t.Fatalf("%s n=%d: silu(%v)·%v = %v, reference %v", isa, n, gate[i], up[i], y[i], want[i])
					}
				}
			}
		}
	}
}

// SwiGLUBackward against the float64 reference on every path: lengths that are not multiples of
// 16, one that spans several tasks, gates from −95 to 20, outputs apart from the inputs and over
// them (dgate over gate, dup over up).
func TestSwiGLUBackwardMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, n := range []int{1, 15, 16, 17, 333, 3*elemChunk + 5} {
			gate, up, dy := make([]float32, n), randn(r, n), randn(r, n)
			for i := range gate {
				gate[i] = float32(r.Float64()*115 - 95)
				if i%3 == 0 {
					gate[i] = float32(r.NormFloat64() * 3)
				}
			}
			wg, wu := make([]float32, n), make([]float32, n)
			kernels.SwiGLUBackward(wg, wu, dy, gate, up)
			for _, inPlace := range []bool{false, true} {
				g, u := append([]float32(nil), gate...), append([]float32(nil), up...)
				dg, du := make([]float32, n), make([]float32, n)
				if inPlace {
					dg, du = g, u
				}
				SwiGLUBackward(dg, du, dy, g, u)
				for i := range wg {
					// Relative to the larger of a gradient and its scale |dy|·(|up| + 1): where
					// dgate's two terms cancel, float32 rounding leaves an absolute error there.
					tol := 2e-6*float64(abs32(dy[i])*(abs32(up[i])+1)) + 1e-35
					if d := math.Abs(float64(dg[i] - wg[i])); d > tol+1e-6*math.Abs(float64(wg[i])) {
						t.Fatalf("%s n=%d in place %v: dgate at gate %v, up %v, dy %v = %v, reference %v", isa, n, inPlace, gate[i], up[i], dy[i], dg[i], wg[i])
					}
					if d := math.Abs(float64(du[i] - wu[i])); d > 1e-6*math.Abs(float64(wu[i]))+1e-35 {
						t.Fatalf("%s n=%d in place %v: dup at gate %v, dy %v = %v, reference %v", isa, n, inPlace, gate[i], dy[i], du[i], wu[i])
					}
				}
			}
		}
	}
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// RMSNorm against the float64 reference on every path: widths that are not multiples of 16,
// enough rows for several tasks, in place and not.
func TestRMSNormMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, d := range [][2]int{{1, 1}, {3, 15}, {2, 17}, {5, 2048}, {40, 897}, {9, 4099}} {
			rows, dim := d[0], d[1]
			x, w := randn(r, rows*dim), randn(r, dim)
			want := make([]float32, rows*dim)
			kernels.RMSNorm(want, x, w, rows, dim, 1e-5)
			for _, inPlace := range []bool{false, true} {
				xi := append([]float32(nil), x...)
				y := make([]float32, rows*dim)
				if inPlace {
					y = xi
				}
				RMSNorm(y, xi, w, rows, dim, 1e-5)
				for i := range want {
					if e := math.Abs(float64(y[i] - want[i])); e > 2e-6*math.Abs(float64(want[i]))+1e-7 {
						t.Fatalf("%s %d×%d: y[%d] = %v, reference %v", isa, rows, dim, i, y[i], want[i])
					}
				}
			}
		}
	}
}
