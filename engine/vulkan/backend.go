package vulkan

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	vk "github.com/goki/vulkan"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/gpuplan"
)

// Errors a caller may want to tell apart.
var (
	ErrDeviceLost  = errors.New("vulkan: device lost")
	ErrOutOfMemory = errors.New("vulkan: out of memory")
	ErrClosed      = errors.New("vulkan: backend closed")
	ErrTimeout     = errors.New("vulkan: device did not finish in time")
	ErrFreed       = errors.New("vulkan: buffer used after Free")
	ErrTooLarge    = errors.New("vulkan: buffer too large for the device")
	// ErrIndex is reported by the first read after a run in which a kernel met an index out of
	// range (a KV-cache row, a token id, a target, a pool slot), as on WebGPU.
	ErrIndex = errors.New("vulkan: a launch since the last read met an index out of range")
)

// Backend runs lathe's kernels on one Vulkan device through one compute queue. A mutex
// serialises its methods.
type Backend struct {
	mu      sync.Mutex
	inst    vk.Instance
	pd      vk.PhysicalDevice
	dev     vk.Device
	queue   vk.Queue
	calls   *calls // the calls that take arrays of structs (calls.go)
	family  uint32
	d       *device
	caps    engine.Caps
	plain   bool // run the base kernel set whatever the caps (the suite runs both)
	tier    glslTier
	noGLSL  bool  // run naga's translation of every WGSL kernel (UseGLSL(false))
	refused error // why the driver refused the tier's features, if it did
	f16     bool  // the f16-arithmetic variants (SetF16Arithmetic)
	timeout time.Duration
	closed  bool
	lost    bool

	mem      memory
	pipes    map[string]*pipeline
	cmdPool  vk.CommandPool
	fences   []vk.Fence // free fences
	inflight []*submission
	serial   uint64 // submissions made
	done     uint64 // submissions known complete (in order)
	deferred []deferredFree

	// compiled, when set (tests), sees every kernel's SPIR-V as its pipeline is created.
	compiled func(name string, code []uint32)

	staging *buffer // host-visible, for Write and Read
	fault   *buffer // the device-side fault flag (one u32)
}

// submission is a queued command buffer and what to release once its fence signals.
type submission struct {
	serial  uint64
	fence   vk.Fence
	cleanup func()
}

// deferredFree is a release to make once the submissions up to serial have finished.
type deferredFree struct {
	serial uint64
	fn     func()
}

// Open opens the physical device with the given index (as Provider.Devices lists them).
func Open(index int) (*Backend, error) {
	inst, err := newInstance()
	if err != nil {
		return nil, err
	}
	pds, err := physicalDevices(inst)
	if err != nil {
		vk.DestroyInstance(inst, nil)
		return nil, err
	}
	if index < 0 || index >= len(pds) {
		vk.DestroyInstance(inst, nil)
		return nil, fmt.Errorf("vulkan: no device %d (found %d)", index, len(pds))
	}
	d, err := describe(inst, pds[index], index)
	if err != nil {
		vk.DestroyInstance(inst, nil)
		return nil, err
	}
	b := &Backend{inst: inst, pd: pds[index], d: d, pipes: map[string]*pipeline{}, timeout: timeoutFromEnv(d.info.Type == "cpu")}
	if err := b.init(); err != nil {
		b.destroy()
		return nil, fmt.Errorf("vulkan: open %s: %w", d.info.Name, err)
	}
	return b, nil
}

// OpenBest opens the device --device vulkan picks: discrete, then integrated, then the rest.
func OpenBest() (*Backend, error) {
	devs, err := Provider{}.Devices()
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("%w: the loader lists no device", ErrNoVulkan)
	}
	best := 0
	for i, d := range devs {
		if engine.Rank(d) < engine.Rank(devs[best]) {
			best = i
		}
	}
	return Open(devs[best].Index)
}

