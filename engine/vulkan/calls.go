package vulkan

// The Vulkan calls that take arrays of structs, made through this shim instead of
// github.com/goki/vulkan. That binding (c-for-go output) copies such an array into C memory that a
// finalizer frees once the Go variable holding it is unreachable, which it is from the moment the
// call starts: a garbage collection that ends during the call frees the create infos, submit infos,
// descriptor writes or barriers the driver is still reading. lavapipe compiles a pipeline inside
// vkCreateComputePipelines for tens of milliseconds and then follows a freed pNext (a SIGSEGV seen
// in about one test run in ten). Here the structs live on the C stack for the call's duration.
// Handles are pointers, as on every 64-bit platform lathe builds for.

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*lathe_fn)(void);
typedef lathe_fn (*lathe_proc_fn)(void*, const char*);

typedef struct { uint32_t constantID, offset; size_t size; } lathe_spec_entry;
typedef struct { uint32_t mapEntryCount; const lathe_spec_entry* pMapEntries; size_t dataSize; const void* pData; } lathe_spec_info;
typedef struct { uint32_t sType; const void* pNext; uint32_t flags, stage; void* module; const char* pName; const lathe_spec_info* pSpecializationInfo; } lathe_stage_info;
typedef struct { uint32_t sType; const void* pNext; uint32_t flags; lathe_stage_info stage; void* layout; void* basePipelineHandle; int32_t basePipelineIndex; } lathe_compute_info;
typedef struct { uint32_t sType; const void* pNext; uint32_t waitSemaphoreCount; void* const* pWaitSemaphores; const uint32_t* pWaitDstStageMask; uint32_t commandBufferCount; void* const* pCommandBuffers; uint32_t signalSemaphoreCount; void* const* pSignalSemaphores; } lathe_submit_info;
typedef struct { void* buffer; uint64_t offset, range; } lathe_buffer_info;
typedef struct { uint32_t sType; const void* pNext; void* dstSet; uint32_t dstBinding, dstArrayElement, descriptorCount, descriptorType; const void* pImageInfo; const lathe_buffer_info* pBufferInfo; const void* pTexelBufferView; } lathe_write_set;
typedef struct { uint32_t sType; const void* pNext; uint32_t srcAccessMask, dstAccessMask; } lathe_memory_barrier;
typedef struct { uint64_t srcOffset, dstOffset, size; } lathe_buffer_copy;

typedef int32_t (*lathe_create_compute_fn)(void*, void*, uint32_t, const lathe_compute_info*, const void*, void**);
typedef int32_t (*lathe_submit_fn)(void*, uint32_t, const lathe_submit_info*, void*);
typedef void (*lathe_update_sets_fn)(void*, uint32_t, const lathe_write_set*, uint32_t, const void*);
typedef void (*lathe_barrier_fn)(void*, uint32_t, uint32_t, uint32_t, uint32_t, const lathe_memory_barrier*, uint32_t, const void*, uint32_t, const void*);
typedef void (*lathe_copy_fn)(void*, void*, void*, uint32_t, const lathe_buffer_copy*);

// lathe_calls is one device's entry points for the calls below.
typedef struct {
	lathe_create_compute_fn createCompute;
	lathe_submit_fn submit;
	lathe_update_sets_fn updateSets;
	lathe_barrier_fn barrier;
	lathe_copy_fn copy;
} lathe_calls;

// lathe_calls_load resolves the entry points of device dev through vkGetDeviceProcAddr (itself
// found through gipa, the loader's vkGetInstanceProcAddr, for instance inst). 0 on success.
static int lathe_calls_load(void* gipa, void* inst, void* dev, lathe_calls* c) {
	lathe_proc_fn gdpa = (lathe_proc_fn)((lathe_proc_fn)gipa)(inst, "vkGetDeviceProcAddr");
	if (!gdpa) return 1;
	c->createCompute = (lathe_create_compute_fn)gdpa(dev, "vkCreateComputePipelines");
	c->submit = (lathe_submit_fn)gdpa(dev, "vkQueueSubmit");
	c->updateSets = (lathe_update_sets_fn)gdpa(dev, "vkUpdateDescriptorSets");
	c->barrier = (lathe_barrier_fn)gdpa(dev, "vkCmdPipelineBarrier");
	c->copy = (lathe_copy_fn)gdpa(dev, "vkCmdCopyBuffer");
	return !(c->createCompute && c->submit && c->updateSets && c->barrier && c->copy);
}

