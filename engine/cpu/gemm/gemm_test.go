package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/quant"
)

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// requireAVX2 skips a test of the assembly kernels on a CPU without AVX2/FMA (or a build without
// them), or fails it under LATHE_REQUIRE_AVX2=1 (CI, whose machines have AVX2): the kernels are
// never silently untested there.
func requireAVX2(t *testing.T) {
	t.Helper()
	if useAVX2 {
		return
	}
	if os.Getenv("LATHE_REQUIRE_AVX2") == "1" {
		t.Fatal("LATHE_REQUIRE_AVX2=1 but the AVX2/FMA kernels are not in use (no AVX2/FMA on this CPU, or a purego build)")
	}
	t.Skip("no AVX2/FMA on this CPU: only the Go path exists")
}

// isas are the instruction sets this CPU runs, widest first, the portable Go path last. Under
// LATHE_REQUIRE_AVX2=1 (CI) a CPU without AVX2/FMA fails the test instead, and under
// LATHE_REQUIRE_AVX512=1 one without AVX-512: the kernels are never silently untested there.
func isas(t *testing.T) []ISA {
	t.Helper()
	if os.Getenv("LATHE_REQUIRE_AVX2") == "1" && !hasAVX2 {
		t.Fatal("LATHE_REQUIRE_AVX2=1 but the AVX2/FMA kernels cannot run (no AVX2/FMA on this CPU, or a purego build)")
	}
	if os.Getenv("LATHE_REQUIRE_AVX512") == "1" && !hasAVX512 {
		t.Fatal("LATHE_REQUIRE_AVX512=1 but the AVX-512 kernels cannot run (no AVX-512F on this CPU, or a purego build)")
	}
	var out []ISA
	if hasAVX512 {
		out = append(out, ISAAVX512)
	}
	if hasAVX2 {
		out = append(out, ISAAVX2)
	}
	return append(out, ISAGo)
}

// useISA switches the kernels to isa until the test ends.
func useISA(t *testing.T, isa ISA) {
	t.Helper()
	prev, err := SetISA(isa)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = SetISA(prev) })
}

// withAVX2 runs f on every instruction set this CPU runs (AVX-512, AVX2, then the portable Go
// path, as on other architectures or with -tags purego), as subtests.
func withAVX2(t *testing.T, f func(t *testing.T)) {
	for _, isa := range isas(t) {
		t.Run(string(isa), func(t *testing.T) {
			useISA(t, isa)
			f(t)
		})
	}
}

// refGemm is the float64 reference, also returning Σ|α·a·b| + |β·c| per element for the tolerance.
func refGemm(transA, transB bool, m, n, k int, alpha float64, a []float32, lda int, b []float32, ldb int, beta float64, c []float32, ldc int) (want, mag []float64) {
	want, mag = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s, g := 0.0, 0.0
			for p := 0; p < k; p++ {
				var av, bv float64
				if transA {
					av = float64(a[p*lda+i])
				} else {
					av = float64(a[i*lda+p])
				}
				if transB {
					bv = float64(b[j*ldb+p])
				} else {
					bv = float64(b[p*ldb+j])
				}
				s += av * bv
				g += math.Abs(av * bv)
			}
			v, g := alpha*s, math.Abs(alpha)*g
			if beta != 0 {
				v += beta * float64(c[i*ldc+j])
				g += math.Abs(beta * float64(c[i*ldc+j]))
			}
			want[i*n+j], mag[i*n+j] = v, g
		}
	}
	return
}

// sgemmCase holds the operands of one random Sgemm, with row strides pad elements longer than the
// rows; C is NaN-poisoned when beta == 0 (it must not be read) and its padding always is (it must
// not be written).
type sgemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

