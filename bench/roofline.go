package bench

import (
	"fmt"
	"runtime"
	"time"

	"github.com/lathe-ml/lathe/engine/cpu/ceiling"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
)

// Roofline is a device's measured ceilings. On the CPU they are the machine's own (an FMA loop
// and a streaming read, see CPUCeilings); on a GPU, the arithmetic rate of lathe's best matmul and
// the bandwidth of a large streaming kernel. A kernel of arithmetic intensity AI (flop/byte) can at
// best reach min(PeakFLOPS, AI·Bandwidth).
type Roofline struct {
	// PeakFLOPS is in flop/s.
	PeakFLOPS float64 `json:"peak_flops"`
	// Bandwidth is in bytes (read + written) per second.
	Bandwidth float64 `json:"bandwidth"`
	// PeakBF16 is the bfloat16 dot product's flop/s (VDPBF16PS, CPUs with AVX512_BF16 only): the
	// compute ceiling of kernels that multiply in bfloat16 (forKernel).
	PeakBF16 float64 `json:"peak_bf16_flops,omitempty"`
	// PeakI8 is the 8-bit dot product's operations a second (VPDPBUSD, CPUs with AVX512_VNNI
	// only): the compute ceiling of kernels that multiply bytes.
	PeakI8 float64 `json:"peak_i8_ops,omitempty"`
}

// forKernel is the roofline of kernel: its compute ceiling the bfloat16 or 8-bit one for a kernel
// that multiplies so, where that was measured.
func (r Roofline) forKernel(kernel string) Roofline {
	switch {
	case kernel == KernelGEMMBF16 && r.PeakBF16 > 0:
		r.PeakFLOPS = r.PeakBF16
	case kernel == KernelGEMMI8 && r.PeakI8 > 0:
		r.PeakFLOPS = r.PeakI8
	}
	return r
}

// Valid reports whether both ceilings were measured.
func (r Roofline) Valid() bool { return r.PeakFLOPS > 0 && r.Bandwidth > 0 }

// Attainable is the roofline at arithmetic intensity ai: min(PeakFLOPS, ai·Bandwidth).
func (r Roofline) Attainable(ai float64) float64 {
	return min(r.PeakFLOPS, ai*r.Bandwidth)
}

// Ridge is the arithmetic intensity where the two ceilings meet.
func (r Roofline) Ridge() float64 {
	if r.Bandwidth <= 0 {
		return 0
	}
	return r.PeakFLOPS / r.Bandwidth
}

// Fraction is how much of the roofline a kernel doing flops and moving bytes in sec reached:
// achieved flop/s over Attainable(flops/bytes). It is 0 when anything is unknown. It may exceed 1:
// the bandwidth ceiling is a stream through main memory, and caches can beat it.
func (r Roofline) Fraction(flops, bytes, sec float64) float64 {
	if !r.Valid() || flops <= 0 || bytes <= 0 || sec <= 0 {
		return 0
	}
	return flops / sec / r.Attainable(flops/bytes)
}

