package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/backends"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
)

// Device describes a measured device: what the backend reports and its capabilities.
type Device struct {
	engine.DeviceInfo
	Caps engine.Caps `json:"caps"`
}

// Sizes are the problem sizes of a run; Defaults picks them per device.
type Sizes struct {
	// Models are the layer geometries the kernels run on.
	Models []ModelShape
	// Kernels restricts the kernels measured (all when empty).
	Kernels []string
	// LoRAProjs are the projections the LoRA kernels are measured on.
	LoRAProjs []string
	// Tokens is the row count of GEMM-shaped kernels (a training micro-batch or a prompt), Context
	// the cache length that decode attention reads.
	Tokens, Context, Rank int
	// BandwidthElems is the f32 element count of the bandwidth ceiling's buffer, MatmulN the side of
	// the square matmul ceiling, Chain how many times each ceiling kernel runs in one submission.
	BandwidthElems, MatmulN, Chain int
	// Replicas is how many copies of a kernel one timed submission runs (GPUs: amortises the
	// submit-and-wait overhead that wall-clock timing includes).
	Replicas int
	// ColdBytes, on the CPU, is what the copies of a kernel with cold inputs (a decoding GEMV's
	// weights, decoding attention's KV cache) read in all at least, each copy its own, and the
	// least size of the streaming-read ceiling's buffer: several times the last-level cache, so
	// that both come from memory. 0: those inputs are read from cache like the others.
	ColdBytes int
	Repeats   Repeats
	// E2E is the synthetic checkpoint of the end-to-end measurements (none when Layers is 0).
	E2E E2ESizes
	// Qwen3Train is the checkpoint of the extra LoRA training step at QVAC Fabric's published
	// shape (Qwen3-1.7B, context 128), so that a GPU's figure stands beside theirs; none when
	// Layers is 0.
	Qwen3Train E2ESizes
	// Tiny marks shrunken shapes in the report.
	Tiny bool
}

// isSoftware reports whether a device is a CPU-type adapter of a GPU API (lavapipe, llvmpipe,
// SwiftShader): a correctness device, run with tiny shapes.
func isSoftware(d engine.DeviceInfo) bool { return d.Backend != "cpu" && d.Type == "cpu" }

// Defaults are the sizes for a device: realistic shapes on the CPU backend and GPUs (only the
// two smallest models with quick), tiny ones on software adapters.
func Defaults(d engine.DeviceInfo, caps engine.Caps, quick bool) Sizes {
	s := Sizes{
		Models: Models, LoRAProjs: []string{"q_proj", "down_proj"}, Tokens: 512, Context: 512, Rank: 16,
		BandwidthElems: 16 << 20, MatmulN: 2048, Chain: 1, Replicas: 1, ColdBytes: 256 << 20,
		// On a CPU a large kernel takes a second: three repeats, more while a second lasts.
		Repeats: Repeats{Warmup: 1, Min: 3, Max: 50, Budget: time.Second},
		E2E:     E2E1B(32, 32000, 2),
	}
	gpu := d.Backend != "cpu" && !isSoftware(d)
	if gpu {
		// Large enough that one submission takes milliseconds, not the microseconds of its overhead.
		s.BandwidthElems, s.MatmulN, s.Chain, s.Replicas = 64<<20, 4096, 8, 8
		if caps.MaxBufferBytes > 0 && int64(s.BandwidthElems)*4 > caps.MaxBufferBytes {
			s.BandwidthElems = 16 << 20
		}
		s.Repeats = Repeats{Warmup: 2, Min: 5, Max: 100, Budget: time.Second}
		s.E2E = E2E1B(128, 32000, 2)
		s.Qwen3Train = Qwen3Train(28, qwen3Vocab)
	}
	if quick {
		s.Models = Models[:2]
		s.LoRAProjs = []string{"q_proj"}
		s.Repeats = Repeats{Warmup: 1, Min: 3, Max: 20, Budget: 150 * time.Millisecond}
		s.E2E.DecodeTokens = 8
		s.Qwen3Train = Qwen3Train(4, qwen3Vocab)
		if !gpu {
			s.MatmulN = 1536
			s.E2E = E2E1B(16, 8192, 2)
			s.Qwen3Train = Qwen3Train(1, 8192)
		}
	}
	if isSoftware(d) {
		s.Models = []ModelShape{Tiny}
		s.LoRAProjs = []string{"q_proj"}
		s.Tokens, s.Context = 32, 64
		s.BandwidthElems, s.MatmulN, s.Chain, s.Replicas = 16<<20, 256, 1, 1
		s.Repeats = Repeats{Warmup: 1, Min: 3, Max: 10, Budget: 100 * time.Millisecond}
		s.E2E = E2ETiny()
		s.Qwen3Train = E2ESizes{} // 1.7B shapes are hours on a software device
		s.Tiny = true
	}
	return s
}