func newCase(r *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad int) *sgemmCase {
	s := &sgemmCase{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	s.lda, s.ldb, s.ldc = k+pad, n+pad, n+pad
	arows, brows := m, k
	if transA {
		s.lda, arows = m+pad, k
	}
	if transB {
		s.ldb, brows = k+pad, n
	}
	s.a, s.b, s.c = randn(r, arows*s.lda), randn(r, brows*s.ldb), randn(r, m*s.ldc)
	for i := range s.c {
		if beta == 0 || i%s.ldc >= n {
			s.c[i] = float32(math.NaN())
		}
	}
	return s
}

func (s *sgemmCase) run() []float32 {
	c := append([]float32(nil), s.c...)
	Sgemm(s.transA, s.transB, s.m, s.n, s.k, s.alpha, s.a, s.lda, s.b, s.ldb, s.beta, c, s.ldc)
	return c
}

func (s *sgemmCase) String() string {
	return fmt.Sprintf("Sgemm(tA=%v,tB=%v,m=%d,n=%d,k=%d,α=%v,β=%v,lda=%d,ldb=%d,ldc=%d)", s.transA, s.transB, s.m, s.n, s.k, s.alpha, s.beta, s.lda, s.ldb, s.ldc)
}

// check compares got with the float64 reference: the error bound is float32 rounding over a sum
// of k terms, relative to Σ|terms|.
func (s *sgemmCase) check(t *testing.T, got []float32) {
	t.Helper()
	want, mag := refGemm(s.transA, s.transB, s.m, s.n, s.k, float64(s.alpha), s.a, s.lda, s.b, s.ldb, float64(s.beta), s.c, s.ldc)
	for i := 0; i < s.m; i++ {
		for j := 0; j < s.ldc; j++ {
			v := float64(got[i*s.ldc+j])
			if j >= s.n {
				if !math.IsNaN(v) {
					t.Fatalf("%v wrote C[%d,%d] in the stride padding", s, i, j)
				}
				continue
			}
			tol := 2e-7*mag[i*s.n+j]*math.Sqrt(float64(s.k)+1) + 1e-6
			if math.IsNaN(v) || math.Abs(v-want[i*s.n+j]) > tol {
				t.Fatalf("%v: C[%d,%d] = %v, want %v (tol %g)", s, i, j, v, want[i*s.n+j], tol)
			}
		}
	}
}

var transposes = [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}}

// Odd sizes, none a multiple of a tile (mr = 6, nr = 16) or block, some just past one.
var sizes = []int{1, 2, 3, 5, 7, 17, 31, 33, 65, 127, 129, 257}

func TestSgemmAgainstFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, tr := range transposes {
			for i, m := range sizes {
				n := sizes[(i+4)%len(sizes)]
				k := sizes[(i+9)%len(sizes)]
				for _, s := range []*sgemmCase{
					newCase(r, tr[0], tr[1], m, n, k, 1, 0, 0),
					newCase(r, tr[0], tr[1], m, n, k, -0.7, 0.5, 3),
					newCase(r, tr[0], tr[1], n, k, m, 1.3, 1, 1),
					newCase(r, tr[0], tr[1], k, m, n, 0.5, 0, 2),
				} {
					s.check(t, s.run())
				}
			}
			// Larger: several kc blocks, column panels and row splits, with padding.
			s := newCase(r, tr[0], tr[1], 300, 257, 513, 1.5, 0.5, 5)
			s.check(t, s.run())
		}
	})
}

// Shapes past every blocking edge: kc blocks, nc panels, the mBig row chunks, and the narrow-n case
// where the rows are split between workers.
func TestSgemmBlockEdges(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, s := range []*sgemmCase{
			newCase(r, false, true, 2*mr+1, 2*nc+nr+3, 2*kc+3, 1, 0, 0),
			newCase(r, true, false, mBig+mr+1, 23, 9, 0.25, 1, 1),
			newCase(r, false, false, 2*mBig+1, 2, 5, 1, 0, 0),
			newCase(r, false, true, 257, 9, kc+1, 1, 0.5, 7),
			newCase(r, true, true, 64, nc+1, kc, 2, 0, 1),
		} {
			s.check(t, s.run())
		}
	})
}

func TestSgemmDegenerate(t *testing.T) {
	c := []float32{float32(math.NaN()), 2, 3, 4}
	Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2) // k = 0, beta = 0: C = 0
	require.Equal(t, []float32{0, 0, 0, 0}, c)
	c = []float32{1, 2, 3, 4}
	Sgemm(false, false, 2, 2, 3, 0, make([]float32, 6), 3, make([]float32, 6), 2, 2, c, 2) // alpha = 0
	require.Equal(t, []float32{2, 4, 6, 8}, c)
	Sgemm(false, false, 0, 2, 3, 1, nil, 3, nil, 2, 0, nil, 2) // m = 0: nothing to do
}

