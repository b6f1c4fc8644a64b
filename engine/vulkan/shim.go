package vulkan

// The cgo shim for what github.com/goki/vulkan v1.0.8 lacks. That binding dlopens "libvulkan.so",
// which Debian ships only in libvulkan-dev; the shim loads the runtime's "libvulkan.so.1" itself
// (falling back to "libvulkan.so") and hands its vkGetInstanceProcAddr to the binding. The binding
// wraps only Vulkan 1.0 calls: the shim queries vkGetPhysicalDeviceFeatures2/Properties2 (driver,
// subgroups, f16/int8, 8/16-bit storage) and the cooperative-matrix shapes
// (vkGetPhysicalDeviceCooperativeMatrixPropertiesNV/KHR). Its structs are declared here with the
// layouts of the Vulkan 1.3 headers, so no Vulkan headers are needed to build; the property and
// feature blocks it does not read are over-allocated, never interpreted.

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*lathe_void_fn)(void);
typedef lathe_void_fn (*lathe_gipa_fn)(void*, const char*);

static void* lathe_lib;
static lathe_gipa_fn lathe_gipa;
static char lathe_err[512];

// lathe_vk_open opens the Vulkan loader name and returns its vkGetInstanceProcAddr (NULL with
// lathe_err set when the library or the symbol is missing). The first loader found is kept.
static void* lathe_vk_open(const char* name) {
	void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char* e = dlerror();
		strncpy(lathe_err, e ? e : "dlopen failed", sizeof lathe_err - 1);
		return NULL;
	}
	lathe_gipa_fn f = (lathe_gipa_fn)dlsym(lib, "vkGetInstanceProcAddr");
	if (!f) {
		strncpy(lathe_err, "the library has no vkGetInstanceProcAddr", sizeof lathe_err - 1);
		dlclose(lib);
		return NULL;
	}
	lathe_lib = lib;
	lathe_gipa = f;
	return (void*)f;
}

static const char* lathe_vk_error(void) { return lathe_err; }

typedef struct { uint32_t sType; void* pNext; } lathe_base;
typedef struct { uint32_t sType; void* pNext; uint8_t props[4096]; } lathe_props2;
typedef struct { uint32_t sType; void* pNext; uint32_t features[256]; } lathe_feats2;
typedef struct { uint32_t sType; void* pNext; uint32_t subgroupSize, supportedStages, supportedOperations, quadOperationsInAllStages; } lathe_subgroup;
typedef struct { uint32_t sType; void* pNext; uint32_t driverID; char driverName[256]; char driverInfo[256]; uint8_t conformance[4]; } lathe_driver;
typedef struct { uint32_t sType; void* pNext; uint32_t shaderFloat16, shaderInt8; } lathe_f16i8;
typedef struct { uint32_t sType; void* pNext; uint32_t storageBuffer16BitAccess, uniformAndStorageBuffer16BitAccess, storagePushConstant16, storageInputOutput16; } lathe_storage16;
typedef struct { uint32_t sType; void* pNext; uint32_t storageBuffer8BitAccess, uniformAndStorageBuffer8BitAccess, storagePushConstant8; } lathe_storage8;
typedef struct { uint32_t sType; void* pNext; uint32_t a, b, c; } lathe_bools3;
typedef struct { uint32_t sType; void* pNext; uint32_t M, N, K, A, B, C, D, scope; } lathe_coopnv;
typedef struct { uint32_t sType; void* pNext; uint32_t M, N, K, A, B, C, R, saturating, scope; } lathe_coopkhr;

