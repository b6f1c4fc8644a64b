package gemm

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// i8Reference is what MatMul4I8's 8-bit GEMV computes for row o of W [n, k] (blocksize bs) and x,
// in float64 from the same roundings, written out independently: each 64-element block of x to
// round(x·127/amax) with scale amax/127, the codebook to round(code·127); and alongside, the exact
// product and the sum of its terms' magnitudes (the scale of float32's rounding).
func i8Reference(code *[16]float32, packed []byte, absmax []float32, bs, k, o int, x []float32) (rounded, exact, mag float64) {
	for h := 0; h < k; h += 64 {
		amax := float32(0)
		for _, v := range x[h : h+64] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		inv := 127 / amax
		dot := 0.0
		for c := h; c < h+64; c++ {
			e := o*k + c
			q := packed[e/2] >> 4
			if e%2 == 1 {
				q = packed[e/2] & 15
			}
			xq := math.RoundToEven(float64(x[c] * inv))
			dot += math.RoundToEven(float64(code[q])*127) * xq
			a := float64(absmax[e/bs])
			exact += float64(x[c]) * float64(code[q]) * a
			mag += math.Abs(float64(x[c])) * a
		}
		rounded += dot / 127 * float64(amax/127) * float64(absmax[(o*k+h)/bs])
	}
	// The kernel's unsigned codes add 128·Σxq a block before it takes it back out: float32's
	// rounding scales with that too, about as large as Σ|x|·absmax.
	return rounded, exact, 2 * mag
}

// MatMul4I8, where it runs on 8-bit integers (a CPU with AVX512_VNNI: up to 16 rows with k a
// multiple of 128 and a blocksize of 64 or a multiple of 128, or more than 16 rows with k and the
// blocksize multiples of 64), matches the float64 product of its own roundings of x and the codebook, differs
// from the exact product by no more than those roundings allow, and by more than float32 rounding
// could somewhere (the 8-bit paths ran). Every other call is MatMul4BF16's, bit for bit. Rows and columns
// that fill no 6×64 tile or 16-column group. A NaN or an infinity in x makes y NaN.
func TestMatMul4I8AgainstFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(21, 22))
		ran := map[bool]bool{}
		maxDiff := 0.0 // between the 8-bit and the exact products, over every case
		for _, name := range slices.Sorted(maps.Keys(codebooks)) {
			code := codebooks[name]
			for _, bs := range []int{32, 64, 128, 256} {
				for _, dims := range [][3]int{{1, 1, 128}, {1, 37, 256}, {1, 300, 1024}, {1, 19, 384}, {1, 5, 301}, {2, 33, 256}, {1, 67, 64},
					{3, 70, 256}, {4, 300, 384}, {6, 5, 128}, {16, 40, 256}, {7, 9, 200},
					{17, 64, 128}, {23, 70, 192}, {40, 129, 256}, {20, 13, 64}, {17, 16, 100}} {
					m, n, k := dims[0], dims[1], dims[2]
					packed, absmax := randQuant4(r, n, k, bs)
					x, y := randn(r, m*k), randn(r, m*n)
					beta := float32(0)
					if n%2 == 1 {
						beta = 0.5
					}
					y0 := append([]float32(nil), y...)
					MatMul4I8(false, m, n, k, x, packed, absmax, bs, code, beta, y)
					gemv := m <= smallM4 && k%128 == 0 && (bs == 64 || bs%128 == 0)
					gemm := m > smallM4 && k%64 == 0 && bs%64 == 0
					if !HasI8() || !(gemv || gemm) {
						want := append([]float32(nil), y0...)
						MatMul4BF16(false, m, n, k, x, packed, absmax, bs, code, beta, want)
						for i := range want {
							if math.Float32bits(want[i]) != math.Float32bits(y[i]) {
								t.Fatalf("%s bs=%d %v: y[%d] = %v, MatMul4BF16 gives %v", name, bs, dims, i, y[i], want[i])
							}
						}
						continue
					}
					ran[gemm] = true
					for i := 0; i < m; i++ {
						xi := x[i*k : (i+1)*k]
						for o := 0; o < n; o++ {
							rounded, exact, mag := i8Reference(code, packed, absmax, bs, k, o, xi)
							if beta != 0 {
								rounded += float64(beta) * float64(y0[i*n+o])
								exact += float64(beta) * float64(y0[i*n+o])
								mag += math.Abs(float64(beta) * float64(y0[i*n+o]))
							}
							got := float64(y[i*n+o])
							if d := math.Abs(got - rounded); d > 1e-5*mag+1e-6 {
								t.Fatalf("%s bs=%d %v: y[%d,%d] = %v, float64 of its roundings %v (|terms| %v)", name, bs, dims, i, o, got, rounded, mag)
							}
							// Each product moves by at most half a step of x's bytes and of the
							// codebook's: |x|·absmax/254 + (amax/254)·absmax, summed; mag/2 is Σ|x|·absmax.
							if d := math.Abs(got - exact); d > mag/2/254+float64(k)*maxAbs(xi)*maxAbs(absmax)/254 {
								t.Fatalf("%s bs=%d %v: y[%d,%d] = %v, exact %v: more than 8-bit rounding explains", name, bs, dims, i, o, got, exact)
							}
							maxDiff = max(maxDiff, math.Abs(got-exact)/(mag+1e-30))
						}
					}
				}
			}
		}
		if HasI8() && (!ran[false] || !ran[true]) {
			t.Errorf("the 8-bit GEMV ran: %v, the GEMM: %v", ran[false], ran[true])
		}
		if HasI8() && maxDiff < 1e-5 {
			// One output may land near the exact one by chance; all of them cannot.
			t.Errorf("the 8-bit paths gave the exact products (largest relative difference %.3g)", maxDiff)
		}
		// A NaN or an infinity in x: y is NaN (the float32 product: NaN, or ±Inf where no
		// infinity meets a zero weight).
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
			packed, absmax := randQuant4(r, 3, 256, 64)
			x, y := randn(r, 256), make([]float32, 3)
			x[200] = bad
			MatMul4I8(false, 1, 3, 256, x, packed, absmax, 64, codebooks["nf4"], 0, y)
			for i, v := range y {
				if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
					t.Errorf("y[%d] = %v with %v in x", i, v, bad)
				}
			}
			// The GEMM: the row holding it.
			xm, ym := randn(r, 20*256), make([]float32, 20*3)
			xm[7*256+100] = bad
			MatMul4I8(false, 20, 3, 256, xm, packed, absmax, 64, codebooks["nf4"], 0, ym)
			for i, v := range ym {
				if bad := !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0); bad == (i/3 == 7) {
					t.Errorf("GEMM y[%d] = %v with a non-finite x in row 7", i, v)
				}
			}
		}
	})
}