// The AVX2 path and the Go path agree at the sizes where the fast paths switch: m = 1 (GEMV) vs 2,
// the 32-element threshold of the AVX2 dot/axpy, full vs edge micro-tiles, one kc block vs two, one
// column panel vs two, and the work size below which no goroutines start.
func TestFastMatchesPlain(t *testing.T) {
	requireAVX2(t)
	r := rand.New(rand.NewPCG(5, 6))
	var cases []*sgemmCase
	for _, tr := range transposes {
		for _, m := range []int{1, 2, mr - 1, mr, mr + 1} {
			for _, n := range []int{1, nr - 1, nr, nr + 1, nc, nc + 1} {
				for _, k := range []int{31, 32, 33, kc, kc + 1} {
					cases = append(cases, newCase(r, tr[0], tr[1], m, n, k, 0.75, 0.5, 1))
				}
			}
		}
	}
	for _, s := range cases {
		useISA(t, ISAGo)
		slow := s.run()
		for _, isa := range isas(t) {
			useISA(t, isa)
			fast := s.run()
			for i := range fast {
				if i%s.ldc >= s.n {
					continue
				}
				d := math.Abs(float64(fast[i] - slow[i]))
				require.LessOrEqual(t, d, 1e-5*math.Sqrt(float64(s.k))*(1+math.Abs(float64(slow[i]))), "%s %v [%d]", isa, s, i)
			}
		}
	}
	// The GEMV path (m = 1, and m ≤ smallM when op(B) = Bᵀ) against the first rows of the same
	// product through the blocked path.
	for _, tr := range transposes {
		s := newCase(r, tr[0], tr[1], smallM+1, 300, 301, 1, 0, 0)
		blockedC := s.run()
		for _, m := range []int{1, 2, smallM} {
			c := append([]float32(nil), s.c...)
			Sgemm(tr[0], tr[1], m, s.n, s.k, 1, s.a, s.lda, s.b, s.ldb, 0, c, s.ldc)
			for i := 0; i < m; i++ {
				for j := 0; j < s.n; j++ {
					require.InDelta(t, blockedC[i*s.ldc+j], c[i*s.ldc+j], 1e-4, "%v: m=%d vs blocked at [%d,%d]", s, m, i, j)
				}
			}
		}
	}
}