// lathe_query is what lathe reads of one physical device beyond Vulkan 1.0.
typedef struct {
	uint32_t subgroupSize, subgroupStages, subgroupOps;
	uint32_t driverID;
	char driverName[256];
	char driverInfo[256];
	uint32_t f16, int8, storage16, storage8, ustorage16;
	uint32_t coopFeature;   // cooperativeMatrix (the NV or KHR feature, whichever is listed)
	uint32_t memoryModel;   // vulkanMemoryModel (cooperative-matrix kernels are compiled for it)
	uint32_t nCoop;         // shapes written to coop (at most 32)
	uint32_t coopKHR;       // 1: the shapes are the KHR query's
	uint32_t coop[32][7];   // M, N, K, A, B, C(accumulator), scope
} lathe_query;

typedef void (*lathe_props2_fn)(void*, void*);
typedef int32_t (*lathe_coop_fn)(void*, uint32_t*, void*);

// lathe_vk_query fills q for physical device pd of instance inst (created for Vulkan >= 1.1).
// nv and khr say whether the device lists VK_NV_cooperative_matrix / VK_KHR_cooperative_matrix.
static int lathe_vk_query(void* inst, void* pd, int nv, int khr, lathe_query* q) {
	memset(q, 0, sizeof *q);
	if (!lathe_gipa) return -1;
	lathe_props2_fn props2 = (lathe_props2_fn)lathe_gipa(inst, "vkGetPhysicalDeviceProperties2");
	lathe_props2_fn feats2 = (lathe_props2_fn)lathe_gipa(inst, "vkGetPhysicalDeviceFeatures2");
	if (!props2 || !feats2) return -2;
	lathe_driver drv; memset(&drv, 0, sizeof drv); drv.sType = 1000196000;
	lathe_subgroup sg; memset(&sg, 0, sizeof sg); sg.sType = 1000094000; sg.pNext = &drv;
	lathe_props2* p = calloc(1, sizeof *p); p->sType = 1000059001; p->pNext = &sg;
	props2(pd, p);
	free(p);
	q->subgroupSize = sg.subgroupSize; q->subgroupStages = sg.supportedStages; q->subgroupOps = sg.supportedOperations;
	q->driverID = drv.driverID;
	memcpy(q->driverName, drv.driverName, 256); q->driverName[255] = 0;
	memcpy(q->driverInfo, drv.driverInfo, 256); q->driverInfo[255] = 0;
	lathe_storage8 s8; memset(&s8, 0, sizeof s8); s8.sType = 1000177000;
	lathe_storage16 s16; memset(&s16, 0, sizeof s16); s16.sType = 1000083000; s16.pNext = &s8;
	// VkPhysicalDeviceVulkanMemoryModelFeatures, then the NV (1000249000) or KHR (1000506000)
	// cooperative-matrix features when the device lists the extension.
	lathe_bools3 vmm; memset(&vmm, 0, sizeof vmm); vmm.sType = 1000211000; vmm.pNext = &s8;
	lathe_bools3 cf; memset(&cf, 0, sizeof cf); cf.sType = khr ? 1000506000 : 1000249000; cf.pNext = &vmm;
	s16.pNext = (khr || nv) ? (void*)&cf : (void*)&vmm;
	lathe_f16i8 fi; memset(&fi, 0, sizeof fi); fi.sType = 1000082000; fi.pNext = &s16;
	lathe_feats2* f = calloc(1, sizeof *f); f->sType = 1000059000; f->pNext = &fi;
	feats2(pd, f);
	free(f);
	q->f16 = fi.shaderFloat16; q->int8 = fi.shaderInt8;
	q->storage16 = s16.storageBuffer16BitAccess; q->storage8 = s8.storageBuffer8BitAccess;
	q->coopFeature = (khr || nv) ? cf.a : 0; q->memoryModel = vmm.a;
	q->ustorage16 = s16.uniformAndStorageBuffer16BitAccess;
	if (khr || nv) {
		const char* name = khr ? "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR" : "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV";
		lathe_coop_fn coop = (lathe_coop_fn)lathe_gipa(inst, name);
		uint32_t n = 0;
		if (coop && coop(pd, &n, NULL) == 0 && n > 0) {
			if (n > 32) n = 32;
			if (khr) {
				lathe_coopkhr* c = calloc(n, sizeof *c);
				for (uint32_t i = 0; i < n; i++) c[i].sType = 1000506001;
				if (coop(pd, &n, c) >= 0) {
					for (uint32_t i = 0; i < n; i++) {
						uint32_t row[7] = {c[i].M, c[i].N, c[i].K, c[i].A, c[i].B, c[i].C, c[i].scope};
						memcpy(q->coop[i], row, sizeof row);
					}
					q->nCoop = n; q->coopKHR = 1;
				}
				free(c);
			} else {
				lathe_coopnv* c = calloc(n, sizeof *c);
				for (uint32_t i = 0; i < n; i++) c[i].sType = 1000249001;
				if (coop(pd, &n, c) >= 0) {
					for (uint32_t i = 0; i < n; i++) {
						uint32_t row[7] = {c[i].M, c[i].N, c[i].K, c[i].A, c[i].B, c[i].C, c[i].scope};
						memcpy(q->coop[i], row, sizeof row);
					}
					q->nCoop = n;
				}
				free(c);
			}
		}
	}
	return 0;
}

