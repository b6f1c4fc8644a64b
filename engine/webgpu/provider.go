// Package webgpu is lathe's portable GPU backend: WGSL compute kernels (package shaders) run through
// wgpu-native (github.com/oliverbestmann/webgpu, wgpu-native v29) on Vulkan, Metal or D3D12. One Run is one command
// encoder and one queue submission; readback goes through a staging buffer polled without blocking,
// so a slow or lost device returns an error instead of hanging the process.
package webgpu

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/oliverbestmann/webgpu/wgpu"

	"github.com/lathe-ml/lathe/engine"
)

// Provider discovers WebGPU adapters (Vulkan, Metal, D3D12; OpenGL is left out because its compute
// support is too limited) and opens them.
type Provider struct{}

// Name is "webgpu".
func (Provider) Name() string { return "webgpu" }

// instanceBackends are the native APIs lathe asks wgpu for: WGPUInstanceBackend_Primary (Vulkan,
// Metal, D3D12, browser WebGPU), which the binding does not name. Leaving OpenGL out also keeps
// EGL's warnings about a headless machine off stderr.
const instanceBackends = wgpu.InstanceBackend(1<<0 | 1<<2 | 1<<3 | 1<<5)

var logOnce sync.Once

// quietLog lets wgpu-native print errors only (on stderr), unless LATHE_LOG=debug asks for all
// of it: a successful command prints nothing but progress on stderr.
//
// Creating a Vulkan instance also probes for a Wayland display; on a headless machine (no
// XDG_RUNTIME_DIR) libwayland prints "error: XDG_RUNTIME_DIR is invalid" for each probe. With
// none of the variables it reads set, no compositor can be reached anyway, so an absolute
// WAYLAND_DISPLAY that does not exist makes the probe fail the same way, silently.
func quietLog() {
	logOnce.Do(func() {
		if os.Getenv("XDG_RUNTIME_DIR") == "" && os.Getenv("WAYLAND_DISPLAY") == "" && os.Getenv("WAYLAND_SOCKET") == "" {
			os.Setenv("WAYLAND_DISPLAY", "/nonexistent/lathe-no-wayland")
		}
		if strings.EqualFold(os.Getenv("LATHE_LOG"), "debug") {
			wgpu.SetLogLevel(wgpu.LogLevelDebug)
		} else {
			wgpu.SetLogLevel(wgpu.LogLevelError)
		}
	})
}

// newInstance creates a wgpu instance, turning the binding's panic (no loader, no driver) into an
// error.
func newInstance() (inst *wgpu.Instance, err error) {
	quietLog()
	defer func() {
		if r := recover(); r != nil {
			inst, err = nil, fmt.Errorf("webgpu: cannot create an instance: %v", r)
		}
	}()
	return wgpu.CreateInstance(&wgpu.InstanceDescriptor{Backends: instanceBackends}), nil
}

// adapters enumerates the instance's adapters in a stable order (the order wgpu reports).
func adapters(inst *wgpu.Instance) (ads []*wgpu.Adapter) {
	quietNative(func() {
		ads = inst.EnumerateAdapters(&wgpu.InstanceEnumerateAdapterOptons{Backends: instanceBackends})
	})
	return ads
}

// Devices lists every adapter wgpu finds; none is not an error.
func (Provider) Devices() ([]engine.DeviceInfo, error) {
	inst, err := newInstance()
	if err != nil {
		return nil, err
	}
	defer inst.Release()
	var out []engine.DeviceInfo
	for i, a := range adapters(inst) {
		out = append(out, adapterInfo(a, i))
		a.Release()
	}
	return out, nil
}

// Open opens the adapter with the given index from Devices.
func (Provider) Open(index int) (engine.Backend, error) {
	return Open(index)
}

// vendorName maps PCI (and Khronos) vendor IDs to names.
func vendorName(id uint32, fallback string) string {
	switch id {
	case 0x10de:
		return "NVIDIA"
	case 0x1002, 0x1022:
		return "AMD"
	case 0x8086:
		return "Intel"
	case 0x106b:
		return "Apple"
	case 0x13b5:
		return "ARM"
	case 0x5143:
		return "Qualcomm"
	case 0x1010:
		return "Imagination"
	case 0x14e4:
		return "Broadcom"
	case 0x1414:
		return "Microsoft"
	case 0x10005:
		return "Mesa"
	}
	if fallback != "" {
		return fallback
	}
	return fmt.Sprintf("0x%x", id)
}

