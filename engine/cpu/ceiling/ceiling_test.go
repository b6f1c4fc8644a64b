package ceiling

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

func units(t *testing.T) []Unit {
	var us []Unit
	for _, u := range []Unit{AVX512, AVX2, Scalar} {
		if Has(u) {
			us = append(us, u)
		}
	}
	if os.Getenv("LATHE_REQUIRE_AVX2") == "1" && !Has(AVX2) {
		t.Fatal("LATHE_REQUIRE_AVX2=1 but this CPU has no AVX2/FMA")
	}
	return us
}

// The vector read loops sum what they read: checked against a float64 sum on lengths that are
// not multiples of the 64-float step.
func TestReadSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, u := range units(t) {
		for _, n := range []int{1, 63, 64, 65, 1000, 4099} {
			x := make([]float32, n)
			want := 0.0
			for i := range x {
				x[i] = r.Float32() + 0.25
				want += float64(x[i])
			}
			got := float64(readSum(u, x))
			if math.Abs(got-want) > 1e-5*want {
				t.Errorf("%s n=%d: sum %v, float64 %v", u, n, got, want)
			}
		}
	}
}

// The FMA loops compute what they claim: sixteen accumulators of a = a·0.999 + 0.001 from 0, whose
// closed form is 1 − 0.999ⁿ each (lane 0 of three of them is returned for the vector loops).
func TestFMALoop(t *testing.T) {
	for _, n := range []int{1, 7, 300} {
		acc := 1 - math.Pow(0.999, float64(n))
		if got := float64(fmaLoopGo(n)); math.Abs(got-16*acc) > 1e-4 {
			t.Errorf("go n=%d: %v, want %v", n, got, 16*acc)
		}
		if Has(AVX512) {
			if got := float64(fma512(n)); math.Abs(got-3*acc) > 1e-5 {
				t.Errorf("avx512 n=%d: %v, want %v", n, got, 3*acc)
			}
		}
		if Has(AVX512VNNI) {
			// Each accumulator gains four products of 1·1 a round; three are summed.
			if got, want := float64(dpbusd512(n)), 12*float64(n); got != want {
				t.Errorf("avx512_vnni n=%d: %v, want %v", n, got, want)
			}
		}
		if Has(AVX512BF16) {
			// Each accumulator gains 2·2⁻⁸·2⁻⁸ a round, exactly; three are summed.
			if got, want := float64(dpbf16512(n)), 3*float64(n)*0x1p-15; got != want {
				t.Errorf("avx512_bf16 n=%d: %v, want %v", n, got, want)
			}
		}
		if Has(AVX2) {
			// Y0 and Y1 take two FMAs a round: 2·(1 − 0.999²ⁿ) + (1 − 0.999ⁿ).
			want := 2*(1-math.Pow(0.999, float64(2*n))) + acc
			if got := float64(fma256(n)); math.Abs(got-want) > 1e-5 {
				t.Errorf("avx2 n=%d: %v, want %v", n, got, want)
			}
		}
	}
}

// The probes give plausible rates: an FMA peak above 10 Mflop/s (the host may be busy with other
// work) and no more than 64 flops a cycle at 6 GHz, bandwidths between 100 MB/s and 10 TB/s, and
// the vector units faster than the portable loop.
func TestProbes(t *testing.T) {
	const d = 20 * time.Millisecond
	buf := make([]float32, 1<<20)
	dst := make([]float32, len(buf))
	for i := range buf {
		buf[i] = float32(i%7) + 0.5
	}
	scalar := FMAPeak(Scalar, 1, d)
	for _, u := range units(t) {
		f := FMAPeak(u, 1, d)
		if f < 1e7 || f > 64*6e9 {
			t.Errorf("%s FMA peak %.3g flop/s", u, f)
		}
		if u != Scalar && f < scalar {
			t.Errorf("%s FMA peak %.3g below the portable loop's %.3g", u, f, scalar)
		}
		if bw := ReadBandwidth(u, buf, 2, d); bw < 1e8 || bw > 1e13 {
			t.Errorf("%s read bandwidth %.3g B/s", u, bw)
		}
		if bw := ReadPass(u, buf, 2); bw < 1e8 || bw > 1e13 {
			t.Errorf("%s one read pass %.3g B/s", u, bw)
		}
	}
	if bw := CopyBandwidth(dst, buf, 2, d); bw < 1e8 || bw > 1e13 {
		t.Errorf("copy bandwidth %.3g B/s", bw)
	}
	for i := range dst {
		if dst[i] != buf[i] {
			t.Fatalf("copy: dst[%d] = %v, want %v", i, dst[i], buf[i])
		}
	}
	if Has(AVX512VNNI) {
		// Four byte products a lane: more operations than the f32 FMA, at most 256 a cycle at 6 GHz.
		f, fma := FMAPeak(AVX512VNNI, 1, d), FMAPeak(AVX512, 1, d)
		if f < fma || f > 256*6e9 {
			t.Errorf("avx512_vnni peak %.3g op/s (f32 FMA %.3g)", f, fma)
		}
	}
	if Has(AVX512BF16) {
		// Two products an instruction: more flops than the f32 FMA, at most 128 a cycle at 6 GHz.
		f, fma := FMAPeak(AVX512BF16, 1, d), FMAPeak(AVX512, 1, d)
		if f < fma || f > 128*6e9 {
			t.Errorf("avx512_bf16 peak %.3g flop/s (f32 FMA %.3g)", f, fma)
		}
	}
	if FMAPeak(Unit("nope"), 1, d) != 0 {
		t.Error("an unknown unit has a peak")
	}
	if ReadPass(Unit("nope"), buf, 2) != 0 || ReadPass(AVX2, buf[:100], 2) != 0 {
		t.Error("a read pass on an unknown unit or a short buffer has a rate")
	}
}