// Options configure Run.
type Options struct {
	// Backend is "cpu", "webgpu", "vulkan" or "all" (every device of every backend); "" means all.
	Backend string
	Quick   bool
	// Reference runs bench/reference/torch_ref.py on the same shapes and adds ratios; on the CPU
	// backend it also runs llama.cpp (node-llama-cpp) on the end-to-end checkpoint exported to GGUF.
	Reference bool
	// Python is the interpreter for the reference; empty: LATHE_PYTHON, then python3 on PATH, then
	// /usr/bin/python3, the first that imports torch.
	Python string
	// Train measures training steps; nil leaves them out of the report (see TrainFunc).
	Train TrainFunc
	// Command is recorded in the report.
	Command string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Sizes, when set, replaces Defaults for every device (tests use it for tiny runs).
	Sizes func(d engine.DeviceInfo, caps engine.Caps, quick bool) Sizes
	// SkipE2E leaves out the end-to-end measurements.
	SkipE2E bool
	// Budget, when positive, bounds the time spent on ceilings and kernels (over all devices): the
	// kernels left when it runs out are listed as not measured, and the end-to-end figures, the
	// reference and the report still follow. It keeps a run inside an outer time limit.
	Budget time.Duration
}

// Run measures every selected device and returns the report. A device that fails to open or a
// kernel that fails is recorded in the report; Run fails only when nothing could be measured.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Sizes == nil {
		o.Sizes = Defaults
	}
	which := strings.ToLower(o.Backend)
	if which == "" {
		which = "all"
	}
	rep := &Report{Schema: SchemaVersion, Date: start.UTC().Format(time.RFC3339), Command: o.Command,
		GitCommit: gitCommit(), GoVersion: runtime.Version(), Host: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()),
		Quick: o.Quick}
	startLoad := loadAvg()
	rep.Notes = append(rep.Notes,
		"Times are wall clock around Program.Run plus a 4-byte read of the last output (which waits for the submission): the wgpu binding exposes no timestamp period, so GPU timestamp queries cannot be turned into seconds.",
		"GPU ceilings: an f32 Scale over a large buffer (bytes read plus written) and lathe's f32 MatMul on a large square matrix. CPU ceilings are the CPU's own, with no lathe kernel involved: an FMA loop on independent accumulators at the widest vector width on all threads, and a streaming read with vector loads on all threads; lathe's scale and matmul are reported against them. Each is measured before and after the kernels and the better figure kept. Roofline fraction = achieved flop/s ÷ min(peak, intensity × bandwidth).",
		"NF4 kernels move 4.5 bits a weight (packed nibbles plus f32 block scales, blocksize 64); LoRA kernels use an NF4 base (QLoRA), rank 16, scale 2.",
		"On the CPU the decoding kernels (the NF4 GEMV, attention over the KV cache) run as many copies a submission, each with its own weights or cache, as read 256 MiB, and the streaming read runs over at least 256 MiB: both come from memory, as a model's weights do when decoding, not from the last-level cache.")
	kctx := ctx
	if o.Budget > 0 {
		var cancel context.CancelFunc
		kctx, cancel = context.WithTimeout(ctx, o.Budget)
		defer cancel()
	}
	found := false
	for _, p := range backends.Providers() {
		if which != "all" && p.Name() != which {
			continue
		}
		found = true
		devs, err := p.Devices()
		if err != nil {
			rep.Backends = append(rep.Backends, BackendReport{Device: Device{DeviceInfo: engine.DeviceInfo{Backend: p.Name(), Index: -1}}, Errors: []string{err.Error()}})
			continue
		}
		for _, d := range devs {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			br := runDevice(ctx, kctx, p, d, o)
			rep.Backends = append(rep.Backends, br)
		}
	}
	if !found {
		return nil, fmt.Errorf("bench: unknown backend %q (want cpu, webgpu, vulkan or all)", o.Backend)
	}
	if len(rep.Backends) == 0 {
		return nil, fmt.Errorf("bench: no %s device found", which)
	}
	if o.Reference {
		rep.Reference = runReference(ctx, rep, o)
		applyReference(rep)
	}
	rep.WallSeconds = time.Since(start).Seconds()
	if startLoad != "" {
		rep.Load = "start " + startLoad + ", end " + loadAvg()
	}
	measured := false
	for _, b := range rep.Backends {
		measured = measured || len(b.Kernels) > 0 || len(b.E2E) > 0
	}
	if !measured {
		var errs []string
		for _, b := range rep.Backends {
			errs = append(errs, b.Errors...)
		}
		return rep, fmt.Errorf("bench: nothing measured: %s", strings.Join(errs, "; "))
	}
	return rep, nil
}