func (b *Backend) init() error {
	flags, counts := queueFamilies(b.inst, b.pd)
	found := false
	for i, f := range flags {
		if f&uint32(vk.QueueComputeBit) != 0 && counts[i] > 0 {
			b.family, found = uint32(i), true
			break
		}
	}
	if !found {
		return fmt.Errorf("no compute queue")
	}
	dev, err := b.createDevice()
	if err != nil {
		return err
	}
	b.dev = dev
	if b.calls, err = newCalls(b.inst, dev); err != nil {
		return err
	}
	var q vk.Queue
	vk.GetDeviceQueue(dev, b.family, 0, &q)
	b.queue = q
	var pool vk.CommandPool
	if err := vkErr("create command pool", vk.CreateCommandPool(dev, &vk.CommandPoolCreateInfo{SType: vk.StructureTypeCommandPoolCreateInfo,
		Flags: vk.CommandPoolCreateFlags(vk.CommandPoolCreateResetCommandBufferBit), QueueFamilyIndex: b.family}, nil, &pool)); err != nil {
		return err
	}
	b.cmdPool = pool
	if err := b.mem.init(b); err != nil {
		return err
	}
	b.caps = b.d.caps()
	b.caps.Tiles = b.planDevice().Tiles()
	if b.fault, err = b.alloc(16, false); err != nil {
		return fmt.Errorf("fault flag: %w", err)
	}
	if err := b.runCmd(func(cb vk.CommandBuffer) { vk.CmdFillBuffer(cb, b.fault.buf, 0, 16, 0) }); err != nil {
		return fmt.Errorf("fault flag: %w", err)
	}
	return nil
}

// createDevice creates the logical device with one compute queue and what the GLSL tier's kernels
// need enabled: f16 (VK_KHR_shader_float16_int8, 16-bit storage) and cooperative matrices with the
// Vulkan memory model, where the device offers them (glslTier). A driver that refuses those gets a
// plain device, and the tier runs without them.
func (b *Backend) createDevice() (vk.Device, error) {
	qci := []vk.DeviceQueueCreateInfo{{SType: vk.StructureTypeDeviceQueueCreateInfo, QueueFamilyIndex: b.family, QueueCount: 1, PQueuePriorities: []float32{1}}}
	t := b.d.glslTier()
	var exts []string
	if t.f16 {
		exts = append(exts, "VK_KHR_shader_float16_int8", "VK_KHR_16bit_storage")
	}
	coop := 0
	switch t.coop {
	case "nv":
		coop = 1
		exts = append(exts, "VK_KHR_vulkan_memory_model", "VK_NV_cooperative_matrix")
	case "khr":
		coop = 2
		exts = append(exts, "VK_KHR_vulkan_memory_model", "VK_KHR_cooperative_matrix")
	}
	var keep []string
	for _, e := range exts {
		if b.d.exts[e] {
			keep = append(keep, e+"\x00")
		}
	}
	// The f16 variants of the WGSL kernels (SetF16Arithmetic) need shaderFloat16 too.
	next, free := deviceFeatures(t.f16 || b.d.ext.f16, b.d.ext.storage16, b.d.ext.ustorage16, coop)
	defer free()
	var dev vk.Device
	err := vkErr("create device", vk.CreateDevice(b.pd, &vk.DeviceCreateInfo{SType: vk.StructureTypeDeviceCreateInfo, PNext: next,
		QueueCreateInfoCount: 1, PQueueCreateInfos: qci, EnabledExtensionCount: uint32(len(keep)), PpEnabledExtensionNames: keep}, nil, &dev))
	if err == nil {
		b.tier = t
		return dev, nil
	}
	if next == nil {
		return nil, err
	}
	first := err // kept in b.refused: the tier's f16 and coopmat kernels are off
	if err := vkErr("create device", vk.CreateDevice(b.pd, &vk.DeviceCreateInfo{SType: vk.StructureTypeDeviceCreateInfo,
		QueueCreateInfoCount: 1, PQueueCreateInfos: qci}, nil, &dev)); err != nil {
		return nil, err
	}
	t.f16, t.coop = false, ""
	b.d.ext.f16 = false // no shaderFloat16: no f16 variant either
	b.tier, b.refused = t, first
	return dev, nil
}

// UseGLSL turns the GLSL tier on (the default) or off: off, every kernel is naga's translation of
// its WGSL, as on WebGPU (benchmarks compare the two on the same device).
func (b *Backend) UseGLSL(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.noGLSL = !on
}

