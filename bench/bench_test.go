package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
)

func TestSummarizeKnownSamples(t *testing.T) {
	s, err := Summarize([]float64{5, 1, 4, 2, 3})
	require.NoError(t, err)
	require.Equal(t, Stats{N: 5, Median: 3, Min: 1, Max: 5, Q1: 2, Q3: 4}, s)
	require.Equal(t, 2.0, s.IQR())

	// An even count interpolates, as numpy.percentile does: [1 2 3 4] → q1 1.75, median 2.5, q3 3.25.
	s, err = Summarize([]float64{4, 3, 2, 1})
	require.NoError(t, err)
	require.InDelta(t, 2.5, s.Median, 1e-12)
	require.InDelta(t, 1.75, s.Q1, 1e-12)
	require.InDelta(t, 3.25, s.Q3, 1e-12)

	s, err = Summarize([]float64{7})
	require.NoError(t, err)
	require.Equal(t, Stats{N: 1, Median: 7, Min: 7, Max: 7, Q1: 7, Q3: 7}, s)

	_, err = Summarize(nil)
	require.Error(t, err)
	_, err = Summarize([]float64{1, math.NaN()})
	require.Error(t, err)
}

func TestRoofline(t *testing.T) {
	r := Roofline{PeakFLOPS: 100e9, Bandwidth: 10e9}
	require.True(t, r.Valid())
	require.Equal(t, 10.0, r.Ridge())
	require.Equal(t, 10e9, r.Attainable(1))   // memory bound: 1 flop/byte × 10 GB/s
	require.Equal(t, 100e9, r.Attainable(50)) // compute bound
	// 1 GFLOP moving 1 GB (intensity 1) in 0.2 s: 5 GFLOP/s of an attainable 10.
	require.InDelta(t, 0.5, r.Fraction(1e9, 1e9, 0.2), 1e-12)
	// 100 GFLOP moving 1 GB in 2 s: 50 GFLOP/s of the 100 peak.
	require.InDelta(t, 0.5, r.Fraction(100e9, 1e9, 2), 1e-12)
	require.Zero(t, r.Fraction(1, 1, 0))
	require.Zero(t, Roofline{}.Fraction(1, 1, 1))

	// The roofline keeps the better of two measurements of each ceiling.
	a := Ceilings{Roofline: Roofline{PeakFLOPS: 50e9, Bandwidth: 20e9}, MatmulTime: Stats{Median: 2}, BandwidthTime: Stats{Median: 1}, MatmulFLOPS: 50e9, ScaleBandwidth: 20e9}
	b := Ceilings{Roofline: Roofline{PeakFLOPS: 100e9, Bandwidth: 10e9}, MatmulTime: Stats{Median: 1}, BandwidthTime: Stats{Median: 2}, MatmulFLOPS: 100e9, ScaleBandwidth: 10e9}
	best := bestCeilings(a, b)
	require.Equal(t, Roofline{PeakFLOPS: 100e9, Bandwidth: 20e9}, best.Roofline)
	require.Equal(t, 1.0, best.MatmulTime.Median)
	require.Equal(t, 1.0, best.BandwidthTime.Median)
	require.Equal(t, b, bestCeilings(Ceilings{}, b))

	// On the CPU the roofline is the CPU's own limits, each the better of two measurements, and
	// lathe's kernels are kept beside them.
	ca := a
	ca.CPU = &CPUCeilings{FMAPeakAll: 200e9, ReadAll: 15e9, FMAPeak1: 110e9, Read1: 12e9}
	cb := b
	cb.CPU = &CPUCeilings{FMAPeakAll: 180e9, ReadAll: 18e9, FMAPeak1: 115e9, Read1: 11e9}
	best = bestCeilings(ca, cb)
	require.Equal(t, Roofline{PeakFLOPS: 200e9, Bandwidth: 18e9}, best.Roofline)
	require.Equal(t, 115e9, best.CPU.FMAPeak1)
	require.Equal(t, 12e9, best.CPU.Read1)
	require.Equal(t, 100e9, best.MatmulFLOPS)
	require.Equal(t, 20e9, best.ScaleBandwidth)
	require.InDelta(t, 200.0/220, efficiency(110e9, 200e9, 2), 1e-12)
	// A one-thread figure above the all-thread one (other work took a core) is the ceiling.
	require.Equal(t, Roofline{PeakFLOPS: 120e9, Bandwidth: 9e9}, CPUCeilings{FMAPeak1: 120e9, FMAPeakAll: 100e9, Read1: 9e9, ReadAll: 4e9}.roofline())
	// The bfloat16 dot product's peak is the compute ceiling of the bfloat16 GEMM only.
	rl := CPUCeilings{FMAPeak1: 120e9, FMAPeakAll: 200e9, BF16Peak1: 230e9, BF16PeakAll: 410e9, Read1: 9e9, ReadAll: 15e9}.roofline()
	require.Equal(t, Roofline{PeakFLOPS: 200e9, Bandwidth: 15e9, PeakBF16: 410e9}, rl)
	require.Equal(t, 410e9, rl.forKernel(KernelGEMMBF16).PeakFLOPS)
	require.Equal(t, 200e9, rl.forKernel(KernelGEMM).PeakFLOPS)
	require.Equal(t, 200e9, rl.forKernel(KernelGEMVBF16).PeakFLOPS) // memory-bound: the read ceiling decides
	require.Equal(t, 200e9, Roofline{PeakFLOPS: 200e9, Bandwidth: 15e9}.forKernel(KernelGEMMBF16).PeakFLOPS)
	// The 8-bit dot product's peak likewise for the 8-bit GEMM.
	rl = CPUCeilings{FMAPeakAll: 200e9, I8Peak1: 450e9, I8PeakAll: 800e9, ReadAll: 15e9}.roofline()
	require.Equal(t, 800e9, rl.forKernel(KernelGEMMI8).PeakFLOPS)
	require.Equal(t, 200e9, rl.forKernel(KernelGEMVI8).PeakFLOPS)
	require.Equal(t, 200e9, rl.forKernel(KernelGEMMBF16).PeakFLOPS, "no bfloat16 peak measured")
}

