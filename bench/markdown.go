package bench

import (
	"fmt"
	"slices"
	"strings"
)

// Markdown renders the report as bench.md: one section per device with its ceilings, a kernel
// table, the end-to-end and training figures, then the reference and notes.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# lathe bench\n\n")
	w("- date: %s\n- command: `%s`\n", r.Date, r.Command)
	if r.GitCommit != "" {
		w("- commit: `%s`\n", r.GitCommit)
	}
	w("- host: %s, %s\n", r.Host, r.GoVersion)
	if r.Load != "" {
		w("- load average: %s (other work on the host makes timings noisier)\n", r.Load)
	}
	w("- quick: %v\n- wall time: %.1f s\n\n", r.Quick, r.WallSeconds)
	for _, be := range r.Backends {
		d := be.Device
		w("## %s\n\n", be.Label())
		w("%s, %s, %s", d.Vendor, d.Type, d.API)
		if d.Driver != "" && d.Driver != d.Name {
			w(", driver %s", d.Driver)
		}
		if d.MemoryBytes > 0 {
			w(", %.1f GiB", float64(d.MemoryBytes)/(1<<30))
		}
		if d.Cores > 0 {
			w(", %d cores", d.Cores)
		}
		w(". Measured in %.1f s.\n\n", be.Seconds)
		if be.Tiny {
			w("**Tiny shapes**: this is a software adapter (a GPU API running on the CPU). It proves the kernels run; its speed says nothing about a GPU, so it gets no reference ratio.\n\n")
		}
		for _, e := range be.Errors {
			w("- error: %s\n", e)
		}
		if len(be.Errors) > 0 {
			w("\n")
		}
		c := be.Ceilings
		if c.Valid() {
			if c.CPU != nil {
				w("Roofline: bandwidth **%.1f GB/s** (streaming read, all threads), compute **%.1f GFLOP/s** (FMA peak, all threads); ridge at %.1f flop/byte. %s\n\n",
					c.Bandwidth/1e9, c.PeakFLOPS/1e9, c.Ridge(), c.CPU.describe())
				w("Against them, lathe's %s: %.1f GFLOP/s (%.0f%% of the FMA peak, median %s)",
					c.MatmulKernel, c.MatmulFLOPS/1e9, 100*c.MatmulFLOPS/c.PeakFLOPS, fmtDur(c.MatmulTime.Median))
				if c.MatmulFLOPSAVX2 > 0 {
					w(", on the AVX2 path %.1f GFLOP/s", c.MatmulFLOPSAVX2/1e9)
				}
				w("; its %s: %.1f GB/s (%.0f%% of the streaming read, median %s).\n\n",
					c.BandwidthKernel, c.ScaleBandwidth/1e9, 100*c.ScaleBandwidth/c.Bandwidth, fmtDur(c.BandwidthTime.Median))
			} else {
				w("Roofline: bandwidth **%.1f GB/s** (%s, median %s), compute **%.1f GFLOP/s** (%s, median %s); ridge at %.1f flop/byte.",
					c.Bandwidth/1e9, c.BandwidthKernel, fmtDur(c.BandwidthTime.Median), c.PeakFLOPS/1e9, c.MatmulKernel, fmtDur(c.MatmulTime.Median), c.Ridge())
				if be.Replicas > 1 {
					w(" Each timed submission runs a kernel %d times; times are per kernel.", be.Replicas)
				}
				w("\n\n")
			}
		}
		if len(be.Kernels) > 0 {
			w("Median and min–max are wall clock (submission, run and wait); \"gpu\" is the kernels' time measured by the device's timestamps, where it has them.")
			if slices.ContainsFunc(be.Kernels, func(k KernelResult) bool { return k.ReadGBps > 0 }) {
				w(" \"%% of read between\": kernels that read from memory (a decoding GEMV's weights, decoding attention's cache) against the median of a streaming read of as many other bytes run between their timed runs, on all threads: the memory bandwidth of the same moments, where the roofline's is the best the host showed.")
			}
			w("\n\n")
			w("| kernel | model | proj | shape | median | min–max | GFLOP/s | GB/s | %% roofline | %% of read between | torch median | lathe speed ÷ torch |\n")
			w("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, k := range be.Kernels {
				if k.Err != "" {
					w("| %s | %s | %s | %s | error: %s | | | | | | | |\n", k.Kernel, k.Model, k.Proj, k.Shape, oneLine(k.Err))
					continue
				}
				ref, ratio := "", ""
				if k.RefRatio > 0 {
					ref, ratio = fmtDur(k.RefSeconds), fmt.Sprintf("%.2f×", k.RefRatio)
					if k.RefMin > 0 && k.RefMin < k.RefSeconds/2 {
						ref += " (min " + fmtDur(k.RefMin) + ")" // a noisy reference
					}
				}
				same := ""
				if k.SameAs != "" {
					same = " (= " + k.SameAs + ")"
				}
				median := fmtDur(k.Time.Median)
				if k.GPUTime != nil {
					median += " (gpu " + fmtDur(k.GPUTime.Median) + ")"
				}
				read := ""
				if k.ReadFraction > 0 {
					read = fmt.Sprintf("%.1f (of %.1f GB/s)", 100*k.ReadFraction, k.ReadGBps)
				}
				w("| %s | %s%s | %s | %s | %s | %s | %.2f | %.2f | %.1f | %s | %s | %s |\n", k.Kernel, k.Model, same, k.Proj, k.Shape,
					median, fmtRange(k.Time), k.GFLOPS, k.GBps, 100*k.Roofline, read, ref, ratio)
			}
			w("\n")
		}
		writeCPUVariants(w, be)
		writeGPUVariants(w, be)
		if len(be.E2E) > 0 {
			w("End to end through `model.Cache.Step` with the KV cache, step programs compiled once (LoRA adapters: rank 16 on every linear layer, each sequence of the batch with its own):\n\n")
			w("| run | checkpoint | weights | batch | LoRA adapters | prompt | time to first token | decode tokens/s | per step (min–max) | launches a step | submissions / host reads (bytes) a step |\n")
			w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, e := range be.E2E {
				if e.Err != "" {
					w("| %s | %s | %s | %d | %d | %d | error: %s | | | | |\n", e.Name, e.Model, e.Weights, max(e.Batch, 1), e.Adapters, e.PromptTokens, oneLine(e.Err))
					continue
				}
				w("| %s | %s | %s | %d | %d | %d | %s | %.2f | %s (%s) | %d | %g / %g (%.0f B) |\n", e.Name, e.Model, e.Weights, max(e.Batch, 1), e.Adapters, e.PromptTokens, fmtDur(e.TTFT.Median), e.TokensPerSec, fmtDur(e.TokenTime.Median), fmtRange(e.TokenTime), e.Launches, e.Submissions, e.Reads, e.ReadBytes)
			}
			w("\n")
		}
		if len(be.LlamaCpp) > 0 {
			w("llama.cpp beside lathe on the same checkpoint (exported to GGUF with lathe's exporter), same run, llama.cpp through node-llama-cpp with as many threads as lathe (ratios above 1: lathe is faster):\n\n")
			w("| llama.cpp weights | GGUF size | threads | prompt | time to first token | decode tokens/s | lathe run | lathe prefill speed ÷ llama.cpp | lathe decode ÷ llama.cpp |\n")
			w("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
			for _, l := range be.LlamaCpp {
				if l.Err != "" {
					w("| %s | | %d | | error: %s | | %s | | |\n", l.Type, l.Threads, oneLine(l.Err), l.Lathe)
					continue
				}
				w("| %s | %.1f MiB | %d | %d | %s | %.2f | %s, batch 1 | %.2f× | %.2f× |\n", l.Type, float64(l.Bytes)/(1<<20), l.Threads, l.PromptTokens,
					fmtDur(l.TTFT.Median), l.TokensPerSec, l.Lathe, l.PrefillRatio, l.DecodeRatio)
			}
			w("\n")
		}
		if len(be.Train) > 0 {
			w("| training | checkpoint | batch×seq | rank | step (median) | tokens/s | peak device memory | loss | submissions / host reads / launches a step |\n")
			w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, t := range be.Train {
				if t.Err != "" {
					w("| %s | %s | %d×%d | %d | error: %s | | | | |\n", t.Method, t.Model, t.Batch, t.Seq, t.Rank, oneLine(t.Err))
					continue
				}
				w("| %s | %s | %d×%d | %d | %s | %.1f | %.1f MiB | %.4f | %g / %g / %g |\n", t.Method, t.Model, t.Batch, t.Seq, t.Rank, fmtDur(t.StepTime.Median), t.TokensPerSec, float64(t.PeakBytes)/(1<<20), t.Loss, t.Submissions, t.Reads, t.Launches)
			}
			w("\n")
			for _, t := range be.Train {
				if len(t.Memory) == 0 {
					continue
				}
				w("Device memory of the %s step (planned; MiB) by base weights and optimizer, against the floor (ideal buffer reuse). A bf16 or f16 base stays 16-bit. Paged: the state in host memory, streamed layer by layer; on the CPU backend paging changes nothing.\n\n", t.Method)
				w("| base | optimizer | weights | adapters | optimizer state | gradients | activations | floor | peak | peak/floor | host state | moved a step |\n")
				w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
				mib := func(n int64) string { return fmt.Sprintf("%.2f", float64(n)/(1<<20)) }
				for _, r := range t.Memory {
					w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f× | %s | %s |\n", r.Base, r.Optimizer, mib(r.Weights), mib(r.Adapters), mib(r.State),
						mib(r.Gradients), mib(r.Activations), mib(r.Floor), mib(r.Peak), float64(r.Peak)/float64(max(r.Floor, 1)), mib(r.HostState), mib(r.Moved))
				}
				w("\n")
			}
			for _, t := range be.Train {
				if t.RefRatio > 0 {
					w("- %s training step beside PyTorch (same shapes, same run): lathe %.1f tokens/s, torch %.1f tokens/s (%s a step; %s): ratio %.2f× (above 1: lathe is faster)\n",
						t.Method, t.TokensPerSec, t.RefTokensPerSec, fmtDur(t.RefSeconds), t.RefImpl, t.RefRatio)
				}
			}
			w("\n")
		} else {
			w("Training steps: not measured (no trainer is plugged into `bench.Options.Train`).\n\n")
		}
	}
	w("## Reference\n\n")
	switch {
	case r.Reference == nil:
		w("Not run (pass `--reference`).\n\n")
	case r.Reference.Error != "":
		w("No reference: %s. No ratio is reported.\n\n", r.Reference.Error)
	default:
		w("`%s` running `bench/reference/torch_ref.py` on the same shapes. Ratio = torch time ÷ lathe time (above 1: lathe is faster). NF4 kernels are compared with a dense matmul of the dequantized weight (%s) unless bitsandbytes ran, so torch reads 4 or 2 bytes a weight where lathe reads 0.56.\n\n", r.Reference.Python, refDTypes(r.Reference))
		for _, run := range r.Reference.Runs {
			if run.Error != "" {
				w("- %s: error: %s\n", run.Device, oneLine(run.Error))
				continue
			}
			w("- %s (%s): torch %s, %s, %d threads, BLAS %s, CPU matmuls %s, bitsandbytes %s, peft %s; %d shapes in %.1f s\n", run.Device, run.DeviceName, run.Torch, run.DType, run.Threads,
				run.BLASInfo, run.CPUMatmul, optVersion(run.Bitsandbytes), optVersion(run.PEFT), len(run.Cases), run.Seconds)
			impls := map[string]bool{}
			for _, c := range run.Cases {
				if !impls[c.Impl] {
					impls[c.Impl] = true
					w("  - implementation: %s\n", c.Impl)
				}
			}
			for id, e := range run.Errors {
				w("  - %s: error: %s\n", id, oneLine(e))
			}
			for _, n := range run.Notes {
				w("  - %s\n", n)
			}
		}
		w("\n")
	}
	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
	return b.String()
}