// lathe_create_compute creates the compute pipeline of module's "main" with layout; nSpec 32-bit
// specialisation constants take their ids from ids and their values from data.
static int32_t lathe_create_compute(const lathe_calls* c, void* dev, void* module, void* layout,
		uint32_t nSpec, const uint32_t* ids, const uint32_t* data, void** pipe) {
	lathe_spec_entry entries[64];
	lathe_spec_info spec;
	if (nSpec > 64) return -13; // VK_ERROR_UNKNOWN: more constants than any kernel declares
	for (uint32_t i = 0; i < nSpec; i++) {
		entries[i].constantID = ids[i]; entries[i].offset = 4 * i; entries[i].size = 4;
	}
	spec.mapEntryCount = nSpec; spec.pMapEntries = entries; spec.dataSize = 4 * (size_t)nSpec; spec.pData = data;
	lathe_compute_info info;
	memset(&info, 0, sizeof info);
	info.sType = 29; // VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
	info.stage.sType = 18; // VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
	info.stage.stage = 0x20; // VK_SHADER_STAGE_COMPUTE_BIT
	info.stage.module = module;
	info.stage.pName = "main";
	info.stage.pSpecializationInfo = nSpec ? &spec : NULL;
	info.layout = layout;
	info.basePipelineIndex = -1;
	return c->createCompute(dev, NULL, 1, &info, NULL, pipe);
}

// lathe_submit queues command buffer cb, signalling fence when it completes.
static int32_t lathe_submit(const lathe_calls* c, void* queue, void* cb, void* fence) {
	lathe_submit_info s;
	memset(&s, 0, sizeof s);
	s.sType = 4; // VK_STRUCTURE_TYPE_SUBMIT_INFO
	s.commandBufferCount = 1;
	s.pCommandBuffers = &cb;
	return c->submit(queue, 1, &s, fence);
}

// lathe_write_buffers points bindings 0..n-1 of set at bufs[i] (offs[i], sizes[i]); types[i] is
// each binding's VkDescriptorType. n is at most 64.
static void lathe_write_buffers(const lathe_calls* c, void* dev, void* set, uint32_t n,
		void* const* bufs, const uint64_t* offs, const uint64_t* sizes, const uint32_t* types) {
	lathe_buffer_info infos[64];
	lathe_write_set writes[64];
	if (n > 64) n = 64;
	memset(writes, 0, n * sizeof writes[0]);
	for (uint32_t i = 0; i < n; i++) {
		infos[i].buffer = bufs[i]; infos[i].offset = offs[i]; infos[i].range = sizes[i];
		writes[i].sType = 35; // VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
		writes[i].dstSet = set;
		writes[i].dstBinding = i;
		writes[i].descriptorCount = 1;
		writes[i].descriptorType = types[i];
		writes[i].pBufferInfo = &infos[i];
	}
	c->updateSets(dev, n, writes, 0, NULL);
}

// lathe_barrier records a global memory barrier.
static void lathe_barrier(const lathe_calls* c, void* cb, uint32_t srcStages, uint32_t dstStages, uint32_t srcAccess, uint32_t dstAccess) {
	lathe_memory_barrier m;
	memset(&m, 0, sizeof m);
	m.sType = 46; // VK_STRUCTURE_TYPE_MEMORY_BARRIER
	m.srcAccessMask = srcAccess; m.dstAccessMask = dstAccess;
	c->barrier(cb, srcStages, dstStages, 0, 1, &m, 0, NULL, 0, NULL);
}

// lathe_copy records a copy of size bytes from src at srcOff to dst at dstOff.
static void lathe_copy(const lathe_calls* c, void* cb, void* src, void* dst, uint64_t srcOff, uint64_t dstOff, uint64_t size) {
	lathe_buffer_copy r = { srcOff, dstOff, size };
	c->copy(cb, src, dst, 1, &r);
}