// runDevice measures one device; kctx bounds the ceilings and kernels, ctx the rest.
func runDevice(ctx, kctx context.Context, p engine.Provider, d engine.DeviceInfo, o Options) BackendReport {
	t0 := time.Now()
	br := BackendReport{Device: Device{DeviceInfo: d}}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		br.Errors = append(br.Errors, msg)
		fmt.Fprintln(o.Log, "  error:", msg)
	}
	be, err := p.Open(d.Index)
	if err != nil {
		fail("open %s:%d: %v", p.Name(), d.Index, err)
		return br
	}
	defer be.Close()
	br.Device = Device{DeviceInfo: be.Device(), Caps: be.Caps()}
	s := o.Sizes(br.Device.DeviceInfo, br.Device.Caps, o.Quick)
	br.Tiny, br.Replicas = s.Tiny, s.Replicas
	fmt.Fprintf(o.Log, "%s:%d %s (%s)%s\n", d.Backend, d.Index, br.Device.Name, br.Device.Type, map[bool]string{true: " — tiny shapes: a correctness device, not a speed device", false: ""}[s.Tiny])

	if kctx.Err() == nil {
		br.Ceilings, err = measureCeilings(be, s)
	} else {
		err = kctx.Err()
	}
	if err != nil {
		fail("ceilings: %v", err)
	} else {
		fmt.Fprintf(o.Log, "  ceilings: %.1f GB/s, %.1f GFLOP/s (lathe's scale %.1f GB/s, matmul %.1f GFLOP/s)\n", br.Ceilings.Bandwidth/1e9, br.Ceilings.PeakFLOPS/1e9,
			br.Ceilings.ScaleBandwidth/1e9, br.Ceilings.MatmulFLOPS/1e9)
	}
	done := map[string]string{} // kernel/dims → ID measured
	var cases []Case
	for _, m := range s.Models {
		for _, c := range Cases(m, s.Tokens, s.Context, s.Rank, s.Kernels, s.LoRAProjs) {
			if (c.Kernel == KernelGEMVBF16 || c.Kernel == KernelGEMMBF16) && (d.Backend != "cpu" || !gemm.HasBF16()) {
				continue // elsewhere the allowance changes nothing: nf4_gemv again
			}
			if (c.Kernel == KernelGEMVI8 || c.Kernel == KernelGEMMI8) && (d.Backend != "cpu" || !gemm.HasI8()) {
				continue
			}
			cases = append(cases, c)
		}
	}
	var peer engine.Backend // WebGPU on the same device, beside Vulkan
	if d.Backend == "vulkan" {
		if peer, err = openWebGPUPeer(br.Device.DeviceInfo); err != nil {
			fail("webgpu on the same device: %v", err)
		} else if peer != nil {
			defer peer.Close()
		}
	}
	for i, c := range cases {
		if err := kctx.Err(); err != nil {
			fail("kernels stopped (%v): %d of %d not measured", err, len(cases)-i, len(cases))
			break
		}
		br.Kernels = append(br.Kernels, runCase(be, peer, c, s, br.Ceilings.Roofline, done, br.Kernels, o.Log))
	}
	if ctx.Err() != nil {
		return br
	}
	// The ceilings again, after the kernels: the roofline is the best the device showed, so that
	// a burst of other work on the host during the first measurement does not lower it.
	if again, err := measureCeilings(be, s); err == nil && len(br.Kernels) > 0 {
		br.Ceilings = bestCeilings(br.Ceilings, again)
		for i := range br.Kernels {
			br.Kernels[i].fill(br.Ceilings.Roofline)
		}
	}
	if !o.SkipE2E && s.E2E.Layers > 0 {
		var after func(string, []E2EResult)
		if o.Reference && br.Device.Backend == "cpu" {
			// llama.cpp, the CPU's reference, on the same checkpoint exported to GGUF.
			after = func(dir string, res []E2EResult) { br.LlamaCpp = runLlamaCpp(ctx, dir, s.E2E, res, o.Log) }
		}
		br.E2E = runE2E(be, s.E2E, o.Log, after)
	}
	if o.Train != nil {
		br.Train = runTrain(ctx, be, s, o)
	}
	br.Seconds = time.Since(t0).Seconds()
	return br
}