func refDTypes(rr *ReferenceReport) string {
	var ds []string
	for _, r := range rr.Runs {
		if r.DType != "" {
			ds = append(ds, r.Device+": "+r.DType)
		}
	}
	if len(ds) == 0 {
		return "dense"
	}
	return strings.Join(ds, ", ")
}

func optVersion(v *string) string {
	if v == nil {
		return "not installed"
	}
	return *v
}

func fmtRange(s Stats) string {
	if s.N == 0 {
		return ""
	}
	return fmtDur(s.Min) + "–" + fmtDur(s.Max)
}

// oneLine keeps a message from breaking a Markdown table.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", "/")
}

// writeCPUVariants is the CPU's table of thread scaling and instruction-set paths: each kernel on
// all threads and the widest path, on one thread, and on the AVX2 path, all from the same run.
func writeCPUVariants(w func(string, ...any), be BackendReport) {
	var ks []KernelResult
	for _, k := range be.Kernels {
		if k.Err == "" && k.SameAs == "" && (k.Time1 != nil || k.AVX2Time != nil) {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return
	}
	w("Threads and instruction sets (same run): the kernel on all threads with the widest path (%s), on one thread, and on the AVX2 path.\n\n", ks[0].ISA)
	w("| kernel | model | shape | all threads | GB/s | 1 thread | parallel efficiency | AVX2 path | widest ÷ AVX2 speed |\n")
	w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, k := range ks {
		one, eff, avx2, gain := "", "", "", ""
		if k.Time1 != nil {
			one, eff = fmtDur(k.Time1.Median), fmt.Sprintf("%.0f%%", 100*k.Efficiency)
		}
		if k.AVX2Time != nil {
			avx2, gain = fmtDur(k.AVX2Time.Median), fmt.Sprintf("%.2f×", k.AVX2Time.Median/k.Time.Median)
		}
		w("| %s | %s | %s | %s | %.2f | %s | %s | %s | %s |\n", k.Kernel, k.Model, k.Shape, fmtDur(k.Time.Median), k.GBps, one, eff, avx2, gain)
	}
	w("\n")
}