typedef struct { uint32_t queueFlags, queueCount, timestampValidBits, granularity[3]; } lathe_queue_family;
typedef struct { char extensionName[256]; uint32_t specVersion; } lathe_extension;
typedef void (*lathe_families_fn)(void*, uint32_t*, lathe_queue_family*);
typedef int32_t (*lathe_extensions_fn)(void*, const char*, uint32_t*, lathe_extension*);

// lathe_queue_families writes the flags and queue counts of physical device pd's first *n queue
// families (at most 64) and sets *n to how many it wrote.
static void lathe_queue_families(void* gipa, void* inst, void* pd, uint32_t* flags, uint32_t* counts, uint32_t* n) {
	lathe_families_fn f = (lathe_families_fn)((lathe_proc_fn)gipa)(inst, "vkGetPhysicalDeviceQueueFamilyProperties");
	lathe_queue_family fams[64];
	uint32_t m = 64;
	if (*n < m) m = *n;
	*n = 0;
	if (!f) return;
	f(pd, &m, fams);
	for (uint32_t i = 0; i < m; i++) { flags[i] = fams[i].queueFlags; counts[i] = fams[i].queueCount; }
	*n = m;
}

// lathe_device_extensions returns the number of extensions physical device pd lists, in a
// malloc'd array at *out (the caller frees it); a negative VkResult on failure.
static int32_t lathe_device_extensions(void* gipa, void* inst, void* pd, lathe_extension** out) {
	lathe_extensions_fn f = (lathe_extensions_fn)((lathe_proc_fn)gipa)(inst, "vkEnumerateDeviceExtensionProperties");
	*out = NULL;
	if (!f) return -3; // VK_ERROR_INITIALIZATION_FAILED
	for (;;) {
		uint32_t n = 0;
		int32_t r = f(pd, NULL, &n, NULL);
		if (r != 0) return r < 0 ? r : -3;
		lathe_extension* e = calloc(n ? n : 1, sizeof *e);
		if (!e) return -1; // VK_ERROR_OUT_OF_HOST_MEMORY
		r = f(pd, NULL, &n, e);
		if (r == 0) { *out = e; return (int32_t)n; }
		free(e);
		if (r != 5) return r < 0 ? r : -3; // VK_INCOMPLETE: the list grew; ask again
	}
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// maxBindings is the most descriptors lathe_write_buffers writes to one set.
const maxBindings = 64

// calls holds one device's entry points for the calls made through this file's shim.
type calls struct {
	c   *C.lathe_calls // C memory: the struct holds C function pointers
	dev vk.Device
}

// newCalls resolves dev's entry points.
func newCalls(inst vk.Instance, dev vk.Device) (*calls, error) {
	c := (*C.lathe_calls)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lathe_calls{}))))
	if C.lathe_calls_load(gipa, unsafe.Pointer(inst), unsafe.Pointer(dev), c) != 0 {
		C.free(unsafe.Pointer(c))
		return nil, fmt.Errorf("vulkan: the device lacks a core 1.0 entry point (vkCreateComputePipelines, vkQueueSubmit, vkUpdateDescriptorSets, vkCmdPipelineBarrier or vkCmdCopyBuffer)")
	}
	return &calls{c: c, dev: dev}, nil
}

// free releases the entry-point table.
func (k *calls) free() {
	if k != nil && k.c != nil {
		C.free(unsafe.Pointer(k.c))
		k.c = nil
	}
}

// createComputePipeline creates the pipeline of mod's "main" with layout, its specialisation
// constants ids[i] set to the 32-bit words of data.
func (k *calls) createComputePipeline(mod vk.ShaderModule, layout vk.PipelineLayout, ids, data []uint32) (vk.Pipeline, vk.Result) {
	if len(ids) != len(data) {
		return nil, vk.ErrorInitializationFailed
	}
	// C memory for the output: a pointer-sized handle that cgo would not let Go memory receive.
	out := (*unsafe.Pointer)(C.calloc(1, C.size_t(unsafe.Sizeof(unsafe.Pointer(nil)))))
	defer C.free(unsafe.Pointer(out))
	var pid, pdata *C.uint32_t
	if len(ids) > 0 {
		pid, pdata = (*C.uint32_t)(&ids[0]), (*C.uint32_t)(&data[0])
	}
	r := C.lathe_create_compute(k.c, unsafe.Pointer(k.dev), unsafe.Pointer(mod), unsafe.Pointer(layout), C.uint32_t(len(ids)), pid, pdata, out)
	return vk.Pipeline(*out), vk.Result(r)
}