// lathe_device_features allocates the pNext chain of VkDeviceCreateInfo that enables what the GLSL
// tier's kernels use: shaderFloat16 and storageBuffer16BitAccess (f16), and vulkanMemoryModel with
// the NV or KHR cooperativeMatrix feature (coop: 1 NV, 2 KHR). *head is the chain's first struct
// (NULL when nothing is enabled); free the allocation after vkCreateDevice.
typedef struct { lathe_f16i8 fi; lathe_storage16 s16; lathe_bools3 vmm; lathe_bools3 coop; } lathe_chain;
static void* lathe_device_features(int f16, int storage16, int ustorage16, int coop, void** head) {
	lathe_chain* c = calloc(1, sizeof *c);
	*head = NULL;
	if (coop) {
		c->coop.sType = coop == 2 ? 1000506000 : 1000249000; c->coop.a = 1; c->coop.pNext = *head; *head = &c->coop;
		c->vmm.sType = 1000211000; c->vmm.a = 1; c->vmm.pNext = *head; *head = &c->vmm;
	}
	if (f16) {
		c->s16.sType = 1000083000; c->s16.storageBuffer16BitAccess = storage16; c->s16.uniformAndStorageBuffer16BitAccess = ustorage16; c->s16.pNext = *head; *head = &c->s16;
		c->fi.sType = 1000082000; c->fi.shaderFloat16 = 1; c->fi.pNext = *head; *head = &c->fi;
	}
	return c;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// ErrNoVulkan is returned when the Vulkan loader cannot be opened or initialised.
var ErrNoVulkan = errors.New("vulkan: no Vulkan loader (install libvulkan1 and a driver, e.g. mesa-vulkan-drivers for lavapipe)")

var (
	loadOnce sync.Once
	loadErr  error
)

// gipa is the loader's vkGetInstanceProcAddr, once load has succeeded.
var gipa unsafe.Pointer

// loaderNames are the Vulkan loader's names, tried in order: the runtime's soname (Debian's
// libvulkan1), then the development link that goki/vulkan itself would dlopen.
var loaderNames = []string{"libvulkan.so.1", "libvulkan.so"}

// load opens the Vulkan loader once and initialises the binding with its vkGetInstanceProcAddr.
func load() error {
	loadOnce.Do(func() {
		p, err := openLoader(loaderNames)
		if err != nil {
			loadErr = err
			return
		}
		gipa = p
		vk.SetGetInstanceProcAddr(p)
		if err := vk.Init(); err != nil {
			loadErr = fmt.Errorf("%w: %v", ErrNoVulkan, err)
		}
	})
	return loadErr
}

// openLoader dlopens the first of names that is a Vulkan loader and returns its
// vkGetInstanceProcAddr; none is ErrNoVulkan with the last dlopen error.
func openLoader(names []string) (unsafe.Pointer, error) {
	for _, n := range names {
		cs := C.CString(n)
		p := C.lathe_vk_open(cs)
		C.free(unsafe.Pointer(cs))
		if p != nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoVulkan, C.GoString(C.lathe_vk_error()))
}

// coopShape is one cooperative-matrix shape a device offers: M×N×K with the component types of
// A, B and the accumulator (VkComponentTypeKHR/NV values), and its scope.
type coopShape struct {
	M, N, K   int
	A, B, C   int
	Scope     int
	KHR       bool
	TypeNames [3]string
}

// extended is what lathe reads of a device beyond Vulkan 1.0 (the shim's query).
type extended struct {
	subgroupSize   int
	subgroupStages uint32
	subgroupOps    uint32
	driverName     string
	driverInfo     string
	f16, int8      bool
	storage16      bool
	ustorage16     bool // uniformAndStorageBuffer16BitAccess
	storage8       bool
	coopFeature    bool // cooperativeMatrix may be enabled
	memoryModel    bool // vulkanMemoryModel may be enabled
	coop           []coopShape
}

// componentName names a VkComponentTypeKHR value.
func componentName(t int) string {
	names := map[int]string{0: "f16", 1: "f32", 2: "f64", 3: "i8", 4: "i16", 5: "i32", 6: "i64", 7: "u8", 8: "u16", 9: "u32", 10: "u64", 1000141000: "bf16"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprint(t)
}

// query reads the extended properties of pd (an instance of Vulkan >= 1.1).
func query(inst vk.Instance, pd vk.PhysicalDevice, nv, khr bool) (extended, error) {
	var q C.lathe_query
	b := func(v bool) C.int {
		if v {
			return 1
		}
		return 0
	}
	if rc := C.lathe_vk_query(unsafe.Pointer(inst), unsafe.Pointer(pd), b(nv), b(khr), &q); rc != 0 {
		return extended{}, fmt.Errorf("vulkan: vkGetPhysicalDeviceProperties2 is missing (%d)", int(rc))
	}
	e := extended{subgroupSize: int(q.subgroupSize), subgroupStages: uint32(q.subgroupStages), subgroupOps: uint32(q.subgroupOps),
		driverName: C.GoString(&q.driverName[0]), driverInfo: C.GoString(&q.driverInfo[0]),
		f16: q.f16 != 0, int8: q.int8 != 0, storage16: q.storage16 != 0, storage8: q.storage8 != 0, ustorage16: q.ustorage16 != 0,
		coopFeature: q.coopFeature != 0, memoryModel: q.memoryModel != 0}
	for i := 0; i < int(q.nCoop); i++ {
		r := q.coop[i]
		s := coopShape{M: int(r[0]), N: int(r[1]), K: int(r[2]), A: int(r[3]), B: int(r[4]), C: int(r[5]), Scope: int(r[6]), KHR: q.coopKHR != 0}
		s.TypeNames = [3]string{componentName(s.A), componentName(s.B), componentName(s.C)}
		e.coop = append(e.coop, s)
	}
	return e, nil
}

// deviceFeatures is the VkDeviceCreateInfo pNext chain enabling f16 (shaderFloat16 and the 16-bit
// storage accesses the device lists) and, with coop 1 (NV) or 2 (KHR), cooperative matrices and the Vulkan memory model; nil
// when nothing is enabled. free releases it after vkCreateDevice.
func deviceFeatures(f16, storage16, ustorage16 bool, coop int) (next unsafe.Pointer, free func()) {
	b := func(v bool) C.int {
		if v {
			return 1
		}
		return 0
	}
	var head unsafe.Pointer
	c := C.lathe_device_features(b(f16), b(storage16), b(ustorage16), C.int(coop), &head)
	return head, func() { C.free(c) }
}
