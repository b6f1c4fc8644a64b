package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// SchemaVersion is the version of bench.json's layout.
const SchemaVersion = 1

// Report is everything one `lathe bench` run measured: bench.json.
type Report struct {
	Schema    int    `json:"schema"`
	Date      string `json:"date"`
	Command   string `json:"command"`
	GitCommit string `json:"git_commit,omitempty"`
	GoVersion string `json:"go_version"`
	Host      string `json:"host"`
	Quick     bool   `json:"quick"`
	// Load is the host's load average (/proc/loadavg) before and after the run: other work on
	// the machine makes timings noisier, multithreaded references (OpenMP) most of all.
	Load string `json:"load,omitempty"`
	// WallSeconds is how long the whole run took.
	WallSeconds float64          `json:"wall_seconds"`
	Backends    []BackendReport  `json:"backends"`
	Reference   *ReferenceReport `json:"reference,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
}

// BackendReport holds one device's figures.
type BackendReport struct {
	Device Device `json:"device"`
	// Tiny says the shapes were shrunk (software adapters such as lavapipe).
	Tiny bool `json:"tiny"`
	// Replicas is how many copies of a kernel one timed submission runs.
	Replicas int            `json:"replicas"`
	Ceilings Ceilings       `json:"ceilings"`
	Kernels  []KernelResult `json:"kernels"`
	E2E      []E2EResult    `json:"e2e,omitempty"`
	// LlamaCpp is llama.cpp on the end-to-end checkpoint (CPU with --reference).
	LlamaCpp []LlamaCppResult `json:"llamacpp,omitempty"`
	Train    []TrainResult    `json:"train,omitempty"`
	Errors   []string         `json:"errors,omitempty"`
	Seconds  float64          `json:"seconds"`
}

// Label names the backend and device in tables and charts: "cpu: AMD EPYC".
func (b BackendReport) Label() string {
	return b.Device.Backend + ": " + b.Device.Name
}

// Ceilings are the measured roofline of a device and how they were measured.
type Ceilings struct {
	Roofline
	// BandwidthKernel and MatmulKernel describe lathe's own ceiling kernels ("scale f32 64 MiB"),
	// ScaleBandwidth and MatmulFLOPS their rates. They are the roofline of a GPU; the CPU's roofline
	// is its own limits (CPU), against which they are reported.
	BandwidthKernel string  `json:"bandwidth_kernel"`
	BandwidthTime   Stats   `json:"bandwidth_time"`
	ScaleBandwidth  float64 `json:"scale_bandwidth"`
	MatmulKernel    string  `json:"matmul_kernel"`
	MatmulTime      Stats   `json:"matmul_time"`
	MatmulFLOPS     float64 `json:"matmul_flops"`
	// MatmulFLOPSAVX2 is the same matmul on the AVX2 path (CPU with a wider unit only).
	MatmulFLOPSAVX2 float64 `json:"matmul_flops_avx2,omitempty"`
	// CPU holds the CPU's own ceilings (cpu backend only).
	CPU *CPUCeilings `json:"cpu,omitempty"`
}

// KernelResult is one kernel case's figures. Times are per kernel execution, in seconds.
type KernelResult struct {
	ID     string  `json:"id"`
	Kernel string  `json:"kernel"`
	Model  string  `json:"model"`
	Proj   string  `json:"proj"`
	Shape  string  `json:"shape"`
	Dims   Dims    `json:"dims"`
	Flops  float64 `json:"flops"`
	Bytes  float64 `json:"bytes"`
	// Time is wall clock per kernel (submission, run and wait); the rates derive from it.
	Time Stats `json:"time"`
	// GPUTime is the kernels' time as the device measured it (timestamp queries around each
	// compute pass, scaled by the queue's timestamp period), per kernel; absent on devices
	// without timestamps.
	GPUTime *Stats  `json:"gpu_time,omitempty"`
	GFLOPS  float64 `json:"gflops"`
	GBps    float64 `json:"gbps"`
	// Intensity is flops per byte; Roofline the fraction of min(peak, Intensity·bandwidth) reached.
	Intensity float64 `json:"intensity"`
	Roofline  float64 `json:"roofline_fraction"`
	// ReadGBps is, for a kernel that reads from memory (on the CPU: a decoding GEMV's weights,
	// decoding attention's cache), the median rate of a streaming read of as many other bytes run
	// between its timed runs, and ReadFraction its GB/s over that. A shared host's memory
	// bandwidth varies with its neighbours' work; these pair the kernel with a plain read at the
	// same moments, where Roofline holds it to the best the host showed.
	ReadGBps     float64 `json:"read_between_gbps,omitempty"`
	ReadFraction float64 `json:"read_between_fraction,omitempty"`
	// SameAs names the case whose measurement this one reuses (identical shapes across models).
	SameAs string `json:"same_as,omitempty"`
	// ISA is the instruction set the CPU backend's kernels ran on (CPU only). AVX2Time is the same
	// kernel on the AVX2 path in the same run, where the CPU has a wider unit (the previous path,
	// beside the new one).
	ISA      string `json:"isa,omitempty"`
	AVX2Time *Stats `json:"avx2_time,omitempty"`
	// Time1 is the kernel on one thread (CPU only), and Efficiency the parallel efficiency of the
	// all-thread time: Time1 ÷ (threads × Time).
	Time1 *Stats `json:"time_1thread,omitempty"`
	// NagaTime is the kernel on Vulkan with the GLSL tier off (naga's SPIR-V of the WGSL), and
	// WebGPUTime the same case on WebGPU on the same device, both measured right after Time in the
	// same run (Vulkan only, kernels the GLSL tier replaces).
	NagaTime   *Stats  `json:"naga_time,omitempty"`
	WebGPUTime *Stats  `json:"webgpu_time,omitempty"`
	Efficiency float64 `json:"parallel_efficiency,omitempty"`
	// RefSeconds is the reference's median time on the same shape and RefRatio its time over
	// lathe's (>1: lathe is faster); both absent when no reference ran on a comparable device.
	RefSeconds float64 `json:"ref_seconds,omitempty"`
	// RefMin is the reference's fastest run: far below RefSeconds means a noisy host (OpenMP
	// threads stall when another process takes their core).
	RefMin   float64 `json:"ref_min,omitempty"`
	RefRatio float64 `json:"ref_ratio,omitempty"`
	RefImpl  string  `json:"ref_impl,omitempty"`
	Err      string  `json:"error,omitempty"`
}

// E2EResult is an end-to-end generation measurement through model.Cache.Step.
type E2EResult struct {
	Name string `json:"name"`
	// Model describes the synthetic checkpoint (its shapes and layer count).
	Model   string `json:"model"`
	Weights string `json:"weights"`
	// Batch sequences are decoded in lockstep; TokensPerSec counts the tokens of all of them.
	Batch int `json:"batch"`
	// Adapters is the number of different LoRA adapters the sequences use in the same steps.
	Adapters     int     `json:"adapters,omitempty"`
	PromptTokens int     `json:"prompt_tokens"`
	DecodeTokens int     `json:"decode_tokens"`
	TTFT         Stats   `json:"ttft"`
	TokenTime    Stats   `json:"token_time"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	// Launches is the number of kernel launches of a decode step.
	Launches int `json:"launches"`
	// Submissions and Reads are the submissions to the device and the host reads of a decode
	// step (engine.Counting), averaged over the timed steps.
	Submissions float64 `json:"submissions_per_step"`
	Reads       float64 `json:"reads_per_step"`
	ReadBytes   float64 `json:"read_bytes_per_step"`
	WeightBytes int64   `json:"weight_bytes"`
	Err         string  `json:"error,omitempty"`
}

// WriteJSON writes r as indented JSON to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ReadReport reads a bench.json.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("read report %s: schema %d, this lathe reads %d", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// WriteAll writes bench.json, bench.md and the charts into dir (created if missing) and returns
// the paths written.
func (r *Report) WriteAll(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	var paths []string
	jp := filepath.Join(dir, "bench.json")
	if err := r.WriteJSON(jp); err != nil {
		return nil, err
	}
	paths = append(paths, jp)
	mp := filepath.Join(dir, "bench.md")
	if err := os.WriteFile(mp, []byte(r.Markdown()), 0o644); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	paths = append(paths, mp)
	charts, err := r.WriteCharts(dir)
	if err != nil {
		return paths, err
	}
	return append(paths, charts...), nil
}
