// Package ceiling measures what the CPU itself can do, independent of any lathe kernel: the peak
// rate of fused multiply-adds at the widest vector width present (a loop on independent
// accumulators, so latency never limits it), the bandwidth of a streaming read with vector loads,
// and the bandwidth of a copy. lathe bench uses them as the CPU's roofline, and reports lathe's own
// kernels (its matmul included) against them.
package ceiling

import (
	"runtime"
	"sync"
	"time"
)

// Unit is a vector unit the probes can run on.
type Unit string

// The units, widest first.
const (
	AVX512 Unit = "avx512" // 16 f32 lanes (AVX-512F)
	AVX2   Unit = "avx2"   // 8 f32 lanes with FMA3
	Scalar Unit = "go"     // portable Go, no vector unit assumed
	// AVX512BF16 is the bfloat16 dot product VDPBF16PS: 16 f32 lanes, each adding two products.
	// It is not a unit for reads (readSum): FMAPeak only.
	AVX512BF16 Unit = "avx512_bf16"
	// AVX512VNNI is the 8-bit dot product VPDPBUSD: 16 int32 lanes, each adding four products of
	// bytes. Like AVX512BF16, FMAPeak only; its "flops" are 8-bit operations.
	AVX512VNNI Unit = "avx512_vnni"
)

// Lanes is the number of multiply-adds one instruction of the unit does: its f32 lanes, or for
// AVX512BF16 its 32 bfloat16 products, for AVX512VNNI its 64 byte products.
func (u Unit) Lanes() int {
	switch u {
	case AVX512VNNI:
		return 64
	case AVX512BF16:
		return 32
	case AVX512:
		return 16
	case AVX2:
		return 8
	}
	return 1
}

// fmaAccs is the number of independent accumulators of the FMA loop: enough to cover an FMA
// latency of 4 cycles on two pipes twice over.
const fmaAccs = 16

// fmaIter is the number of loop iterations one call runs (16 FMAs each).
const fmaIter = 1 << 16

// FMAPeak measures the flop/s of fused multiply-adds on unit, on threads goroutines at once (each
// runs its own loop), taking the best of several rounds of about d in all. A unit this CPU lacks
// gives 0.
func FMAPeak(unit Unit, threads int, d time.Duration) float64 {
	if !Has(unit) || threads < 1 {
		return 0
	}
	one := func() { fmaLoop(unit, fmaIter) }
	// Warm up: the first wide instructions may run at a lower clock until the unit powers up.
	one()
	// A round is one call on each goroutine.
	flopsPerRound := float64(threads * 2 * fmaAccs * unit.Lanes() * fmaIter)
	best := 0.0
	for _, sec := range rounds(threads, d, one) {
		best = max(best, flopsPerRound/sec)
	}
	return best
}

// rounds runs f repeatedly on threads goroutines at once, for about d in all, and returns the
// seconds per call of each round (a round: every goroutine calls f the same number of times; its
// time is the slowest goroutine's, so one call per goroutine ran in that time).
func rounds(threads int, d time.Duration, f func()) []float64 {
	// Calibrate: how many calls make a round of about d/32. Short rounds, many of them: on a host
	// shared with other work, the best round is the one in which no thread lost its core.
	t0 := time.Now()
	f()
	per := max(time.Since(t0), time.Microsecond)
	calls := max(int(d/32/per), 1)
	var out []float64
	start := time.Now()
	for len(out) < 3 || (time.Since(start) < d && len(out) < 64) {
		t := time.Now()
		var wg sync.WaitGroup
		for g := 0; g < threads; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range calls {
					f()
				}
			}()
		}
		wg.Wait()
		out = append(out, time.Since(t).Seconds()/float64(calls))
	}
	return out
}

