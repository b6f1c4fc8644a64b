// Package backends lists every backend lathe was built with, in the order automatic device
// selection prefers them, so that programs open "the best device" with one call.
package backends

import (
	"fmt"
	"sort"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/vulkan"
	"github.com/lathe-ml/lathe/engine/webgpu"
)

// Providers returns the backends' providers, GPU backends first (they are preferred over the CPU
// when their device type is the same), the CPU last. Vulkan comes before WebGPU, so that --device
// auto takes a GPU through the direct Vulkan tier rather than the same GPU through WebGPU; a CPU
// device (lavapipe) ranks below the CPU backend under either.
func Providers() []engine.Provider {
	return []engine.Provider{vulkan.Provider{}, webgpu.Provider{}, cpu.Provider{}}
}

// Open opens the device a --device value names: "auto", "cpu", "webgpu", "webgpu:1", "vulkan", "vulkan:0", ...
func Open(device string) (engine.Backend, error) {
	spec, err := engine.ParseDeviceSpec(device)
	if err != nil {
		return nil, err
	}
	known := false
	for _, p := range Providers() {
		known = known || spec.Backend == "" || p.Name() == spec.Backend
	}
	if !known {
		return nil, fmt.Errorf("device %q: unknown backend %q (this build has: %s)", device, spec.Backend, names())
	}
	return engine.Select(spec, Providers())
}

// Device is one device found by List, or the error its backend gave while looking.
type Device struct {
	engine.DeviceInfo
	Err string `json:"error,omitempty"`
}

// List returns every device of every backend, in the order --device auto prefers them; a backend
// that fails to enumerate is listed with its error rather than hiding the others.
func List() []Device {
	var out []Device
	for _, p := range Providers() {
		devs, err := p.Devices()
		if err != nil {
			out = append(out, Device{DeviceInfo: engine.DeviceInfo{Backend: p.Name(), Index: -1}, Err: err.Error()})
			continue
		}
		for _, d := range devs {
			out = append(out, Device{DeviceInfo: d})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return engine.Rank(out[i].DeviceInfo) < engine.Rank(out[j].DeviceInfo) })
	return out
}

func names() string {
	s := ""
	for i, p := range Providers() {
		if i > 0 {
			s += ", "
		}
		s += p.Name()
	}
	return s
}
