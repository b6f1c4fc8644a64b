package bench

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
)

// Chart files are named after the device as `lathe devices` names it (webgpu:1 → webgpu_1), not
// after the device's place in the report.
func TestChartsAreNamedAfterTheDevice(t *testing.T) {
	k := func(model string, gflops float64) KernelResult {
		return KernelResult{Kernel: "sgemm", Model: model, Flops: gflops * 1e9, Bytes: 1e6, Time: Stats{Median: 1}, GFLOPS: gflops, Intensity: 10}
	}
	be := BackendReport{
		Device:   Device{DeviceInfo: engine.DeviceInfo{Backend: "webgpu", Index: 1, Name: "gpu"}},
		Ceilings: Ceilings{Roofline: Roofline{PeakFLOPS: 1e11, Bandwidth: 1e10}},
		Kernels:  []KernelResult{k(Models[0].Name, 3), k(Models[1].Name, 5)},
	}
	dir := t.TempDir()
	paths, err := (&Report{Backends: []BackendReport{be}}).WriteCharts(dir)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "roofline-webgpu_1.png"), filepath.Join(dir, "throughput-webgpu_1.png")}, paths)
	for _, p := range paths {
		require.FileExists(t, p)
	}
}