// submit queues cb on queue; fence is signalled when it completes.
func (k *calls) submit(queue vk.Queue, cb vk.CommandBuffer, fence vk.Fence) vk.Result {
	return vk.Result(C.lathe_submit(k.c, unsafe.Pointer(queue), unsafe.Pointer(cb), unsafe.Pointer(fence)))
}

// bufferBinding is one descriptor of a set: a range of a buffer, storage or uniform.
type bufferBinding struct {
	buf     vk.Buffer
	off     uint64
	size    uint64
	uniform bool
}

// writeBuffers points bindings 0..len(bs)-1 of set at bs.
func (k *calls) writeBuffers(set vk.DescriptorSet, bs []bufferBinding) error {
	n := len(bs)
	if n > maxBindings {
		return fmt.Errorf("vulkan: %d bindings in one descriptor set, at most %d", n, maxBindings)
	}
	if n == 0 {
		return nil
	}
	// C memory: an array of buffer handles is an array of pointers, which cgo lets no Go memory hold.
	bufs := (*[maxBindings]unsafe.Pointer)(C.calloc(maxBindings, C.size_t(unsafe.Sizeof(unsafe.Pointer(nil)))))
	defer C.free(unsafe.Pointer(bufs))
	var offs, sizes [maxBindings]uint64
	var types [maxBindings]uint32
	for i, b := range bs {
		bufs[i], offs[i], sizes[i] = unsafe.Pointer(b.buf), b.off, b.size
		types[i] = uint32(vk.DescriptorTypeStorageBuffer)
		if b.uniform {
			types[i] = uint32(vk.DescriptorTypeUniformBuffer)
		}
	}
	C.lathe_write_buffers(k.c, unsafe.Pointer(k.dev), unsafe.Pointer(set), C.uint32_t(n), &bufs[0],
		(*C.uint64_t)(&offs[0]), (*C.uint64_t)(&sizes[0]), (*C.uint32_t)(&types[0]))
	return nil
}

// barrier records a global memory barrier between stages.
func (k *calls) barrier(cb vk.CommandBuffer, src, dst vk.PipelineStageFlagBits, srcAccess, dstAccess vk.AccessFlagBits) {
	C.lathe_barrier(k.c, unsafe.Pointer(cb), C.uint32_t(src), C.uint32_t(dst), C.uint32_t(srcAccess), C.uint32_t(dstAccess))
}

// copy records a copy of size bytes from src at srcOff to dst at dstOff.
func (k *calls) copy(cb vk.CommandBuffer, src, dst vk.Buffer, srcOff, dstOff, size uint64) {
	C.lathe_copy(k.c, unsafe.Pointer(cb), unsafe.Pointer(src), unsafe.Pointer(dst), C.uint64_t(srcOff), C.uint64_t(dstOff), C.uint64_t(size))
}

// queueFamilies returns the flags and queue counts of pd's queue families.
func queueFamilies(inst vk.Instance, pd vk.PhysicalDevice) (flags, counts []uint32) {
	var f, c [64]uint32
	n := C.uint32_t(64)
	C.lathe_queue_families(gipa, unsafe.Pointer(inst), unsafe.Pointer(pd), (*C.uint32_t)(&f[0]), (*C.uint32_t)(&c[0]), &n)
	return f[:n], c[:n]
}

// deviceExtensions returns the names of the extensions pd lists.
func deviceExtensions(inst vk.Instance, pd vk.PhysicalDevice) (map[string]bool, error) {
	var e *C.lathe_extension
	n := C.lathe_device_extensions(gipa, unsafe.Pointer(inst), unsafe.Pointer(pd), &e)
	if n < 0 {
		return nil, vkErr("enumerate device extensions", vk.Result(n))
	}
	defer C.free(unsafe.Pointer(e))
	out := make(map[string]bool, int(n))
	for _, x := range unsafe.Slice(e, int(n)) {
		out[C.GoString(&x.extensionName[0])] = true
	}
	return out, nil
}