// glslOn reports whether planned commands may run on the GLSL tier.
func (b *Backend) glslOn() bool { return !b.plain && !b.noGLSL }

// timeoutFromEnv reads LATHE_VULKAN_TIMEOUT (a Go duration). By default a GPU has two minutes; a
// software device (lavapipe) fifteen: llvmpipe compiles a kernel when it first runs, which for the
// large attention kernels takes minutes on a loaded 2-core machine (Mesa's shader cache keeps them).
func timeoutFromEnv(software bool) time.Duration {
	if s := os.Getenv("LATHE_VULKAN_TIMEOUT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			return d
		}
	}
	if software {
		return 15 * time.Minute
	}
	return 2 * time.Minute
}

func (b *Backend) planDevice() gpuplan.Device {
	d := b.d.planDevice(b.plain)
	// On a software device (lavapipe) llvmpipe compiles naga's f16 SPIR-V of the matmul for minutes
	// a module (as it does the tiled attention, see device.planDevice), so the f16 tiles are for
	// GPUs; there the f32 kernels run whatever SetF16Arithmetic asked.
	d.F16 = b.f16 && b.d.info.Type != "cpu"
	return d
}

// SetF16Arithmetic selects the f16-arithmetic kernel variants for the programs prepared after it
// (engine.F16Arithmetic); the device must have shaderFloat16 (enabled at Open where it does).
func (b *Backend) SetF16Arithmetic(on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on && !b.caps.ShaderF16 {
		return fmt.Errorf("vulkan: %s has no shaderFloat16 for the f16 kernels", b.d.info.Name)
	}
	b.f16 = on
	return nil
}

// Device describes the physical device.
func (b *Backend) Device() engine.DeviceInfo { return b.d.info }

// Caps reports what the device offers and the tiles the kernels use (the GLSL GEMM's where the
// GLSL tier is on).
func (b *Backend) Caps() engine.Caps {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.caps
	if b.glslOn() {
		tl := b.tier.gemmTiles()
		c.Tiles.MatMul = [3]int{tl[0], tl[1], tl[2]}
	}
	return c
}

// Supports reports whether a kernel exists for op with these operands (gpuplan.Supports).
func (b *Backend) Supports(op engine.Op, in []engine.Meta) error {
	if err := gpuplan.Supports(b.planDevice(), op, in); err != nil {
		return fmt.Errorf("vulkan: %w", err)
	}
	return nil
}

func (b *Backend) check() error {
	if b.closed {
		return ErrClosed
	}
	if b.lost {
		return ErrDeviceLost
	}
	return nil
}

// buffer is one VkBuffer bound to a range of a memory block.
type buffer struct {
	b     *Backend
	buf   vk.Buffer
	block *block
	off   int64 // offset in the block
	span  int64 // bytes taken from the block
	size  int64 // usable bytes (the request rounded up to 4)
	ptr   unsafe.Pointer
	freed bool
}

// Bytes is the usable size: the request rounded up to whole 4-byte words.
func (x *buffer) Bytes() int64 { return x.size }

// Alloc returns a device buffer of at least n bytes; its contents are unspecified.
func (b *Backend) Alloc(n int64) (engine.Buffer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("vulkan: alloc %d bytes", n)
	}
	b.collect()
	return b.alloc(n, false)
}