// The published configs (config.json of each repository), written out independently of shapes.go.
func TestShapesMatchPublishedConfigs(t *testing.T) {
	type cfg struct{ hidden, inter, heads, kv, hd int }
	want := map[string]cfg{
		"Qwen2-0.5B":      {896, 4864, 14, 2, 64},
		"Llama-3.2-1B":    {2048, 8192, 32, 8, 64},
		"Llama-3.2-3B":    {3072, 8192, 24, 8, 128},
		"Mistral-7B-v0.1": {4096, 14336, 32, 8, 128},
		"Llama-3-8B":      {4096, 14336, 32, 8, 128},
	}
	require.Len(t, Models, len(want))
	for _, m := range Models {
		w, ok := want[m.Name]
		require.True(t, ok, m.Name)
		require.Equal(t, w, cfg{m.Hidden, m.Intermediate, m.Heads, m.KVHeads, m.HeadDim}, m.Name)
	}
	// Llama-3.2-1B's projections as its checkpoint stores them ([out, in]).
	got := map[string][2]int{}
	for _, p := range Models[1].Projections() {
		got[p.Name] = [2]int{p.Out, p.In}
	}
	require.Equal(t, map[string][2]int{
		"q_proj": {2048, 2048}, "k_proj": {512, 2048}, "v_proj": {512, 2048}, "o_proj": {2048, 2048},
		"gate_proj": {8192, 2048}, "up_proj": {8192, 2048}, "down_proj": {2048, 8192},
	}, got)
	// Qwen2-0.5B: k/v are 2 heads × 64.
	u := Models[0].UniqueProjections()
	require.Equal(t, "q_proj/o_proj", u[0].Name)
	require.Equal(t, UniqueProj{Proj: Proj{"k_proj/v_proj", 128, 896}, Count: 2}, u[1])
	require.Len(t, u, 4)
}

