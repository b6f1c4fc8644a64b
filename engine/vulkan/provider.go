// Package vulkan is lathe's direct Vulkan backend (github.com/goki/vulkan v1.0.8 plus a small cgo
// shim, shim.go). It runs the same plans as engine/webgpu (engine/gpuplan: kernel, variant, grid,
// parameters, binding order) and the same WGSL kernels, translated to SPIR-V in process by naga
// (github.com/gogpu/naga, pure Go) when a pipeline is first needed, so every kernel is written
// once, except where its GLSL tier (glsl.go: hand-written kernels precompiled to SPIR-V, chosen
// from the device's queried properties) replaces one. It owns one compute queue, sub-allocates
// buffers from large device memory blocks, uploads and reads back through a host-visible staging
// buffer, records a prepared program's command buffer once and resubmits it, and waits on fences
// with a timeout (never an unbounded wait).
package vulkan

import (
	"fmt"
	"strings"

	vk "github.com/goki/vulkan"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/gpuplan"
)

// Provider discovers Vulkan physical devices and opens them.
type Provider struct{}

// Name is "vulkan".
func (Provider) Name() string { return "vulkan" }

// Open opens the device with the given index (as Devices lists it).
func (Provider) Open(index int) (engine.Backend, error) { return Open(index) }

// Devices lists every physical device the loader finds; none is not an error.
func (Provider) Devices() ([]engine.DeviceInfo, error) {
	inst, err := newInstance()
	if err != nil {
		return nil, err
	}
	defer vk.DestroyInstance(inst, nil)
	pds, err := physicalDevices(inst)
	if err != nil {
		return nil, err
	}
	out := make([]engine.DeviceInfo, 0, len(pds))
	for i, pd := range pds {
		d, err := describe(inst, pd, i)
		if err != nil {
			return nil, err
		}
		out = append(out, d.info)
	}
	return out, nil
}

// apiVersion is the Vulkan version lathe asks for: 1.1 has subgroups and Properties2 in core.
var apiVersion = vk.MakeVersion(1, 1, 0)

func newInstance() (vk.Instance, error) {
	if err := load(); err != nil {
		return nil, err
	}
	app := &vk.ApplicationInfo{SType: vk.StructureTypeApplicationInfo, PApplicationName: "lathe\x00", PEngineName: "lathe\x00", ApiVersion: apiVersion}
	var inst vk.Instance
	if err := vkErr("create instance", vk.CreateInstance(&vk.InstanceCreateInfo{SType: vk.StructureTypeInstanceCreateInfo, PApplicationInfo: app}, nil, &inst)); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoVulkan, err)
	}
	if err := vk.InitInstance(inst); err != nil {
		vk.DestroyInstance(inst, nil)
		return nil, fmt.Errorf("vulkan: %w", err)
	}
	return inst, nil
}

func physicalDevices(inst vk.Instance) ([]vk.PhysicalDevice, error) {
	var n uint32
	if err := vkErr("enumerate devices", vk.EnumeratePhysicalDevices(inst, &n, nil)); err != nil {
		return nil, err
	}
	pds := make([]vk.PhysicalDevice, n)
	if n > 0 {
		if err := vkErr("enumerate devices", vk.EnumeratePhysicalDevices(inst, &n, pds)); err != nil {
			return nil, err
		}
	}
	return pds[:n], nil
}

// device is one physical device as lathe sees it.
type device struct {
	info   engine.DeviceInfo
	props  vk.PhysicalDeviceProperties
	limits vk.PhysicalDeviceLimits
	ext    extended
	exts   map[string]bool
}

func describe(inst vk.Instance, pd vk.PhysicalDevice, index int) (*device, error) {
	d := &device{exts: map[string]bool{}}
	vk.GetPhysicalDeviceProperties(pd, &d.props)
	d.props.Deref()
	d.limits = d.props.Limits
	d.limits.Deref()
	exts, err := deviceExtensions(inst, pd)
	if err != nil {
		return nil, err
	}
	d.exts = exts
	ext, err := query(inst, pd, d.exts["VK_NV_cooperative_matrix"], d.exts["VK_KHR_cooperative_matrix"])
	if err != nil {
		return nil, err
	}
	d.ext = ext
	var mp vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(pd, &mp)
	mp.Deref()
	var mem int64
	for i := 0; i < int(mp.MemoryHeapCount); i++ {
		h := mp.MemoryHeaps[i]
		h.Deref()
		if h.Flags&vk.MemoryHeapFlags(vk.MemoryHeapDeviceLocalBit) != 0 && int64(h.Size) > mem {
			mem = int64(h.Size)
		}
	}
	api := fmt.Sprintf("Vulkan %d.%d.%d", d.props.ApiVersion>>22, (d.props.ApiVersion>>12)&0x3ff, d.props.ApiVersion&0xfff)
	driver := strings.TrimSpace(ext.driverName + " " + ext.driverInfo)
	caps := d.caps()
	d.info = engine.DeviceInfo{Backend: "vulkan", Index: index, Name: vk.ToString(d.props.DeviceName[:]), Vendor: vendorName(d.props.VendorID),
		Type: typeName(d.props.DeviceType), API: api, Driver: driver, MemoryBytes: mem, Features: d.features(), Caps: &caps,
		Limits: map[string]uint64{
			"max_storage_buffer_range":      uint64(d.limits.MaxStorageBufferRange),
			"max_compute_shared_memory":     uint64(d.limits.MaxComputeSharedMemorySize),
			"max_compute_workgroup_count_x": uint64(d.limits.MaxComputeWorkGroupCount[0]),
			"max_compute_invocations":       uint64(d.limits.MaxComputeWorkGroupInvocations),
			"subgroup_size":                 uint64(ext.subgroupSize),
		}}
	return d, nil
}