// runCase measures c, or copies an earlier measurement of the same kernel on the same shape;
// peer, when set, is WebGPU on the same device as be (Vulkan).
func runCase(be, peer engine.Backend, c Case, s Sizes, rl Roofline, done map[string]string, prev []KernelResult, log io.Writer) KernelResult {
	kr := KernelResult{ID: c.ID, Kernel: c.Kernel, Model: c.Model, Proj: c.Proj, Shape: c.Shape, Dims: c.Dims, Flops: c.Flops, Bytes: c.Bytes}
	// Identical shapes (Mistral-7B and Llama-3-8B share every layer shape) are measured once.
	key := fmt.Sprintf("%s/%+v", c.Kernel, c.Dims)
	if strings.HasPrefix(c.Kernel, "attention") {
		key += "/" + c.Proj // the head layout matters too
	}
	if id, ok := done[key]; ok {
		for _, p := range prev {
			if p.ID == id && p.Err == "" {
				kr.Time, kr.GPUTime, kr.SameAs, kr.ReadGBps = p.Time, p.GPUTime, p.Model, p.ReadGBps
				kr.ISA, kr.AVX2Time, kr.Time1 = p.ISA, p.AVX2Time, p.Time1
				kr.NagaTime, kr.WebGPUTime = p.NagaTime, p.WebGPUTime
				kr.fill(rl)
				return kr
			}
		}
	}
	st, gpu, read, err := measureCase(be, c, s)
	if err != nil {
		kr.Err = err.Error()
		fmt.Fprintf(log, "  %-22s %-16s %-24s error: %v\n", c.Kernel, c.Model, c.Shape, err)
		return kr
	}
	done[key] = c.ID
	kr.Time, kr.GPUTime, kr.ReadGBps = st, gpu, read/1e9
	if be.Device().Backend == "cpu" {
		measureCPUVariants(be, c, s, &kr, log)
	}
	kr.fill(rl)
	gpuText := ""
	if gpu != nil {
		gpuText = " (gpu " + fmtDur(gpu.Median) + ")"
	}
	readText := ""
	if kr.ReadFraction > 0 {
		readText = fmt.Sprintf(" (%.1f%% of a read between runs, %.1f GB/s)", 100*kr.ReadFraction, kr.ReadGBps)
	}
	fmt.Fprintf(log, "  %-22s %-16s %-26s %10s%s %9.2f GFLOP/s %8.2f GB/s %5.1f%%%s\n", c.Kernel, c.Model, c.Shape, fmtDur(st.Median), gpuText, kr.GFLOPS, kr.GBps, 100*kr.Roofline, readText)
	measureGPUVariants(be, peer, c, s, &kr, log)
	return kr
}