// ReadBandwidth measures bytes read per second by a streaming read of buf with vector loads on
// unit (each goroutine of threads takes an equal part), the best of several rounds of about d in
// all. buf should be much larger than the last-level cache.
func ReadBandwidth(unit Unit, buf []float32, threads int, d time.Duration) float64 {
	if !Has(unit) || threads < 1 || len(buf) < threads*1024 {
		return 0
	}
	parts := split(buf, threads)
	readParts(unit, parts) // fault the pages in, fill the TLB
	best := 0.0
	for _, sec := range rounds(1, d, func() { readParts(unit, parts) }) {
		best = max(best, float64(4*len(buf))/sec)
	}
	return best
}

// ReadPass is one streaming read of buf as ReadBandwidth does it, timed: bytes read per second (0
// where unit is absent or buf too short). lathe bench runs one between the timed runs of a kernel
// that reads from memory, so that the kernel's bandwidth stands beside what a plain read got at
// the same moments, on a host whose memory bandwidth varies with its neighbours' work.
func ReadPass(unit Unit, buf []float32, threads int) float64 {
	if !Has(unit) || threads < 1 || len(buf) < threads*1024 {
		return 0
	}
	parts := split(buf, threads)
	t := time.Now()
	readParts(unit, parts)
	return float64(4*len(buf)) / time.Since(t).Seconds()
}

// readSink keeps the reads' sums alive: one slot a goroutine, a cache line apart.
var readSink [64]float32

// readParts reads every part with unit's loads, one goroutine a part.
func readParts(unit Unit, parts [][]float32) {
	var wg sync.WaitGroup
	for g, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			readSink[g*16%len(readSink)] += readSum(unit, p)
		}()
	}
	wg.Wait()
}

// CopyBandwidth measures bytes moved per second (read plus written) by copy(dst, src) (Go's
// memmove, which picks the CPU's widest moves and non-temporal stores for large blocks), split over
// threads goroutines, the best of several rounds of about d in all.
func CopyBandwidth(dst, src []float32, threads int, d time.Duration) float64 {
	n := min(len(dst), len(src))
	if threads < 1 || n < threads*1024 {
		return 0
	}
	ds, ss := split(dst[:n], threads), split(src[:n], threads)
	run := func() {
		var wg sync.WaitGroup
		for g := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				copy(ds[g], ss[g])
			}()
		}
		wg.Wait()
	}
	run()
	best := 0.0
	for _, sec := range rounds(1, d, run) {
		best = max(best, float64(8*n)/sec)
	}
	return best
}

// split cuts buf into parts equal parts whose lengths are multiples of 64 floats (the read loop's
// step), the last part taking the rest.
func split(buf []float32, parts int) [][]float32 {
	step := len(buf) / parts &^ 63
	out := make([][]float32, parts)
	for i := range out {
		end := (i + 1) * step
		if i == parts-1 {
			end = len(buf)
		}
		out[i] = buf[i*step : end]
	}
	return out
}

// Threads is the number of goroutines that run Go code at once: the all-core figure's thread count.
func Threads() int { return runtime.GOMAXPROCS(0) }

// readSumGo is the portable streaming read: the sum of x.
func readSumGo(x []float32) float32 {
	var s [8]float32
	i := 0
	for ; i+8 <= len(x); i += 8 {
		v := (*[8]float32)(x[i:])
		s[0] += v[0]
		s[1] += v[1]
		s[2] += v[2]
		s[3] += v[3]
		s[4] += v[4]
		s[5] += v[5]
		s[6] += v[6]
		s[7] += v[7]
	}
	for ; i < len(x); i++ {
		s[0] += x[i]
	}
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

// fmaLoopGo is the portable FMA loop: 16 independent accumulators from 0, n rounds of
// a = a·0.999 + 0.001; it returns the sum of the accumulators.
func fmaLoopGo(n int) float32 {
	var a [fmaAccs]float32
	const x, y = 0.999, 1e-3
	for range n {
		for i := range a {
			a[i] = a[i]*x + y
		}
	}
	s := float32(0)
	for _, v := range a {
		s += v
	}
	return s
}