// Subgroup operation and stage bits (VkSubgroupFeatureFlagBits, VkShaderStageFlagBits).
const (
	subgroupBasic      = 0x1
	subgroupArithmetic = 0x4
	stageCompute       = 0x20
)

// subgroups reports whether compute kernels may use subgroup arithmetic (subgroupAdd, Max).
func (d *device) subgroups() bool {
	return d.ext.subgroupStages&stageCompute != 0 && d.ext.subgroupOps&(subgroupBasic|subgroupArithmetic) == subgroupBasic|subgroupArithmetic && d.ext.subgroupSize > 0
}

// caps are the caps known before opening (the tiles come with the plan device at Open). Weights16
// needs no feature: the kernels read 16-bit weights as packed words (gpuplan).
func (d *device) caps() engine.Caps {
	c := engine.Caps{ShaderF16: d.ext.f16 && d.ext.storage16, Subgroups: d.subgroups(), Weights16: true,
		MaxBufferBytes: int64(d.limits.MaxStorageBufferRange)}
	if c.Subgroups {
		c.SubgroupSize = d.ext.subgroupSize
	}
	return c
}

// features lists what lathe's kernels may use, as `lathe devices` shows it.
func (d *device) features() []string {
	var f []string
	if d.subgroups() {
		f = append(f, fmt.Sprintf("subgroups(%d)", d.ext.subgroupSize))
	}
	for _, x := range []struct {
		ok   bool
		name string
	}{{d.ext.f16, "shader_f16"}, {d.ext.int8, "shader_int8"}, {d.ext.storage16, "storage_16bit"}, {d.ext.storage8, "storage_8bit"}} {
		if x.ok {
			f = append(f, x.name)
		}
	}
	for _, s := range d.ext.coop {
		kind := "coopmat_nv"
		if s.KHR {
			kind = "coopmat_khr"
		}
		f = append(f, fmt.Sprintf("%s:%dx%dx%d:%s*%s+%s", kind, s.M, s.N, s.K, s.TypeNames[0], s.TypeNames[1], s.TypeNames[2]))
	}
	return f
}

// planDevice is what gpuplan needs to know of the device. On a software device (lavapipe) cached
// attention runs its per-query kernel: llvmpipe needs more than ten minutes to compile naga's
// SPIR-V of the tiled one (attention.wgsl with ROWS; LLVM's coroutine splitting at its barriers), the
// same WGSL whose translation by wgpu runs WebGPU's whole suite in seconds there. GPUs run the
// tiled kernel.
func (d *device) planDevice(plain bool) gpuplan.Device {
	return gpuplan.Device{MaxGroups: d.limits.MaxComputeWorkGroupCount[0], WorkgroupStorage: int(d.limits.MaxComputeSharedMemorySize),
		MaxBinding: int64(d.limits.MaxStorageBufferRange), Subgroups: d.subgroups() && !plain, PerQueryRows: d.info.Type == "cpu"}
}

func typeName(t vk.PhysicalDeviceType) string {
	switch t {
	case vk.PhysicalDeviceTypeDiscreteGpu:
		return "discrete"
	case vk.PhysicalDeviceTypeIntegratedGpu:
		return "integrated"
	case vk.PhysicalDeviceTypeVirtualGpu:
		return "virtual"
	case vk.PhysicalDeviceTypeCpu:
		return "cpu"
	}
	return "other"
}

func vendorName(id uint32) string {
	switch id {
	case 0x10DE:
		return "NVIDIA"
	case 0x1002:
		return "AMD"
	case 0x8086:
		return "Intel"
	case 0x10005:
		return "Mesa"
	case 0x13B5:
		return "ARM"
	case 0x5143:
		return "Qualcomm"
	case 0x106B:
		return "Apple"
	}
	return fmt.Sprintf("0x%04x", id)
}

// vkErr turns a Vulkan result into an error naming what failed.
func vkErr(what string, r vk.Result) error {
	if r == vk.Success {
		return nil
	}
	switch r {
	case vk.ErrorDeviceLost:
		return fmt.Errorf("%w: %s", ErrDeviceLost, what)
	case vk.ErrorOutOfDeviceMemory, vk.ErrorOutOfHostMemory:
		return fmt.Errorf("%w: %s: %v", ErrOutOfMemory, what, vk.Error(r))
	}
	return fmt.Errorf("vulkan: %s: %v (VkResult %d)", what, vk.Error(r), int32(r))
}