// fill derives the rates from the median time.
func (k *KernelResult) fill(rl Roofline) {
	if k.Time.Median <= 0 {
		return
	}
	k.GFLOPS = k.Flops / k.Time.Median / 1e9
	k.GBps = k.Bytes / k.Time.Median / 1e9
	if k.Bytes > 0 {
		k.Intensity = k.Flops / k.Bytes
	}
	k.Roofline = rl.forKernel(k.Kernel).Fraction(k.Flops, k.Bytes, k.Time.Median)
	if k.ReadGBps > 0 {
		k.ReadFraction = k.GBps / k.ReadGBps
	}
	if k.Time1 != nil {
		k.Efficiency = efficiency(1/k.Time1.Median, 1/k.Time.Median, runtime.GOMAXPROCS(0))
	}
}

// measureCPUVariants measures a CPU kernel again on one thread and, where the CPU is wider than
// AVX2, on the AVX2 path: the parallel efficiency and the gain of the wider unit, same run.
func measureCPUVariants(be engine.Backend, c Case, s Sizes, kr *KernelResult, log io.Writer) {
	kr.ISA = string(gemm.CurrentISA())
	if !cpuVariants[c.Kernel] {
		return
	}
	if runtime.GOMAXPROCS(0) > 1 {
		_ = withThreads(1, func() error {
			st, _, _, err := measureCase(be, c, s)
			if err == nil {
				kr.Time1 = &st
			}
			return err
		})
	}
	if gemm.CurrentISA() == gemm.ISAAVX512 {
		_ = withISA(gemm.ISAAVX2, func() error {
			st, _, _, err := measureCase(be, c, s)
			if err == nil {
				kr.AVX2Time = &st
			}
			return err
		})
	}
	if kr.Time1 != nil || kr.AVX2Time != nil {
		line := fmt.Sprintf("  %-22s %-16s %-26s", "", "", "")
		if kr.Time1 != nil {
			line += fmt.Sprintf(" 1 thread %s (efficiency %.0f%%)", fmtDur(kr.Time1.Median), 100*kr.Time1.Median/kr.Time.Median/float64(runtime.GOMAXPROCS(0)))
		}
		if kr.AVX2Time != nil {
			line += fmt.Sprintf(" avx2 %s (avx512 %.2f× faster)", fmtDur(kr.AVX2Time.Median), kr.AVX2Time.Median/kr.Time.Median)
		}
		fmt.Fprintln(log, line)
	}
}

// bestCeilings keeps the higher of each rate of two measurements, and the roofline they give.
func bestCeilings(a, b Ceilings) Ceilings {
	if !a.Valid() {
		return b
	}
	if b.ScaleBandwidth > a.ScaleBandwidth {
		a.ScaleBandwidth, a.BandwidthTime = b.ScaleBandwidth, b.BandwidthTime
	}
	if b.MatmulFLOPS > a.MatmulFLOPS {
		a.MatmulFLOPS, a.MatmulTime = b.MatmulFLOPS, b.MatmulTime
	}
	a.MatmulFLOPSAVX2 = max(a.MatmulFLOPSAVX2, b.MatmulFLOPSAVX2)
	if a.CPU != nil && b.CPU != nil {
		c := bestCPU(*a.CPU, *b.CPU)
		a.CPU, a.Roofline = &c, c.roofline()
		return a
	}
	a.Roofline = Roofline{PeakFLOPS: max(a.PeakFLOPS, b.PeakFLOPS), Bandwidth: max(a.Bandwidth, b.Bandwidth)}
	return a
}

