package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/internal/cputime"
)

// withF16C runs f with the assembly widening on, then off (the Go conversion).
func withF16C(t *testing.T, f func(t *testing.T)) {
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("f16c=%v", fast), func(t *testing.T) {
			if fast && !useF16C {
				requireAVX2(t) // fails under LATHE_REQUIRE_AVX2=1, else skips
				if !useF16C {
					t.Skip("no F16C on this CPU")
				}
			}
			defer func(v bool) { useF16C = v }(useF16C)
			useF16C = fast
			f(t)
		})
	}
}

// rand16 draws n weights of scale about 1 (normal, so their exponents vary) stored in 16 bits, and
// returns them widened exactly as float64.
func rand16(r *rand.Rand, n int, bf bool) ([]uint16, []float64) {
	w, wide := make([]uint16, n), make([]float64, n)
	for i := range w {
		v := float32(r.NormFloat64())
		if bf {
			w[i] = uint16(math.Float32bits(v) >> 16)
			wide[i] = float64(math.Float32frombits(uint32(w[i]) << 16))
		} else {
			w[i] = float16.Fromfloat32(v).Bits()
			wide[i] = float64(float16.Frombits(w[i]).Float32())
		}
	}
	return w, wide
}

// Every 16-bit pattern widens to the value the format defines, in the assembly and in Go, at every
// length (the 8-wide groups and the tail).
func TestWiden(t *testing.T) {
	withF16C(t, func(t *testing.T) {
		src := make([]uint16, 1<<16)
		for i := range src {
			src[i] = uint16(i)
		}
		for _, bf := range []bool{false, true} {
			dst := make([]float32, len(src))
			Widen(dst, src, bf)
			for i, h := range src {
				var want float32
				if bf {
					want = math.Float32frombits(uint32(h) << 16)
				} else {
					want = float16.Frombits(h).Float32()
				}
				if want != want {
					require.True(t, dst[i] != dst[i], "bf=%v %04x: want NaN, got %v", bf, h, dst[i])
					continue
				}
				require.Equal(t, math.Float32bits(want), math.Float32bits(dst[i]), "bf=%v %04x", bf, h)
			}
			for l := 0; l < 40; l++ {
				part := make([]float32, l)
				Widen(part, src[0x3c00:], bf)
				require.Equal(t, dst[0x3c00:0x3c00+l], part, "bf=%v length %d", bf, l)
			}
		}
	})
}

func TestMatMul16AgainstFloat64(t *testing.T) {
	withAVX2(t, func(t *testing.T) {
		withF16C(t, func(t *testing.T) {
			r := rand.New(rand.NewPCG(21, 22))
			for _, bf := range []bool{false, true} {
				// n and k below, at and above the micro-tile (16), the panel (256) and odd.
				for _, dims := range [][2]int{{37, 53}, {16, 16}, {129, 31}, {5, 301}, {300, 257}, {17, 8}} {
					n, k := dims[0], dims[1]
					w, wide := rand16(r, n*k, bf)
					for _, m := range []int{1, 2, 3, smallM16, smallM16 + 1, 7, 13} {
						for _, transW := range []bool{false, true} {
							checkMatMul16(t, r, bf, transW, m, n, k, w, wide)
						}
					}
				}
			}
		})
	})
}