func TestCaseWork(t *testing.T) {
	m := Models[0]
	c := GEMMCase(m, "q_proj", 512, 896, 896)
	require.Equal(t, 2.0*512*896*896, c.Flops)
	require.Equal(t, 896.0*896/2+4*896*896/64+4*512*(896+896), c.Bytes)
	// Decode attention: one query sees all 512 keys: 4·heads·headDim·512 flops.
	a := AttentionCase(m, 1, 512, false)
	require.Equal(t, 4.0*14*64*512, a.Flops)
	// Causal prefill of 4 queries sees 1+2+3+4 keys.
	p := AttentionCase(m, 4, 4, false)
	require.Equal(t, 4.0*14*64*10, p.Flops)
	cs := Cases(m, 512, 512, 16, nil, []string{"q_proj"})
	seen := map[string]bool{}
	for _, c := range cs {
		require.False(t, seen[c.ID], "duplicate case %s", c.ID)
		seen[c.ID] = true
	}
	require.Len(t, cs, 4+4+4+4+4+4+4+2+3+1) // GEMV and GEMM, each also in bfloat16 and 8-bit, LoRA, IA3, attention, RMSNorm
}

func fakeReport() *Report {
	k := func(kernel, model string, d Dims, med, ref float64) KernelResult {
		kr := KernelResult{ID: kernel + "/" + model, Kernel: kernel, Model: model, Proj: "q_proj", Shape: "M=1", Dims: d,
			Flops: 2e9, Bytes: 1e8, Time: Stats{N: 3, Median: med, Min: med * 0.9, Max: med * 1.2, Q1: med, Q3: med}}
		kr.fill(Roofline{PeakFLOPS: 100e9, Bandwidth: 10e9})
		if ref > 0 {
			kr.RefSeconds, kr.RefRatio, kr.RefImpl = ref, ref/med, "dense float32 matmul"
		}
		return kr
	}
	gemv := k(KernelGEMV, "Qwen2-0.5B", Dims{M: 1, N: 896, K: 896}, 0.1, 0.05)
	gemv.ReadGBps, gemv.ReadFraction = 2, 0.5 // 1 GB/s beside a 2 GB/s read between its runs
	return &Report{Schema: SchemaVersion, Date: "2026-01-02T03:04:05Z", Command: "lathe bench --fake", GitCommit: "abc123",
		GoVersion: "go1.26", Host: "linux/amd64, 2 CPUs",
		Backends: []BackendReport{{
			Device:   Device{DeviceInfo: engine.DeviceInfo{Backend: "cpu", Name: "Fake CPU", Vendor: "Fake", Type: "cpu", API: "go"}},
			Replicas: 1,
			Ceilings: Ceilings{Roofline: Roofline{PeakFLOPS: 100e9, Bandwidth: 10e9}, BandwidthKernel: "scale", MatmulKernel: "matmul",
				BandwidthTime: Stats{N: 1, Median: 0.01}, MatmulTime: Stats{N: 1, Median: 0.1}},
			Kernels: []KernelResult{
				gemv,
				k(KernelGEMM, "Qwen2-0.5B", Dims{M: 512, N: 896, K: 896}, 0.04, 0),
				k(KernelGEMV, "Llama-3.2-1B", Dims{M: 1, N: 2048, K: 2048}, 0.2, 0),
				k(KernelGEMM, "Llama-3.2-1B", Dims{M: 512, N: 2048, K: 2048}, 0.05, 0),
				{ID: "broken", Kernel: KernelRMSNorm, Model: "tiny", Err: "no kernel | here"},
			},
			E2E: []E2EResult{{Name: "generate_f32", Model: "synthetic", Weights: "f32", PromptTokens: 16, DecodeTokens: 8,
				TTFT: Stats{N: 2, Median: 0.3, Min: 0.3, Max: 0.3}, TokenTime: Stats{N: 8, Median: 0.05, Min: 0.04, Max: 0.06}, TokensPerSec: 20}},
		}},
		Reference: &ReferenceReport{Error: "PyTorch not found"},
	}
}