// CPUCeilings are a CPU's own limits, measured without any lathe kernel (package
// engine/cpu/ceiling): the CPU backend's roofline is FMAPeakAll and ReadAll, and lathe's matmul
// is reported against them instead of being one.
type CPUCeilings struct {
	// Features are the vector extensions found (CPUID), as /proc/cpuinfo names them.
	Features []string `json:"features"`
	// Unit is the widest vector unit ("avx512", "avx2", "go"); Threads the all-core thread count.
	Unit    string `json:"unit"`
	Threads int    `json:"threads"`
	// FMAPeak1 and FMAPeakAll are flop/s of an FMA loop on independent accumulators at Unit's
	// width, on one thread and on all; FMAPeakAVX2 is one thread at AVX2 width where Unit is
	// wider (the ceiling of the AVX2 kernels beside the wider ones).
	FMAPeak1    float64 `json:"fma_peak_1"`
	FMAPeakAll  float64 `json:"fma_peak_all"`
	FMAPeakAVX2 float64 `json:"fma_peak_avx2_1,omitempty"`
	// BF16Peak1 and BF16PeakAll are flop/s of the bfloat16 dot product (VDPBF16PS) on independent
	// accumulators, one thread and all, where the CPU has AVX512_BF16.
	BF16Peak1   float64 `json:"bf16_peak_1,omitempty"`
	BF16PeakAll float64 `json:"bf16_peak_all,omitempty"`
	// I8Peak1 and I8PeakAll are operations a second of the 8-bit dot product (VPDPBUSD) on
	// independent accumulators, one thread and all, where the CPU has AVX512_VNNI.
	I8Peak1   float64 `json:"i8_peak_1,omitempty"`
	I8PeakAll float64 `json:"i8_peak_all,omitempty"`
	// Read1 and ReadAll are bytes/s of a streaming read with Unit's vector loads, one thread and
	// all; CopyAll is bytes read plus written per second by a copy on all threads.
	Read1   float64 `json:"read_1"`
	ReadAll float64 `json:"read_all"`
	CopyAll float64 `json:"copy_all"`
	// BufferBytes is the size of the read buffer (the copy moves it to a second one).
	BufferBytes int64 `json:"buffer_bytes"`
}

// roofline is the CPU's roofline: the all-core FMA peak and streaming read, or the one-thread
// figure where that is higher (all cores can do what one does; a lower all-core figure means other
// work on the host took cores during the measurement).
func (c CPUCeilings) roofline() Roofline {
	return Roofline{PeakFLOPS: max(c.FMAPeakAll, c.FMAPeak1), Bandwidth: max(c.ReadAll, c.Read1), PeakBF16: max(c.BF16PeakAll, c.BF16Peak1), PeakI8: max(c.I8PeakAll, c.I8Peak1)}
}

// widestUnit is the widest vector unit this CPU runs.
func widestUnit() ceiling.Unit {
	for _, u := range []ceiling.Unit{ceiling.AVX512, ceiling.AVX2} {
		if ceiling.Has(u) {
			return u
		}
	}
	return ceiling.Scalar
}

// measureCPUCeilings runs the CPU probes over buffers of elems floats, each for about d.
func measureCPUCeilings(elems int, d time.Duration) CPUCeilings {
	u, th := widestUnit(), ceiling.Threads()
	c := CPUCeilings{Features: ceiling.Features(), Unit: string(u), Threads: th, BufferBytes: 4 * int64(elems)}
	c.FMAPeak1 = ceiling.FMAPeak(u, 1, d)
	c.FMAPeakAll = ceiling.FMAPeak(u, th, d)
	if u == ceiling.AVX512 {
		c.FMAPeakAVX2 = ceiling.FMAPeak(ceiling.AVX2, 1, d)
	}
	if ceiling.Has(ceiling.AVX512BF16) {
		c.BF16Peak1 = ceiling.FMAPeak(ceiling.AVX512BF16, 1, d)
		c.BF16PeakAll = ceiling.FMAPeak(ceiling.AVX512BF16, th, d)
	}
	if ceiling.Has(ceiling.AVX512VNNI) {
		c.I8Peak1 = ceiling.FMAPeak(ceiling.AVX512VNNI, 1, d)
		c.I8PeakAll = ceiling.FMAPeak(ceiling.AVX512VNNI, th, d)
	}
	src, dst := make([]float32, elems), make([]float32, elems)
	for i := range src {
		src[i] = float32(i&1023) * 0x1p-10
	}
	c.Read1 = ceiling.ReadBandwidth(u, src, 1, d)
	c.ReadAll = ceiling.ReadBandwidth(u, src, th, d)
	c.CopyAll = ceiling.CopyBandwidth(dst, src, th, d)
	return c
}