func checkMatMul16(t *testing.T, r *rand.Rand, bf, transW bool, m, n, k int, w []uint16, wide []float64) {
	t.Helper()
	in, out := k, n
	if transW {
		in, out = n, k
	}
	x := randn(r, m*in)
	y := randn(r, m*out)
	beta := float32(0)
	if (m+in)%2 == 1 {
		beta = 0.5
	} else {
		for i := range y {
			y[i] = float32(math.NaN()) // beta 0: y must not be read
		}
	}
	y0 := append([]float32(nil), y...)
	MatMul16(transW, m, n, k, x, w, bf, beta, y)
	for i := 0; i < m; i++ {
		for o := 0; o < out; o++ {
			s, g := 0.0, 0.0
			for c := 0; c < in; c++ {
				var wv float64
				if transW {
					wv = wide[c*k+o]
				} else {
					wv = wide[o*k+c]
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
				t.Fatalf("MatMul16(bf=%v, transW=%v, m=%d, n=%d, k=%d, β=%v) y[%d,%d] = %v, want %v (tol %g)", bf, transW, m, n, k, beta, i, o, got, s, tol)
			}
		}
	}
}

// MatMul16 on every instruction set (the AVX-512 GEMV widens in registers, the others into a row
// buffer or the packed panels) against the plain path, Sgemm on the widened weights with the
// portable Go kernels: f16 and bf16, both transposes, rows on both sides of the GEMV switch, and
// inner lengths that are a multiple of the 64-wide dot (128) and not (263).
func TestMatMul16FastMatchesPlain(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	const n = 70
	for _, k := range []int{128, 263} {
		for _, bf := range []bool{false, true} {
			w, _ := rand16(r, n*k, bf)
			wf := make([]float32, n*k)
			Widen(wf, w, bf)
			for _, m := range []int{1, 3, smallM16, smallM16 + 1, 9, 31} {
				for _, transW := range []bool{false, true} {
					in, out := k, n
					if transW {
						in, out = n, k
					}
					x := randn(r, m*in)
					want := make([]float32, m*out)
					prev, err := SetISA(ISAGo)
					require.NoError(t, err)
					Sgemm(false, !transW, m, out, in, 1, x, in, wf, k, 0, want, out)
					_, _ = SetISA(prev)
					withAVX2(t, func(t *testing.T) {
						got := make([]float32, m*out)
						MatMul16(transW, m, n, k, x, w, bf, 0, got)
						for i := range got {
							require.InDelta(t, want[i], got[i], 1e-5*(1+math.Abs(float64(want[i]))), "k=%d bf=%v transW=%v m=%d [%d]", k, bf, transW, m, i)
						}
					})
				}
			}
		}
	}
}

// BenchmarkMatMul16: the 16-bit product beside Sgemm on a float32 copy of the same weights (the
// memory the 16-bit path saves) and, where the CPU has AVX512_BF16, the bf16 weights multiplied in
// bfloat16 (MatMul16BF16), interleaved in one run: MatMul16/{f16,bf16,bf16-compute,f32}/shape=m×n×k/layer.
func BenchmarkMatMul16(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, l := range layers {
		w, _ := rand16(r, l.out*l.in, false)
		wb, _ := rand16(r, l.out*l.in, true)
		wf := make([]float32, l.out*l.in)
		Widen(wf, w, false)
		for _, m := range tokens {
			x := randn(r, m*l.in)
			y := make([]float32, m*l.out)
			flops := 2 * float64(m) * float64(l.out) * float64(l.in)
			shape := fmt.Sprintf("shape=%dx%dx%d/%s", m, l.out, l.in, l.name)
			io := 4 * float64(m*(l.in+l.out))
			b.Run("f16/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul16(false, m, l.out, l.in, x, w, false, 0, y)
				}
				report(b, flops, 2*float64(len(w))+io)
			})
			b.Run("bf16/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul16(false, m, l.out, l.in, x, wb, true, 0, y)
				}
				report(b, flops, 2*float64(len(w))+io)
			})
			if HasBF16() {
				b.Run("bf16-compute/"+shape, func(b *testing.B) {
					for b.Loop() {
						MatMul16BF16(false, m, l.out, l.in, x, wb, 0, y)
					}
					report(b, flops, 2*float64(len(w))+io)
				})
			}
			b.Run("f32/"+shape, func(b *testing.B) {
				for b.Loop() {
					Sgemm(false, true, m, l.out, l.in, 1, x, l.in, wf, l.in, 0, y, l.out)
				}
				report(b, flops, 4*float64(len(wf))+io)
			})
		}
	}
}

// BenchmarkMatMul16BF16Paths: the products a bfloat16 base gains from bfloat16 compute beyond the
// forward GEMM, widened (MatMul16) beside MatMul16BF16 in the same run: the backward pass's
// dx = dy·W at 512 tokens, and a decode batch of 4 rows.
//
//	go test -run '^$' -bench MatMul16BF16Paths ./engine/cpu/gemm/
func BenchmarkMatMul16BF16Paths(b *testing.B) {
	if !HasBF16() {
		b.Skip("no AVX512_BF16 here: MatMul16BF16 is MatMul16")
	}
	r := rand.New(rand.NewPCG(6, 6))
	for _, l := range layers {
		wb, _ := rand16(r, l.out*l.in, true)
		for _, c := range []struct {
			name   string
			transW bool
			m      int
		}{{"backward", true, 512}, {"rows4", false, 4}} {
			in, out := l.in, l.out
			if c.transW {
				in, out = out, in
			}
			x, y := randn(r, c.m*in), make([]float32, c.m*out)
			flops := 2 * float64(c.m) * float64(l.out) * float64(l.in)
			shape := fmt.Sprintf("%s/shape=%dx%dx%d/%s", c.name, c.m, l.out, l.in, l.name)
			b.Run("widened/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul16(c.transW, c.m, l.out, l.in, x, wb, true, 0, y)
				}
				report(b, flops, 2*float64(len(wb))+4*float64(c.m*(in+out)))
			})
			b.Run("bf16-compute/"+shape, func(b *testing.B) {
				for b.Loop() {
					MatMul16BF16(c.transW, c.m, l.out, l.in, x, wb, 0, y)
				}
				report(b, flops, 2*float64(len(wb))+4*float64(c.m*(in+out)))
			})
		}
	}
}

// BenchmarkGEMV16Paths: decoding's 16-bit GEMV (one row of x, bf16 and f16 weights) on the
// AVX-512 path, which widens in registers inside the dot product, beside the AVX2 path, which
// widens each row into a buffer and then dots it, in the same run; cpu-ms/op is the CPU time a
// call used (all threads).
//
//	go test -run '^$' -bench GEMV16Paths -count 3 ./engine/cpu/gemm/
func BenchmarkGEMV16Paths(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, l := range [][2]int{{8192, 2048}, {2048, 8192}} {
		n, k := l[0], l[1]
		x, y := randn(r, k), make([]float32, n)
		for _, bf := range []bool{true, false} {
			w, _ := rand16(r, n*k, bf)
			for _, isa := range []ISA{ISAAVX512, ISAAVX2} {
				b.Run(fmt.Sprintf("bf16=%v/%dx%d/isa=%s", bf, n, k, isa), func(b *testing.B) {
					prev, err := SetISA(isa)
					if err != nil {
						b.Skip(err)
					}
					defer SetISA(prev)
					c0 := cputime.Seconds()
					for b.Loop() {
						MatMul16(false, 1, n, k, x, w, bf, 0, y)
					}
					report(b, 2*float64(n*k), 2*float64(n*k))
					b.ReportMetric((cputime.Seconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
				})
			}
		}
	}
}