// Free gives the buffer back; its memory is reused once the work submitted before it finished.
func (b *Backend) Free(x engine.Buffer) {
	buf, ok := x.(*buffer)
	if !ok || buf == nil || buf.b != b {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(buf)
}

// release frees buf after the submissions made so far.
func (b *Backend) release(buf *buffer) {
	if buf.freed {
		return
	}
	buf.freed = true
	if b.closed {
		return
	}
	b.later(func() { b.freeNow(buf) })
}

// later runs fn once every submission made so far has finished.
func (b *Backend) later(fn func()) {
	b.deferred = append(b.deferred, deferredFree{serial: b.serial, fn: fn})
	b.collect()
}

func (b *Backend) own(x engine.Buffer, what string) (*buffer, error) {
	buf, ok := x.(*buffer)
	if !ok || buf == nil {
		return nil, fmt.Errorf("vulkan: %s: buffer %T is not a vulkan buffer", what, x)
	}
	if buf.b != b {
		return nil, fmt.Errorf("vulkan: %s: buffer belongs to another device", what)
	}
	if buf.freed {
		return nil, fmt.Errorf("%s: %w", what, ErrFreed)
	}
	return buf, nil
}

// Write copies src into the buffer at byte offset off, through the staging buffer, after the
// work submitted before it.
func (b *Backend) Write(dst engine.Buffer, off int64, src []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	buf, err := b.own(dst, "write")
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(src)) > buf.size {
		return fmt.Errorf("vulkan: write %d bytes at %d into a %d-byte buffer", len(src), off, buf.size)
	}
	if len(src) == 0 {
		return nil
	}
	if err := b.stage(int64(len(src))); err != nil {
		return err
	}
	copy(unsafe.Slice((*byte)(b.staging.ptr), len(src)), src)
	err = b.runCmd(func(cb vk.CommandBuffer) {
		b.calls.copy(cb, b.staging.buf, buf.buf, 0, uint64(off), uint64(len(src)))
	})
	if err != nil {
		return fmt.Errorf("vulkan: write: %w", err)
	}
	return nil
}

// Read copies from the buffer at byte offset off into dst after all submitted work, together
// with the fault flag (which it clears): a raised flag is ErrIndex.
func (b *Backend) Read(src engine.Buffer, off int64, dst []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	buf, err := b.own(src, "read")
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(dst)) > buf.size {
		return fmt.Errorf("vulkan: read %d bytes at %d from a %d-byte buffer", len(dst), off, buf.size)
	}
	if len(dst) == 0 {
		return nil
	}
	n := (int64(len(dst)) + 3) &^ 3
	if err := b.stage(n + 4); err != nil {
		return err
	}
	err = b.runCmd(func(cb vk.CommandBuffer) {
		b.calls.copy(cb, buf.buf, b.staging.buf, uint64(off), 0, uint64(len(dst)))
		b.calls.copy(cb, b.fault.buf, b.staging.buf, 0, uint64(n), 4)
		b.barrier(cb)
		vk.CmdFillBuffer(cb, b.fault.buf, 0, 16, 0)
		b.hostBarrier(cb)
	})
	if err != nil {
		return fmt.Errorf("vulkan: read: %w", err)
	}
	m := unsafe.Slice((*byte)(b.staging.ptr), n+4)
	copy(dst, m)
	if m[n]|m[n+1]|m[n+2]|m[n+3] != 0 {
		return ErrIndex
	}
	return nil
}

// stage makes the staging buffer hold at least n bytes.
func (b *Backend) stage(n int64) error {
	if b.staging != nil && b.staging.size >= n {
		return nil
	}
	if b.staging != nil {
		b.freeNow(b.staging)
		b.staging = nil
	}
	size := int64(1 << 16)
	for size < n {
		size *= 2
	}
	s, err := b.alloc(size, true)
	if err != nil {
		return fmt.Errorf("vulkan: staging buffer of %d bytes: %w", size, err)
	}
	b.staging = s
	return nil
}

// Sync waits until all submitted work has finished.
func (b *Backend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	return b.wait(b.serial)
}

// Close waits for pending work and releases everything.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var err error
	if !b.lost {
		err = b.wait(b.serial)
	}
	b.destroy()
	return err
}

// destroy releases every object; the device must be idle (or lost).
func (b *Backend) destroy() {
	b.closed = true
	if b.dev != nil {
		vk.DeviceWaitIdle(b.dev)
		for _, s := range b.inflight {
			if s.cleanup != nil {
				s.cleanup()
			}
			vk.DestroyFence(b.dev, s.fence, nil)
		}
		b.inflight = nil
		for _, f := range b.fences {
			vk.DestroyFence(b.dev, f, nil)
		}
		for _, p := range b.pipes {
			p.destroy(b.dev)
		}
		b.mem.destroy(b.dev)
		if b.cmdPool != nil {
			vk.DestroyCommandPool(b.dev, b.cmdPool, nil)
		}
		vk.DestroyDevice(b.dev, nil)
		b.calls.free()
	}
	if b.inst != nil {
		vk.DestroyInstance(b.inst, nil)
	}
}