// quantizeI8 against a plain Go rounding of the same blocks, bit for bit: bytes in the kernel's
// layout, scales and the 128·Σ corrections; blocks of zeros, of one value, of wide ranges.
func TestQuantizeI8(t *testing.T) {
	if !HasI8() {
		t.Skip("quantizeI8 runs only with the 8-bit kernels (AVX512_VNNI)")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, k := range []int{128, 256, 2048} {
		x := randn(r, k)
		clear(x[64:128]) // a block of zeros
		for i := range x[:64] {
			x[i] *= float32(math.Pow(10, float64(i%7-3))) // a wide range in one block
		}
		if k > 128 {
			for i := 128; i < 192; i++ {
				x[i] = -0.3 // one value: every byte −127
			}
		}
		xq, xs := make([]int8, k), make([]float32, k/4)
		wq, ws := make([]int8, k), make([]float32, k/4)
		quantizeI8(xq, xs, x)
		quantizeI8Go(wq, ws, x)
		for i := range wq {
			if xq[i] != wq[i] {
				t.Fatalf("k=%d: byte %d = %d, Go rounds to %d", k, i, xq[i], wq[i])
			}
		}
		for i := range ws {
			if math.Float32bits(xs[i]) != math.Float32bits(ws[i]) {
				t.Fatalf("k=%d: scale %d = %v, Go gives %v", k, i, xs[i], ws[i])
			}
		}
	}
}

// quantizeI8Go is quantizeI8 written plainly.
func quantizeI8Go(xq []int8, xs, x []float32) {
	for g := 0; g < len(x); g += 128 {
		gs := xs[g/128*32 : g/128*32+32]
		for h := 0; h < 2; h++ {
			blk := x[g+64*h : g+64*h+64]
			amax := float32(0)
			for _, v := range blk {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			inv := float32(0)
			if amax > 0 {
				inv = 127 / amax
			}
			sum := 0
			for i := 0; i < 32; i++ {
				odd := int8(math.RoundToEven(float64(blk[2*i+1] * inv)))
				even := int8(math.RoundToEven(float64(blk[2*i] * inv)))
				xq[g+32*h+i], xq[g+64+32*h+i] = odd, even
				sum += int(odd) + int(even)
			}
			s := amax / 127 / 127
			for l := 0; l < 8; l++ {
				gs[8*h+l] = s
				gs[16+8*h+l] = 128 * s * float32(sum) / 8
			}
		}
	}
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}