func TestReportWriters(t *testing.T) {
	dir := t.TempDir()
	r := fakeReport()
	paths, err := r.WriteAll(dir)
	require.NoError(t, err)
	require.Len(t, paths, 4) // json, md, roofline, throughput
	for _, p := range paths {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Positive(t, fi.Size(), p)
	}
	back, err := ReadReport(filepath.Join(dir, "bench.json"))
	require.NoError(t, err)
	require.Equal(t, r, back, "bench.json round-trips")

	md := r.Markdown()
	require.Contains(t, md, "## cpu: Fake CPU")
	require.Contains(t, md, "| nf4_gemv | Qwen2-0.5B | q_proj | M=1 | 100.00 ms | 90.00 ms–120.00 ms | 20.00 | 1.00 | 20.0 | 50.0 (of 2.0 GB/s) | 50.00 ms | 0.50× |")
	require.Contains(t, md, "| nf4_gemm | Qwen2-0.5B | q_proj | M=1 | 40.00 ms | 36.00 ms–48.00 ms | 50.00 | 2.50 | 50.0 |  |  |  |", "no read figure for a kernel reading from cache")
	require.Contains(t, md, "% of read between\": kernels that read from memory")
	require.Contains(t, md, "error: no kernel / here", "a | in an error must not break the table")
	require.Contains(t, md, "No reference: PyTorch not found")
	require.Contains(t, md, "Training steps: not measured")
	require.Contains(t, md, "abc123")
	// No ratio where none was measured.
	require.Contains(t, md, "| nf4_gemm | Qwen2-0.5B | q_proj | M=1 | 40.00 ms | 36.00 ms–48.00 ms | 50.00 | 2.50 | 50.0 |  |  |")

	_, err = ReadReport(filepath.Join(dir, "missing.json"))
	require.Error(t, err)
}

func TestCompare(t *testing.T) {
	a, b := fakeReport(), fakeReport()
	b.Backends[0].Kernels[0].Time.Median = 0.05 // twice as fast
	b.Backends[0].Kernels[1].Time.Median = 0.08 // twice as slow
	b.Backends[0].Kernels = b.Backends[0].Kernels[:4]
	b.Backends[0].Kernels[3].ID = "renamed"
	c := Compare(a, b)
	require.Len(t, c.Ratios, 3)
	got := map[string]float64{}
	for _, r := range c.Ratios {
		require.Equal(t, "cpu", r.Backend)
		got[r.ID] = r.Ratio
	}
	require.InDelta(t, 0.5, got[KernelGEMV+"/Qwen2-0.5B"], 1e-12)
	require.InDelta(t, 2.0, got[KernelGEMM+"/Qwen2-0.5B"], 1e-12)
	require.InDelta(t, 1.0, got[KernelGEMV+"/Llama-3.2-1B"], 1e-12)
	require.InDelta(t, 1.0, c.Geomean, 1e-12)
	require.Equal(t, 1, c.OnlyA)
	require.Equal(t, 1, c.OnlyB)
	var buf bytes.Buffer
	c.Print(&buf)
	require.Contains(t, buf.String(), "3 kernels compared")
}

func TestReferenceRatiosOnlyWhereMeasured(t *testing.T) {
	r := fakeReport()
	for i := range r.Backends[0].Kernels {
		r.Backends[0].Kernels[i].RefRatio, r.Backends[0].Kernels[i].RefSeconds = 0, 0
	}
	gemv := r.Backends[0].Kernels[0]
	r.Reference = &ReferenceReport{Runs: []ReferenceRun{
		{Device: "cuda", Cases: map[string]RefCase{refID(gemv): {Median: 1}}}, // not comparable with a CPU
		{Device: "cpu", Cases: map[string]RefCase{refID(gemv): {Median: 0.2, Impl: "x"}}},
	}}
	applyReference(r)
	ks := r.Backends[0].Kernels
	require.InDelta(t, 2.0, ks[0].RefRatio, 1e-12)
	for _, k := range ks[1:] {
		require.Zero(t, k.RefRatio, k.ID)
	}
}

