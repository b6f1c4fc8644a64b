package gemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/quant"
)

// bf16Round is v rounded to bfloat16 and widened back, in float64.
func bf16Round(v float32) float64 { return float64(half.BF16ToFloat32(half.BF16(v))) }

// MatMul4BF16 on every instruction set, where it runs in bfloat16 (a CPU with AVX512_BF16), matches
// the float64 product of its rounded operands: for up to 16 rows (not transposed; k a multiple of
// 128, blocksize 64 or a multiple of 128) x and the codebook rounded, for more than 16 rows
// (either way) x and the dequantized weight rounded; and it differs from the exact product by more than
// float32 rounding could. Every other call is MatMul4, exact in float32. Odd depths (W's rows for
// the transposed product), rows and columns that fill no tile.
func TestMatMul4BF16AgainstFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		ranBF16 := false
		for name, code := range codebooks {
			for _, bs := range []int{32, 64, 128, 256} {
				for _, m := range []int{1, 2, 5, smallM4, smallM4 + 1, 40} {
					// n = 300: several 32-row stretches a core in the batched GEMV.
					for _, dims := range [][2]int{{1, 128}, {37, 256}, {19, 384}, {70, 1024}, {5, 301}, {33, 80}, {67, 53}, {300, 128}} {
						for _, transW := range []bool{false, true} {
							n, k := dims[0], dims[1]
							packed, absmax := randQuant4(r, n, k, bs)
							in, out := k, n
							if transW {
								in, out = n, k
							}
							x := randn(r, m*in)
							y := randn(r, m*out)
							beta := float32(0)
							if n%2 == 1 {
								beta = 0.75
							}
							y0 := append([]float32(nil), y...)
							MatMul4BF16(transW, m, n, k, x, packed, absmax, bs, code, beta, y)
							gemv := m <= smallM4 && !transW && HasBF16() && k%128 == 0 && (bs == 64 || bs%128 == 0)
							gemm := m > smallM4 && HasBF16()
							bf := gemv || gemm
							ranBF16 = ranBF16 || bf
							maxDiff := 0.0 // between the bfloat16 and the exact products
							for i := 0; i < m; i++ {
								for o := 0; o < out; o++ {
									exact, rounded, g := 0.0, 0.0, 0.0 // rounded: the path's own rounding
									for c := 0; c < in; c++ {
										e := o*k + c
										if transW {
											e = c*k + o
										}
										q := packed[e/2] >> 4
										if e%2 == 1 {
											q = packed[e/2] & 15
										}
										s := float64(absmax[e/bs])
										xv := x[i*in+c]
										exact += float64(xv) * float64(code[q]) * s
										if gemm {
											rounded += bf16Round(xv) * bf16Round(code[q]*absmax[e/bs])
										} else {
											rounded += bf16Round(xv) * bf16Round(code[q]) * s
										}
										g += math.Abs(float64(xv) * float64(code[q]) * s)
									}
									if beta != 0 {
										exact += float64(beta) * float64(y0[i*out+o])
										rounded += float64(beta) * float64(y0[i*out+o])
										g += math.Abs(float64(beta) * float64(y0[i*out+o]))
									}
									want := exact
									if bf {
										want = rounded
									}
									got := float64(y[i*out+o])
									tol := 2e-7*g*math.Sqrt(float64(in)+1) + 1e-6
									if math.IsNaN(got) || math.Abs(got-want) > tol {
										t.Fatalf("MatMul4BF16(%s, transW=%v, m=%d, n=%d, k=%d, bs=%d, β=%v, bf16 %v) y[%d,%d] = %v, want %v (tol %g)", name, transW, m, n, k, bs, beta, bf, i, o, got, want, tol)
									}
									maxDiff = max(maxDiff, math.Abs(rounded-exact)/(g*1e-6+1e-9))
								}
							}
							if bf && in >= 50 && maxDiff < 1 {
								t.Fatalf("%s transW=%v n=%d k=%d: the bfloat16 and exact products agree to 1e-6 of their magnitude: the test cannot tell them apart", name, transW, n, k)
							}
						}
					}
				}
			}
		}
		if HasBF16() && !ranBF16 {
			t.Fatal("no call ran in bfloat16 on a CPU that has it")
		}
	})
}

