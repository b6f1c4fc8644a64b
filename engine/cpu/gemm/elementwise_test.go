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

// RoPE against the float64 references (forward and backward) on every path: half head widths
// below, at and above sixteen lanes with a tail (10, 16, 18, 64), enough tokens for several tasks,
// YaRN's attention scale, in place and not.
func TestRoPEMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, d := range [][3]int{{3, 2, 20}, {5, 3, 32}, {7, 4, 36}, {300, 8, 128}} {
			tokens, heads, hd := d[0], d[1], d[2]
			x := randn(r, tokens*heads*hd)
			pos := make([]int32, tokens)
			for i := range pos {
				pos[i] = int32(r.IntN(5000))
			}
			invFreq := kernels.RoPEInvFreq(hd, 500000)
			for _, inverse := range []bool{false, true} {
				want := make([]float32, len(x))
				if inverse {
					kernels.RoPEBackward(want, x, tokens, heads, hd, pos, invFreq, 1.1)
				} else {
					kernels.RoPE(want, x, tokens, heads, hd, pos, invFreq, 1.1)
				}
				for _, inPlace := range []bool{false, true} {
					xi := append([]float32(nil), x...)
					y := make([]float32, len(x))
					if inPlace {
						y = xi
					}
					RoPE(y, xi, tokens, heads, hd, pos, invFreq, 1.1, inverse)
					for i := range want {
						if e := math.Abs(float64(y[i] - want[i])); e > 1e-6*(math.Abs(float64(x[i]))+math.Abs(float64(want[i])))+1e-7 {
							t.Fatalf("%s %v inverse=%v: y[%d] = %v, reference %v", isa, d, inverse, i, y[i], want[i])
						}
					}
				}
			}
		}
	}
}

// BenchmarkRoPE: a 512-token prefill's queries at Llama-3.2-1B's shape (32 heads × 64), the float64
// reference beside this float32 path in the same run.
//
//	go test -run '^$' -bench RoPE -count 3 ./engine/cpu/gemm/
func BenchmarkRoPE(b *testing.B) {
	const tokens, heads, hd = 512, 32, 64
	r := rand.New(rand.NewPCG(1, 2))
	x, y := randn(r, tokens*heads*hd), make([]float32, tokens*heads*hd)
	pos := make([]int32, tokens)
	for i := range pos {
		pos[i] = int32(i)
	}
	invFreq := kernels.RoPEInvFreq(hd, 500000)
	b.Run("reference", func(b *testing.B) {
		for b.Loop() {
			kernels.RoPE(y, x, tokens, heads, hd, pos, invFreq, 1)
		}
	})
	b.Run("isa="+string(BestISA()), func(b *testing.B) {
		for b.Loop() {
			RoPE(y, x, tokens, heads, hd, pos, invFreq, 1, false)
		}
	})
}