// bestCPU keeps the higher of each figure of two measurements.
func bestCPU(a, b CPUCeilings) CPUCeilings {
	a.FMAPeak1, a.FMAPeakAll, a.FMAPeakAVX2 = max(a.FMAPeak1, b.FMAPeak1), max(a.FMAPeakAll, b.FMAPeakAll), max(a.FMAPeakAVX2, b.FMAPeakAVX2)
	a.BF16Peak1, a.BF16PeakAll = max(a.BF16Peak1, b.BF16Peak1), max(a.BF16PeakAll, b.BF16PeakAll)
	a.I8Peak1, a.I8PeakAll = max(a.I8Peak1, b.I8Peak1), max(a.I8PeakAll, b.I8PeakAll)
	a.Read1, a.ReadAll, a.CopyAll = max(a.Read1, b.Read1), max(a.ReadAll, b.ReadAll), max(a.CopyAll, b.CopyAll)
	return a
}

// describe is the CPU's ceilings in one Markdown paragraph.
func (c CPUCeilings) describe() string {
	s := fmt.Sprintf("CPU ceilings (no lathe kernel involved): features %v; widest unit %s. FMA loop on independent accumulators: **%.1f GFLOP/s on 1 thread, %.1f on %d** (parallel efficiency %.0f%%)",
		c.Features, c.Unit, c.FMAPeak1/1e9, c.FMAPeakAll/1e9, c.Threads, 100*efficiency(c.FMAPeak1, c.FMAPeakAll, c.Threads))
	if c.FMAPeakAVX2 > 0 {
		s += fmt.Sprintf("; at AVX2 width %.1f on 1 thread", c.FMAPeakAVX2/1e9)
	}
	if c.BF16PeakAll > 0 {
		s += fmt.Sprintf("; bfloat16 dot products (VDPBF16PS, the ceiling of the bf16 kernels) %.1f on 1 thread, %.1f on %d", c.BF16Peak1/1e9, c.BF16PeakAll/1e9, c.Threads)
	}
	if c.I8PeakAll > 0 {
		s += fmt.Sprintf("; 8-bit dot products (VPDPBUSD, the ceiling of the i8 GEMM; GOP/s) %.1f on 1 thread, %.1f on %d", c.I8Peak1/1e9, c.I8PeakAll/1e9, c.Threads)
	}
	s += fmt.Sprintf(". Streaming read with %s loads over %d MiB: **%.1f GB/s on 1 thread, %.1f on %d**; copy %.1f GB/s (read + written) on %d.",
		c.Unit, c.BufferBytes>>20, c.Read1/1e9, c.ReadAll/1e9, c.Threads, c.CopyAll/1e9, c.Threads)
	return s
}

// efficiency is the parallel efficiency of a rate: all-thread rate over threads × one-thread rate.
func efficiency(one, all float64, threads int) float64 {
	if one <= 0 || threads <= 0 {
		return 0
	}
	return all / (one * float64(threads))
}

// cpuVariants are the kernels measured again on the CPU backend, on one thread and on the AVX2
// path (where the CPU is wider), beside their all-thread, widest-path figure.
var cpuVariants = map[string]bool{KernelGEMV: true, KernelGEMVBF16: true, KernelGEMVI8: true, KernelGEMM: true, KernelGEMMBF16: true, KernelGEMMI8: true, KernelLoRAFwd: true, KernelAttnPrefill: true,
	KernelAttnDecode: true, KernelAttnBwd: true, KernelRMSNorm: true}

// withISA runs f with the CPU kernels limited to isa, then restores the previous path.
func withISA(isa gemm.ISA, f func() error) error {
	prev, err := gemm.SetISA(isa)
	if err != nil {
		return err
	}
	defer gemm.SetISA(prev)
	return f()
}

// withThreads runs f with Go limited to n threads (every CPU kernel splits its work over
// GOMAXPROCS goroutines), then restores the previous limit.
func withThreads(n int, f func() error) error {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	return f()
}