// The AVX2 micro-kernel and the Go one agree to float32 rounding (FMA rounds once where Go rounds
// twice) on every edge-tile shape, and so do dot and axpy across their 32-element switch.
func TestKernelsAgree(t *testing.T) {
	requireAVX2(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, k := range []int{1, 2, 7, 256} {
		a, b := randn(r, k*mr), randn(r, k*nr)
		var fast, slow [mr * nr]float32
		kernelGo(k, a, b, &slow)
		kern6x16(k, &a[0], &b[0], &fast[0], nr, 1, 0)
		for i := range fast {
			require.InDelta(t, slow[i], fast[i], 1e-5*float64(k), "k=%d [%d]", k, i)
		}
		if hasAVX512 {
			// alpha and beta through the AVX-512 kernel's own epilogue, against the same tile.
			c := randn(r, mr*nr)
			want := make([]float32, len(c))
			for i := range c {
				want[i] = 0.5*slow[i] - 2*c[i]
			}
			kern6x16AVX512(k, &a[0], &b[0], &c[0], nr, 0.5, -2, mr, 1)
			for i := range c {
				require.InDelta(t, want[i], c[i], 1e-5*float64(k), "avx512 k=%d [%d]", k, i)
			}
		}
	}
	for _, n := range []int{1, 31, 32, 33, 1001} {
		x, y := randn(r, n), randn(r, n)
		require.InDelta(t, dotGo(x, y), dot(x, y), 1e-4*math.Sqrt(float64(n)))
		y2 := append([]float32(nil), y...)
		axpy(0.3, x, y)
		axpyGo(0.3, x, y2)
		for i := range y {
			require.InDelta(t, y2[i], y[i], 1e-6)
		}
	}
}

// randQuant4 is a random 4-bit weight [n, k] in the bitsandbytes layout.
func randQuant4(r *rand.Rand, n, k, blocksize int) (packed []byte, absmax []float32) {
	packed = make([]byte, (n*k+1)/2)
	for i := range packed {
		packed[i] = byte(r.IntN(256))
	}
	absmax = make([]float32, (n*k+blocksize-1)/blocksize)
	for i := range absmax {
		absmax[i] = float32(0.1 + r.Float64())
	}
	return
}

// dequant64 is the float64 value of every element of a 4-bit weight, straight from the format's
// definition.
func dequant64(packed []byte, absmax []float32, n, k, blocksize int, code *[16]float32) []float64 {
	w := make([]float64, n*k)
	for i := range w {
		q := packed[i/2] >> 4
		if i%2 == 1 {
			q = packed[i/2] & 15
		}
		w[i] = float64(code[q]) * float64(absmax[i/blocksize])
	}
	return w
}

// Codebooks from package quant, plus a made-up one with no symmetry or order, in case a kernel
// relied on either.
var codebooks = map[string]*[16]float32{
	"nf4": &quant.NF4Code,
	"fp4": &quant.FP4Code,
	"odd": {0.3, -1, 0.9, 0.05, -0.25, 1, -0.6, 0.7, -0.125, 0.45, -0.8, 0.15, 0, -0.4, 0.6, -0.05},
}

func TestMatMul4AgainstDequantizedFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for name, code := range codebooks {
			for _, bs := range []int{64, 128} {
				for _, m := range []int{1, 3, 5, 8, 11, smallM4, smallM4 + 1, 64} {
					// n·k is not a multiple of the blocksize (blocks span rows), k is or is not a
					// multiple of 16 (the AVX2 GEMV's groups), rows start mid-block or not.
					for _, dims := range [][2]int{{37, 53}, {129, 31}, {5, 301}, {33, 80}, {19, 128}, {300, 272}} {
						n, k := dims[0], dims[1]
						packed, absmax := randQuant4(r, n, k, bs)
						w := dequant64(packed, absmax, n, k, bs, code)
						for _, transW := range []bool{false, true} {
							checkMatMul4(t, r, name, transW, m, n, k, packed, absmax, bs, code, w)
						}
					}
				}
			}
		}
	})
}

func checkMatMul4(t *testing.T, r *rand.Rand, name string, transW bool, m, n, k int, packed []byte, absmax []float32, bs int, code *[16]float32, w []float64) {
	t.Helper()
	in, out := k, n
	if transW {
		in, out = n, k
	}
	x := randn(r, m*in)
	y := randn(r, m*out)
	beta := float32(0)
	if m%2 == 1 && in%2 == 1 {
		beta = 0.5
	} else {
		for i := range y {
			y[i] = float32(math.NaN())
		}
	}
	y0 := append([]float32(nil), y...)
	MatMul4(transW, m, n, k, x, packed, absmax, bs, code, beta, y)
	for i := 0; i < m; i++ {
		for o := 0; o < out; o++ {
			s, g := 0.0, 0.0
			for c := 0; c < in; c++ {
				var wv float64
				if transW {
					wv = w[c*k+o]
				} else {
					wv = w[o*k+c]
				}
				s += float64(x[i*in+c]) * wv
				g += math.Abs(float64(x[i*in+c]) * wv)
			}
			if beta != 0 {
				s += float64(beta) * float64(y0[i*out+o])
				g += math.Abs(float64(beta) * float64(y0[i*out+o]))
			}
			got := float64(y[i*out+o])
			tol := 2e-7*g*math.Sqrt(float64(in)+1) + 1e-6
			if math.IsNaN(got) || math.Abs(got-s) > tol {
				t.Fatalf("MatMul4(%s, transW=%v, m=%d, n=%d, k=%d, bs=%d, β=%v) y[%d,%d] = %v, want %v (tol %g)", name, transW, m, n, k, bs, beta, i, o, got, s, tol)
			}
		}
	}
}