// One real run of two tiny kernels on the CPU backend, through Run and the report writers.
func TestQuickRunCPU(t *testing.T) {
	e2e := E2ETiny()
	tiny := func(d engine.DeviceInfo, caps engine.Caps, quick bool) Sizes {
		return Sizes{Models: []ModelShape{Tiny}, Kernels: []string{KernelGEMV, KernelRMSNorm}, Tokens: 16, Context: 32, Rank: 4,
			BandwidthElems: 1 << 16, MatmulN: 64, Chain: 1, Replicas: 2, ColdBytes: 1 << 18,
			Repeats: Repeats{Warmup: 1, Min: 2, Max: 3, Budget: 10 * time.Millisecond},
			E2E:     E2ESizes{Preset: e2e.Preset, Label: e2e.Label, Layers: e2e.Layers, PromptTokens: 4, DecodeTokens: 2, Repeats: 1, Weights: []string{"nf4"}}}
	}
	// The training hook receives the synthetic checkpoint and reports what it measured.
	var got []TrainRequest
	train := func(ctx context.Context, be engine.Backend, req TrainRequest) (TrainMeasurement, error) {
		got = append(got, req)
		if _, err := os.Stat(filepath.Join(req.ModelDir, "config.json")); err != nil {
			return TrainMeasurement{}, err
		}
		return TrainMeasurement{StepSeconds: []float64{0.5, 0.25, 1}, TokensPerStep: req.Batch * req.Seq, PeakBytes: 1 << 20, Loss: math.NaN()}, nil
	}
	var log bytes.Buffer
	r, err := Run(context.Background(), Options{Backend: "cpu", Quick: true, Sizes: tiny, Log: &log, Command: "test", Train: train})
	require.NoError(t, err, log.String())
	require.Len(t, r.Backends, 1)
	be := r.Backends[0]
	require.Empty(t, be.Errors)
	require.True(t, be.Ceilings.Valid())
	// The CPU's roofline is its own limits, not lathe's kernels.
	require.NotNil(t, be.Ceilings.CPU)
	require.Equal(t, max(be.Ceilings.CPU.FMAPeakAll, be.Ceilings.CPU.FMAPeak1), be.Ceilings.PeakFLOPS)
	require.Equal(t, max(be.Ceilings.CPU.ReadAll, be.Ceilings.CPU.Read1), be.Ceilings.Bandwidth)
	require.Positive(t, be.Ceilings.MatmulFLOPS)
	require.Positive(t, be.Ceilings.CPU.FMAPeak1)
	require.NotEmpty(t, be.Ceilings.CPU.Unit)
	require.Len(t, be.Kernels, len(Tiny.UniqueProjections())+1)
	for _, k := range be.Kernels {
		require.Empty(t, k.Err)
		require.Positive(t, k.Time.Median)
		require.Positive(t, k.GFLOPS)
		require.Positive(t, k.Roofline)
		require.Equal(t, string(gemm.CurrentISA()), k.ISA)
		// The CPU kernels are measured on one thread too, and on the AVX2 path where the CPU is
		// wider, in the same run.
		if runtime.GOMAXPROCS(0) > 1 {
			require.NotNil(t, k.Time1, k.ID)
			require.Positive(t, k.Efficiency, k.ID)
		}
		if gemm.CurrentISA() == gemm.ISAAVX512 {
			require.NotNil(t, k.AVX2Time, k.ID)
		}
	}
	require.Len(t, be.E2E, 2, "batch 1 and batch 8")
	for i, b := range []int{1, 8} {
		require.Empty(t, be.E2E[i].Err)
		require.Equal(t, b, be.E2E[i].Batch)
		require.Positive(t, be.E2E[i].TokensPerSec)
	}
	require.Equal(t, []string{"lora", "qlora"}, []string{got[0].Method, got[1].Method})
	require.Len(t, be.Train, 2)
	require.Empty(t, be.Train[0].Err)
	require.InDelta(t, 16/0.5, be.Train[0].TokensPerSec, 1e-9, "tokens a step over the median step time")
	require.Equal(t, int64(1<<20), be.Train[0].PeakBytes)
	dir := t.TempDir()
	_, err = r.WriteAll(dir)
	require.NoError(t, err)
	md, err := os.ReadFile(filepath.Join(dir, "bench.md"))
	require.NoError(t, err)
	require.True(t, strings.Contains(string(md), "| nf4_gemv | tiny |"), string(md))
	require.Contains(t, string(md), "CPU ceilings (no lathe kernel involved)")
	if runtime.GOMAXPROCS(0) > 1 {
		require.Contains(t, string(md), "| kernel | model | shape | all threads | GB/s | 1 thread | parallel efficiency |")
	}
}

func TestUnknownBackend(t *testing.T) {
	_, err := Run(context.Background(), Options{Backend: "tpu"})
	require.ErrorContains(t, err, "unknown backend")
}