// MatMul16BF16 on every instruction set: where it runs in bfloat16 (a CPU with AVX512_BF16, k even,
// one row or more than four) it matches the float64 product of the bfloat16 W and x rounded to
// bfloat16, and differs from the exact one; every other call is MatMul16, exact in float32. Depths
// that fill no 64-wide step, rows and columns that fill no tile.
func TestMatMul16BF16AgainstFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(13, 14))
		ranBF16 := map[bool]bool{}
		for _, transW := range []bool{false, true} {
			for _, m := range []int{1, 3, smallM16 + 1, 23} {
				for _, dims := range [][2]int{{1, 64}, {37, 130}, {19, 384}, {70, 1000}, {5, 301}, {33, 80}} {
					n, k := dims[0], dims[1]
					w := make([]uint16, n*k)
					for i := range w {
						w[i] = half.BF16(float32(r.NormFloat64()))
					}
					in, out := k, n // x's columns (the depth) and y's
					if transW {
						in, out = n, k
					}
					x, y := randn(r, m*in), randn(r, m*out)
					beta := float32(0)
					if n%2 == 1 {
						beta = 0.5
					}
					y0 := append([]float32(nil), y...)
					MatMul16BF16(transW, m, n, k, x, w, beta, y)
					bf := HasBF16() && (!transW && k%2 == 0 || transW && m > smallM16)
					ranBF16[transW] = ranBF16[transW] || bf
					wAt := func(o, c int) float64 { // op(W)[c][o]: the depth c, the output o
						if transW {
							return float64(half.BF16ToFloat32(w[c*k+o]))
						}
						return float64(half.BF16ToFloat32(w[o*k+c]))
					}
					maxDiff := 0.0
					for i := 0; i < m; i++ {
						for o := 0; o < out; o++ {
							exact, rounded, g := 0.0, 0.0, 0.0
							for c := 0; c < in; c++ {
								wv := wAt(o, c)
								exact += float64(x[i*in+c]) * wv
								rounded += bf16Round(x[i*in+c]) * wv
								g += math.Abs(float64(x[i*in+c]) * wv)
							}
							if beta != 0 {
								exact += float64(beta) * float64(y0[i*out+o])
								rounded += float64(beta) * float64(y0[i*out+o])
								g += math.Abs(float64(beta) * float64(y0[i*out+o]))
							}
							want := exact
							if bf {
								want = rounded
							}
							got := float64(y[i*out+o])
							tol := 2e-7*g*math.Sqrt(float64(in)+1) + 1e-6
							if math.IsNaN(got) || math.Abs(got-want) > tol {
								t.Fatalf("MatMul16BF16(transW=%v, m=%d, n=%d, k=%d, β=%v, bf16 %v) y[%d,%d] = %v, want %v (tol %g)", transW, m, n, k, beta, bf, i, o, got, want, tol)
							}
							maxDiff = max(maxDiff, math.Abs(rounded-exact)/(g*1e-6+1e-9))
						}
					}
					if bf && in >= 128 && maxDiff < 1 {
						t.Fatalf("transW=%v m=%d n=%d k=%d: the bfloat16 and exact products agree to 1e-6 of their magnitude", transW, m, n, k)
					}
				}
			}
		}
		if HasBF16() && (!ranBF16[false] || !ranBF16[true]) {
			t.Fatalf("a CPU with bfloat16 ran no call in it: %v (by transW)", ranBF16)
		}
	})
}

// TestPackColsFromCodes: the strips packCols and packColsBF16 pack straight from the codes
// (packStrip) are bit for bit those of the plain path (dequantize, round, transpose), on every
// blocksize it takes and one it leaves to the plain path, with a partial last strip, depth blocks
// past the first and an odd number of groups.
func TestPackColsFromCodes(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(21, 22))
		defer func() { usePackFromCodes = true }()
		for _, bs := range []int{32, 64, 128, 256, 1024} {
			for _, dims := range [][2]int{{40, 2048}, {16, 96}, {53, 1024}} {
				n, k := dims[0], dims[1]
				packed, absmax := randQuant4(r, n, k, bs)
				q := &quant4{packed: packed, absmax: absmax, bs: bs, code: &quant.NF4Code}
				for _, bf := range []bool{false, true} {
					if bf && !HasBF16() {
						continue
					}
					depth, pack := k, q.packCols(k)
					if bf {
						depth, pack = k/2, q.packColsBF16(k)
					}
					for p0 := 0; p0 < depth; p0 += kc {
						kcur := min(kc, depth-p0)
						size := (n + nr - 1) / nr * stripStride(kcur)
						plain, fast := make([]float32, size), make([]float32, size)
						usePackFromCodes = false
						pack(p0, 0, kcur, n, plain)
						usePackFromCodes = true
						pack(p0, 0, kcur, n, fast)
						for i := range plain {
							if math.Float32bits(plain[i]) != math.Float32bits(fast[i]) {
								t.Fatalf("bf16 %v bs=%d n=%d k=%d p0=%d: slot %d (strip %d, depth %d, column %d) is %#08x, the plain path's %#08x", bf, bs, n, k, p0, i,
									i/stripStride(kcur), i%stripStride(kcur)/nr, i%nr, math.Float32bits(fast[i]), math.Float32bits(plain[i]))
							}
						}
					}
				}
			}
		}
	})
}
