package bench

import (
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/backends"
)

// glslTier is a backend with a GLSL tier that can be turned off (engine/vulkan): off, every
// kernel is naga's translation of the WGSL that WebGPU runs.
type glslTier interface{ UseGLSL(on bool) }

// glslKernels are the cases whose kernels the GLSL tier replaces (the GEMV, the GEMMs and the
// LoRA products built on them): on Vulkan they are measured again with the tier off and on
// WebGPU on the same device.
var glslKernels = map[string]bool{KernelGEMV: true, KernelGEMM: true, KernelLoRAFwd: true, KernelLoRAFwdUnfuse: true,
	KernelLoRABwd: true, KernelLoRABwdUnfuse: true}

// openWebGPUPeer opens WebGPU on the physical device d (a Vulkan device) is, found by name; nil
// when WebGPU does not list it.
func openWebGPUPeer(d engine.DeviceInfo) (engine.Backend, error) {
	for _, p := range backends.Providers() {
		if p.Name() != "webgpu" {
			continue
		}
		devs, err := p.Devices()
		if err != nil {
			return nil, err
		}
		for _, w := range devs {
			if w.Name == d.Name {
				return p.Open(w.Index)
			}
		}
	}
	return nil, nil
}

// measureGPUVariants measures a Vulkan case again, right after the GLSL tier's measurement: with
// the tier off (naga's SPIR-V of the WGSL), and on WebGPU on the same device (peer, when open),
// so that GLSL/naga and Vulkan/WebGPU are ratios from one run, interleaved case by case.
func measureGPUVariants(be, peer engine.Backend, c Case, s Sizes, kr *KernelResult, log io.Writer) {
	tg, ok := be.(glslTier)
	if !ok || !glslKernels[c.Kernel] {
		return
	}
	tg.UseGLSL(false)
	st, _, err := measure(be, c.build, s.Replicas, s.Repeats)
	tg.UseGLSL(true)
	line := fmt.Sprintf("  %-22s %-16s %-26s", "", "", "")
	if err == nil {
		kr.NagaTime = &st
		line += fmt.Sprintf(" naga %s (glsl %.2f× faster)", fmtDur(st.Median), st.Median/kr.Time.Median)
	}
	if peer != nil {
		if st, _, err := measure(peer, c.build, s.Replicas, s.Repeats); err == nil {
			kr.WebGPUTime = &st
			line += fmt.Sprintf(" webgpu %s (vulkan %.2f× faster)", fmtDur(st.Median), st.Median/kr.Time.Median)
		}
	}
	fmt.Fprintln(log, line)
}

// writeGPUVariants is Vulkan's table of the GLSL tier beside naga's WGSL and beside WebGPU, on the
// same device in the same run.
func writeGPUVariants(w func(string, ...any), be BackendReport) {
	var ks []KernelResult
	for _, k := range be.Kernels {
		if k.Err == "" && k.SameAs == "" && (k.NagaTime != nil || k.WebGPUTime != nil) {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return
	}
	w("Vulkan tiers and WebGPU (same device, same run, case by case): the GLSL tier, the same kernels as naga's SPIR-V of the WGSL, and WebGPU.")
	if be.Device.Type == "cpu" {
		w(" This is a software device (lavapipe): the ratios show that the paths run, not how fast they are on a GPU.")
	}
	w("\n\n| kernel | model | shape | Vulkan GLSL | Vulkan naga | WebGPU | naga ÷ GLSL | WebGPU ÷ Vulkan |\n")
	w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, k := range ks {
		naga, gain, web, ratio := "", "", "", ""
		if k.NagaTime != nil {
			naga, gain = fmtDur(k.NagaTime.Median), fmt.Sprintf("%.2f×", k.NagaTime.Median/k.Time.Median)
		}
		if k.WebGPUTime != nil {
			web, ratio = fmtDur(k.WebGPUTime.Median), fmt.Sprintf("%.2f×", k.WebGPUTime.Median/k.Time.Median)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", k.Kernel, k.Model, k.Shape, fmtDur(k.Time.Median), naga, web, gain, ratio)
	}
	w("\n")
}