// On Vulkan the kernels the GLSL tier replaces are measured again with the tier off and on WebGPU
// on the same device, in the same run, and the report has their ratios (lavapipe in CI: flagged
// as a correctness device).
func TestQuickRunVulkanTiers(t *testing.T) {
	tiny := func(d engine.DeviceInfo, caps engine.Caps, quick bool) Sizes {
		return Sizes{Models: []ModelShape{Tiny}, Kernels: []string{KernelGEMV, KernelGEMM, KernelRMSNorm}, Tokens: 16, Context: 32, Rank: 4,
			BandwidthElems: 1 << 16, MatmulN: 64, Chain: 1, Replicas: 1,
			Repeats: Repeats{Warmup: 1, Min: 2, Max: 3, Budget: 10 * time.Millisecond}}
	}
	var log bytes.Buffer
	r, err := Run(context.Background(), Options{Backend: "vulkan", Quick: true, Sizes: tiny, Log: &log, Command: "test", SkipE2E: true})
	if err != nil || len(r.Backends) == 0 || len(r.Backends[0].Kernels) == 0 {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v\n%s", err, log.String())
		}
		t.Skipf("no Vulkan device: %v", err)
	}
	be := r.Backends[0]
	require.Empty(t, be.Errors, log.String())
	webgpu := false
	for _, k := range be.Kernels {
		require.Empty(t, k.Err, k.ID)
		if k.Kernel == KernelRMSNorm {
			require.Nil(t, k.NagaTime, "rmsnorm has no GLSL kernel")
			continue
		}
		require.NotNil(t, k.NagaTime, k.ID)
		require.Positive(t, k.NagaTime.Median, k.ID)
		webgpu = webgpu || k.WebGPUTime != nil
	}
	md := r.Markdown()
	require.Contains(t, md, "| kernel | model | shape | Vulkan GLSL | Vulkan naga | WebGPU | naga ÷ GLSL | WebGPU ÷ Vulkan |")
	if be.Device.Type == "cpu" {
		require.True(t, webgpu, "lavapipe is listed by WebGPU too: its WebGPU time is missing\n%s", log.String())
		require.Contains(t, md, "software device (lavapipe)")
	}
	t.Log(log.String())
}

// TestColdCopiesReadTheirOwnWeights: a case with cold inputs compiles, on the CPU, into copies
// that each bind their own weights (and share the rest), enough of them to read ColdBytes.
func TestColdCopiesReadTheirOwnWeights(t *testing.T) {
	c := GEMVCase(Tiny, "q_proj", 64, 128)
	require.Equal(t, []string{"packed", "absmax"}, c.cold)
	const replicas = 5
	cc, err := compileCase(cpu.New(), c.build, replicas, c.cold, 1)
	require.NoError(t, err)
	defer cc.release()
	names := map[string]int{}
	for _, n := range cc.prog.Leaves() {
		names[strings.SplitN(n.Name(), "#", 2)[0]]++
	}
	require.Equal(t, map[string]int{"packed": replicas, "absmax": replicas, "x": 1}, names)
	// A GEMM (prefill) reads its weights from cache like every other kernel; decoding attention
	// reads its KV cache from memory.
	require.Empty(t, GEMMCase(Tiny, "q_proj", 16, 64, 128).cold)
	require.Empty(t, AttentionCase(Tiny, 16, 16, false).cold)
	require.Equal(t, []string{"k", "v"}, AttentionCase(Tiny, 1, 64, false).cold)
}

// TestColdCasesReadBetweenRuns: on the CPU a kernel with cold inputs is timed beside streaming
// reads of as many other bytes, run between its timed runs; a kernel reading from cache is not.
func TestColdCasesReadBetweenRuns(t *testing.T) {
	be := cpu.New()
	s := Sizes{ColdBytes: 1 << 20, Repeats: Repeats{Warmup: 1, Min: 3, Max: 3}}
	_, _, read, err := measureCase(be, GEMVCase(Tiny, "q_proj", 64, 128), s)
	require.NoError(t, err)
	require.Greater(t, read, 1e8, "bytes/s of the reads between runs")
	require.Less(t, read, 1e13)
	_, _, read, err = measureCase(be, GEMMCase(Tiny, "q_proj", 16, 64, 128), s)
	require.NoError(t, err)
	require.Zero(t, read)

	kr := KernelResult{Kernel: KernelGEMV, Flops: 1e6, Bytes: 1e6, Time: Stats{Median: 1e-4}, ReadGBps: 20}
	kr.fill(Roofline{PeakFLOPS: 1e12, Bandwidth: 40e9})
	require.InDelta(t, 0.5, kr.ReadFraction, 1e-9, "10 GB/s of a 20 GB/s read")
}