func typeName(t wgpu.AdapterType) string {
	switch t {
	case wgpu.AdapterTypeDiscreteGPU:
		return "discrete"
	case wgpu.AdapterTypeIntegratedGPU:
		return "integrated"
	case wgpu.AdapterTypeCPU:
		return "cpu"
	}
	return "other"
}

func apiName(t wgpu.BackendType) string {
	switch t {
	case wgpu.BackendTypeVulkan:
		return "Vulkan"
	case wgpu.BackendTypeMetal:
		return "Metal"
	case wgpu.BackendTypeD3D12:
		return "D3D12"
	case wgpu.BackendTypeD3D11:
		return "D3D11"
	case wgpu.BackendTypeOpenGL, wgpu.BackendTypeOpenGLES:
		return "GL"
	case wgpu.BackendTypeWebGPU:
		return "WebGPU"
	}
	return t.String()
}

// limitMap keeps the limits the kernels care about, by their WebGPU names.
func limitMap(l wgpu.Limits) map[string]uint64 {
	return map[string]uint64{
		"maxBufferSize":                     l.MaxBufferSize,
		"maxStorageBufferBindingSize":       l.MaxStorageBufferBindingSize,
		"maxUniformBufferBindingSize":       l.MaxUniformBufferBindingSize,
		"maxStorageBuffersPerShaderStage":   uint64(l.MaxStorageBuffersPerShaderStage),
		"maxComputeWorkgroupStorageSize":    uint64(l.MaxComputeWorkgroupStorageSize),
		"maxComputeInvocationsPerWorkgroup": uint64(l.MaxComputeInvocationsPerWorkgroup),
		"maxComputeWorkgroupSizeX":          uint64(l.MaxComputeWorkgroupSizeX),
		"maxComputeWorkgroupsPerDimension":  uint64(l.MaxComputeWorkgroupsPerDimension),
		"minUniformBufferOffsetAlignment":   uint64(l.MinUniformBufferOffsetAlignment),
		"minStorageBufferOffsetAlignment":   uint64(l.MinStorageBufferOffsetAlignment),
	}
}

func adapterInfo(a *wgpu.Adapter, index int) engine.DeviceInfo {
	ai := a.GetInfo()
	lim := a.GetLimits()
	var feats []string
	for _, f := range a.GetFeatures() {
		if s := f.String(); s != "" {
			feats = append(feats, s)
		}
	}
	sort.Strings(feats)
	// Some drivers report the device ID ("0x0") where the name belongs; the driver description
	// (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)") names those better.
	name := ai.Device
	if name == "" || strings.HasPrefix(name, "0x") {
		name = ai.Description
	}
	if name == "" {
		name = fmt.Sprintf("adapter %d", index)
	}
	caps := featureCaps(a.HasFeature)
	caps.MaxBufferBytes = int64(min(lim.MaxBufferSize, lim.MaxStorageBufferBindingSize))
	return engine.DeviceInfo{
		Backend: "webgpu", Index: index, Name: name, Caps: &caps,
		Vendor:   vendorName(ai.VendorId, ai.Vendor),
		Type:     typeName(ai.AdapterType),
		API:      apiName(ai.BackendType),
		Driver:   ai.Description,
		Features: feats,
		Limits:   limitMap(lim),
	}
}

// Features lathe's kernels use when the adapter has them. Subgroups are wgpu's native feature:
// naga v29 does not implement WGSL's standard `enable subgroups;` (see shaders.SubgroupsEnable).
var (
	featureF16        = wgpu.FeatureNameShaderF16
	featureSubgroups  = wgpu.NativeFeatureSubgroup
	featureTimestamps = wgpu.FeatureNameTimestampQuery
)

// featureCaps sets the caps that follow from the adapter's (or device's) features. Weights16 needs
// none: the kernels read 16-bit weights as packed words (gpuplan).
func featureCaps(has func(wgpu.FeatureName) bool) engine.Caps {
	return engine.Caps{ShaderF16: has(featureF16), Subgroups: has(featureSubgroups), Timestamps: has(featureTimestamps), Weights16: true}
}

// wantedFeatures are the features of featureCaps the adapter has, to request with the device.
func wantedFeatures(a *wgpu.Adapter) []wgpu.FeatureName {
	var out []wgpu.FeatureName
	for _, f := range []wgpu.FeatureName{featureF16, featureSubgroups, featureTimestamps} {
		if a.HasFeature(f) {
			out = append(out, f)
		}
	}
	return out
}