// measureCeilings measures the bandwidth of a chain of f32 Scales over a large buffer and the
// rate of a chain of square matmuls: a GPU's roofline. On the CPU backend it also measures the
// CPU's own limits (measureCPUCeilings), which become the roofline.
func measureCeilings(be engine.Backend, s Sizes) (Ceilings, error) {
	var c Ceilings
	n, chain := s.BandwidthElems, max(s.Chain, 1)
	bw := func(g *engine.Graph, in leafFunc) []*engine.Node {
		x := f32(in, "x", n)
		for range chain {
			x = g.Scale(x, 0.999)
		}
		return []*engine.Node{x}
	}
	rp := s.Repeats
	st, _, err := measure(be, bw, 1, rp)
	if err == nil && st.Median <= 0 {
		err = fmt.Errorf("median time %v is below the clock's resolution", st.Median)
	}
	if err != nil {
		return c, fmt.Errorf("bandwidth: %w", err)
	}
	c.BandwidthKernel = fmt.Sprintf("scale f32, %d MiB in + %d MiB out, ×%d a submission", n*4>>20, n*4>>20, chain)
	c.BandwidthTime = st
	c.Bandwidth = float64(chain) * 8 * float64(n) / st.Median
	mn := s.MatmulN
	mm := func(g *engine.Graph, in leafFunc) []*engine.Node {
		a, b := f32(in, "a", mn, mn), f32(in, "b", mn, mn)
		for range chain {
			a = g.MatMul(a, b, false, false)
		}
		return []*engine.Node{a}
	}
	st, _, err = measure(be, mm, 1, rp)
	if err == nil && st.Median <= 0 {
		err = fmt.Errorf("median time %v is below the clock's resolution", st.Median)
	}
	if err != nil {
		return c, fmt.Errorf("matmul: %w", err)
	}
	c.MatmulKernel = fmt.Sprintf("matmul f32 %d×%d×%d, ×%d a submission", mn, mn, mn, chain)
	c.MatmulTime = st
	c.MatmulFLOPS = float64(chain) * 2 * float64(mn) * float64(mn) * float64(mn) / st.Median
	c.ScaleBandwidth = c.Bandwidth
	c.PeakFLOPS = c.MatmulFLOPS
	if be.Device().Backend == "cpu" {
		// Each probe runs for the budget of one repeat of a kernel (at least 50 ms).
		// The read buffer outgrows the last-level cache (ColdBytes): 64 MiB against a 32 MiB L3
		// was read partly from cache, and the ceiling wandered from 62 to 101 GB/s.
		cc := measureCPUCeilings(max(n, s.ColdBytes/4, 1<<20), max(rp.Budget/4, 50*time.Millisecond))
		c.CPU, c.Roofline = &cc, cc.roofline()
		if gemm.CurrentISA() == gemm.ISAAVX512 {
			_ = withISA(gemm.ISAAVX2, func() error {
				st, _, err := measure(be, mm, 1, rp)
				if err == nil && st.Median > 0 {
					c.MatmulFLOPSAVX2 = float64(chain) * 2 * float64(mn) * float64(mn) * float64(mn) / st.Median
				}
				return err
			})
		}
	}
	return c, nil
}

func fmtDur(sec float64) string {
	switch {
	case sec <= 0:
		return "-"
	case sec < 1e-3:
		return fmt.Sprintf("%.1f µs", sec*1e6)
	case sec < 1:
		return fmt.Sprintf("%.2f ms", sec*1e3)
	}
	return fmt.Sprintf("%.2f s", sec)
}

// gitCommit is the commit the binary was built from (Go stamps it when building in a checkout),
// else what `git rev-parse HEAD` says in the working directory, else LATHE_GIT_COMMIT.
func gitCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				dirty = kv.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "+dirty"
			}
			return rev
		}
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return os.Getenv("LATHE_GIT_COMMIT")
}

var errNoTorch = errors.New("PyTorch not found")

// loadAvg is the 1, 5 and 15 minute load averages, "" where /proc/loadavg is missing.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