// The dequantizer, from every start offset (odd ones begin on a low nibble) and length, across
// block edges, through the AVX2 16-element groups and the Go tail.
func TestDequantSpan(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		const n, k, bs = 7, 45, 64
		packed, absmax := randQuant4(r, n, k, bs)
		w := dequant64(packed, absmax, n, k, bs, codebooks["odd"])
		q := &quant4{packed: packed, absmax: absmax, bs: bs, code: codebooks["odd"]}
		for e0 := 0; e0 < 70; e0++ {
			for l := 0; e0+l <= n*k && l < 200; l += 1 + l/8 {
				got := make([]float32, l)
				q.span(e0, got)
				for i, v := range got {
					require.Equal(t, float32(w[e0+i]), v, "span(%d, %d)[%d]", e0, l, i)
				}
			}
		}
	})
}

// MatMul4's paths agree where they switch: one row vs four at a time in the GEMV, smallM4 rows
// (GEMV) vs smallM4+1 (dequantized GEMM), AVX2 vs Go.
func TestMatMul4FastMatchesPlain(t *testing.T) {
	requireAVX2(t)
	r := rand.New(rand.NewPCG(11, 12))
	const n, k, bs = 70, 96, 64 // k a multiple of 16, so the AVX2 GEMV runs; rows start mid-block
	packed, absmax := randQuant4(r, n, k, bs)
	x := randn(r, (smallM4+1)*k)
	run := func(m int, isa ISA) []float32 {
		useISA(t, isa)
		y := make([]float32, m*n)
		MatMul4(false, m, n, k, x, packed, absmax, bs, &quant.NF4Code, 0, y)
		return y
	}
	ref := run(smallM4+1, ISAGo)
	for _, m := range []int{1, 2, 4, 5, 8, 9, 12, smallM4, smallM4 + 1} {
		for _, isa := range isas(t) {
			got := run(m, isa)
			for i := range got {
				require.InDelta(t, ref[i], got[i], 1e-4*(1+math.Abs(float64(ref[i]))), "m=%d %s [%d]", m, isa, i)
			}
		}
	}
}

// A deep product cut into depth parts (to bound packed A) gives the same bits as one pass over the
// whole depth, for the f32, 16-bit and 4-bit weight paths, and matches the float64 reference; the
// shapes leave a ragged last part and are off every tile.
func TestDepthPartsSameBits(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		m, n, k := 2*mr+1, nr+5, 5*kc+37
		whole := func(f func() []float32) []float32 {
			defer func(v int) { aBig = v }(aBig)
			aBig = 1 << 40
			return f()
		}
		// Two kc blocks of the rows at a time: three parts, the last ragged.
		defer func(v int) { aBig = v }(aBig)
		aBig = 2 * kc * ((m + mr - 1) / mr * mr)
		for _, tr := range transposes {
			s := newCase(r, tr[0], tr[1], m, n, k, 0.75, 0.5, 3)
			got := s.run()
			requireSameBits(t, whole(s.run), got, s)
			s.check(t, got)
			s = newCase(r, tr[0], tr[1], m, n, k, 1, 0, 0)
			requireSameBits(t, whole(s.run), s.run(), s)
		}
		x := randn(r, m*k)
		w16, _ := rand16(r, n*k, true)
		mm16 := func() []float32 {
			y := make([]float32, m*n)
			MatMul16(false, m, n, k, x, w16, true, 0, y)
			return y
		}
		requireSameBits(t, whole(mm16), mm16(), "MatMul16")
		// The backward's dx = dy·W with W n×din: deep in n (the vocabulary, for the output layer).
		din := nr + 5
		wt, _ := rand16(r, k*din, false)
		dy := randn(r, m*k)
		mm16t := func() []float32 {
			dx := make([]float32, m*din)
			MatMul16(true, m, k, din, dy, wt, false, 0, dx)
			return dx
		}
		requireSameBits(t, whole(mm16t), mm16t(), "MatMul16 transposed")
	})
}

// requireSameBits compares bit patterns (NaN padding included).
func requireSameBits(t *testing.T, want, got []float32, what any) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%v: element %d is %v, one pass gives %v", what, i, got[i], want[i])
		}
	}
}
