package webgpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oliverbestmann/webgpu/wgpu"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// Errors a caller may want to tell apart.
var (
	ErrDeviceLost = errors.New("webgpu: device lost")
	ErrClosed     = errors.New("webgpu: backend closed")
	ErrTooLarge   = errors.New("webgpu: buffer too large for the device")
	ErrTimeout    = errors.New("webgpu: device did not finish in time")
	ErrFreed      = errors.New("webgpu: buffer used after Free")
	// ErrIndex is reported by the first read after a run in which a kernel met an index out of
	// range (a KV-cache row, a token id, a target, a pool slot): the CPU backend's Run errors.
	ErrIndex = errors.New("webgpu: a launch since the last read met an index out of range")
)

// Backend runs lathe's kernels on one WebGPU device. Its methods may be called from several
// goroutines: a mutex serialises them.
type Backend struct {
	mu      sync.Mutex
	inst    *wgpu.Instance
	adapter *wgpu.Adapter
	dev     *wgpu.Device
	queue   *wgpu.Queue
	info    engine.DeviceInfo
	caps    engine.Caps
	limits  wgpu.Limits
	lost    atomic.Pointer[string]
	closed  bool
	timeout time.Duration

	pool     map[int64][]*wgpu.Buffer // freed device buffers by size class
	pooled   int64                    // bytes held in pool
	poolCap  int64                    // most bytes the pool keeps
	pipes    map[string]*pipeline
	staging  *wgpu.Buffer
	stageLen uint64
	uniform  *wgpu.Buffer
	uniLen   uint64
	// fault is the device-side flag kernels raise on an index out of range; every read fetches
	// it along with its data (no extra wait) and reports ErrIndex.
	fault *wgpu.Buffer

	perQueryRows bool // cached attention always runs attention_query.wgsl (benchmarks compare)
	// plain runs the base kernel set (no subgroup variants) whatever the caps: the conformance
	// suite runs both sets, benchmarks compare them.
	plain bool
	f16   bool   // the f16-arithmetic variants (SetF16Arithmetic)
	timer *timer // GPU timing, nil while off (timing.go)
}

// subgroups reports whether kernels run their subgroup variants.
func (b *Backend) subgroups() bool { return b.caps.Subgroups && !b.plain }

// buffer is one device allocation; class is its real size (a size class of the pool).
type buffer struct {
	b     *Backend
	buf   *wgpu.Buffer
	size  int64 // bytes asked for, rounded up to 4
	class int64
	freed bool
}

// Bytes is the usable size: the requested size rounded up to whole 4-byte words, as on the CPU.
func (x *buffer) Bytes() int64 { return x.size }

// Open opens the adapter with the given index (as Provider.Devices lists them) and requests a device
// with the adapter's largest limits.
func Open(index int) (*Backend, error) {
	inst, err := newInstance()
	if err != nil {
		return nil, err
	}
	ads := adapters(inst)
	if index < 0 || index >= len(ads) {
		for _, a := range ads {
			a.Release()
		}
		inst.Release()
		return nil, fmt.Errorf("webgpu: no adapter %d (found %d)", index, len(ads))
	}
	for i, a := range ads {
		if i != index {
			a.Release()
		}
	}
	a := ads[index]
	b := &Backend{inst: inst, adapter: a, info: adapterInfo(a, index),
		pool: map[int64][]*wgpu.Buffer{}, pipes: map[string]*pipeline{}, timeout: timeoutFromEnv()}
	lim := a.GetLimits()
	dev, err := requestDevice(a, &wgpu.DeviceDescriptor{
		RequiredFeatures: wantedFeatures(a),
		RequiredLimits:   &lim,
		// Called from wgpu's threads (or from Close): a lost device fails every later call.
		DeviceLostCallback: func(reason wgpu.DeviceLostReason, msg string) {
			if reason != wgpu.DeviceLostReasonDestroyed && reason != wgpu.DeviceLostReasonCallbackCancelled {
				m := fmt.Sprintf("%s: %s", reason, msg)
				b.lost.CompareAndSwap(nil, &m)
			}
		},
	})
	if err != nil {
		a.Release()
		inst.Release()
		return nil, fmt.Errorf("webgpu: open %s: %w", b.info.Name, err)
	}
	b.dev = dev
	b.queue = dev.GetQueue()
	b.limits = dev.GetLimits()
	// The largest buffer a kernel can use is the largest it can bind.
	// The caps follow the features the device got, not those the adapter lists.
	b.caps = featureCaps(dev.HasFeature)
	b.caps.MaxBufferBytes = int64(min(b.limits.MaxBufferSize, b.limits.MaxStorageBufferBindingSize))
	b.caps.Tiles = b.planDevice().Tiles()
	if b.fault, err = dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe fault", Usage: wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst, Size: 16}); err != nil {
		b.Close()
		return nil, fmt.Errorf("webgpu: fault flag: %w", err)
	}
	if b.caps.Subgroups {
		if b.caps.SubgroupSize, err = b.probeSubgroups(); err != nil {
			b.Close()
			return nil, fmt.Errorf("webgpu: open %s: %w", b.info.Name, err)
		}
	}
	b.poolCap = int64(b.limits.MaxBufferSize)
	if b.poolCap > 1<<30 {
		b.poolCap = 1 << 30
	}
	return b, nil
}

// requestDevice asks for the device with the adapter's limits and, should that fail, with the
// WebGPU defaults, turning the binding's panics into errors.
func requestDevice(a *wgpu.Adapter, d *wgpu.DeviceDescriptor) (dev *wgpu.Device, err error) {
	defer func() {
		if r := recover(); r != nil {
			dev, err = nil, fmt.Errorf("request device: %v", r)
		}
	}()
	dev, err = a.RequestDevice(d)
	if err == nil || d.RequiredLimits == nil {
		return dev, err
	}
	fallback := *d
	fallback.RequiredLimits = nil
	dev, err2 := a.RequestDevice(&fallback)
	if err2 != nil {
		return nil, fmt.Errorf("with the adapter's limits: %v; with default limits: %w", err, err2)
	}
	return dev, nil
}

// timeoutFromEnv reads LATHE_WEBGPU_TIMEOUT (a Go duration); software adapters are slow, so the
// default is generous.
func timeoutFromEnv() time.Duration {
	if s := os.Getenv("LATHE_WEBGPU_TIMEOUT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			return d
		}
	}
	return 2 * time.Minute
}

// Device describes the adapter.
func (b *Backend) Device() engine.DeviceInfo { return b.info }

// Caps reports what the device offers (from the features the device was created with) and the
// tiles the kernels use.
func (b *Backend) Caps() engine.Caps { return b.caps }

// probeSubgroups runs subgroup_probe: it measures the subgroup size kernels run with and checks
// that subgroupAdd sums a subgroup (a driver that gets it wrong must not get subgroup kernels).
func (b *Backend) probeSubgroups() (size int, err error) {
	defer func() {
		if r := recover(); r != nil {
			size, err = 0, fmt.Errorf("subgroup probe: %v", r)
		}
	}()
	const groupSize = 64
	out, err := b.alloc(8)
	if err != nil {
		return 0, err
	}
	defer b.release(out)
	r := &recorder{b: b}
	r.dispatch("subgroup_probe", []shaders.Const{{Name: "WG", Value: fmt.Sprintf("%du", groupSize)}}, false, [3]uint32{1, 1, 1}, nil, bind{buf: out.buf, size: 8, rw: true})
	if err := r.submit(); err != nil {
		return 0, fmt.Errorf("subgroup probe: %w", err)
	}
	var got [8]byte
	if err := b.read(out, 0, got[:]); err != nil {
		return 0, fmt.Errorf("subgroup probe: %w", err)
	}
	sg := binary.LittleEndian.Uint32(got[:4])
	sum := binary.LittleEndian.Uint32(got[4:])
	if sg == 0 || sg&(sg-1) != 0 || sg > 128 {
		return 0, fmt.Errorf("subgroup probe: the device reports subgroup size %d", sg)
	}
	if sg <= groupSize && sum != sg*(sg+1)/2 {
		return 0, fmt.Errorf("subgroup probe: subgroupAdd over a subgroup of %d gave %d, want %d", sg, sum, sg*(sg+1)/2)
	}
	return int(sg), nil
}

// Limits are the limits the device was created with.
func (b *Backend) Limits() wgpu.Limits { return b.limits }

func (b *Backend) check() error {
	if b.closed {
		return ErrClosed
	}
	if m := b.lost.Load(); m != nil {
		return fmt.Errorf("%w: %s", ErrDeviceLost, *m)
	}
	return nil
}

// sizeClass rounds n up to one of four sizes per power of two (at most 25% waste), 256 bytes at least,
// so that freed buffers serve later requests of similar size.
func sizeClass(n int64) int64 {
	if n <= 256 {
		return 256
	}
	p := int64(1)
	for p*2 < n {
		p *= 2
	}
	// n is in (p, 2p]: steps of p/4.
	step := p / 4
	return (n + step - 1) / step * step
}

const bufferUsage = wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst

// Alloc returns a device buffer of at least n bytes, reusing a freed one of the same size class.
// Its contents are unspecified (a reused buffer keeps old data).
func (b *Backend) Alloc(n int64) (engine.Buffer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.alloc(n)
}

func (b *Backend) alloc(n int64) (*buffer, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("webgpu: alloc %d bytes", n)
	}
	size := (n + 3) &^ 3
	class := sizeClass(size)
	if class > int64(b.limits.MaxBufferSize) {
		class = size
	}
	if size > int64(b.limits.MaxBufferSize) {
		return nil, fmt.Errorf("%w: %d bytes asked, the device allows %d", ErrTooLarge, n, b.limits.MaxBufferSize)
	}
	if l := b.pool[class]; len(l) > 0 {
		buf := l[len(l)-1]
		b.pool[class] = l[:len(l)-1]
		b.pooled -= class
		return &buffer{b: b, buf: buf, size: size, class: class}, nil
	}
	buf, err := b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe", Usage: bufferUsage, Size: uint64(class)})
	if err != nil {
		return nil, fmt.Errorf("webgpu: alloc %d bytes: %w", n, err)
	}
	return &buffer{b: b, buf: buf, size: size, class: class}, nil
}

// Free returns the buffer to the pool (or releases it when the pool is full). Work already
// submitted that reads it stays valid: wgpu orders later writes after it.
func (b *Backend) Free(x engine.Buffer) {
	buf, ok := x.(*buffer)
	if !ok || buf == nil || buf.b != b {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(buf)
}

func (b *Backend) release(buf *buffer) {
	if buf.freed {
		return
	}
	buf.freed = true
	if b.closed {
		return
	}
	if b.pooled+buf.class <= b.poolCap {
		b.pool[buf.class] = append(b.pool[buf.class], buf.buf)
		b.pooled += buf.class
	} else {
		buf.buf.Release()
	}
	buf.buf = nil
}

// PooledBytes is how many bytes of freed buffers the pool holds for reuse.
func (b *Backend) PooledBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pooled
}

func (b *Backend) own(x engine.Buffer, what string) (*buffer, error) {
	buf, ok := x.(*buffer)
	if !ok || buf == nil {
		return nil, fmt.Errorf("webgpu: %s: buffer %T is not a webgpu buffer", what, x)
	}
	if buf.b != b {
		return nil, fmt.Errorf("webgpu: %s: buffer belongs to another device", what)
	}
	if buf.freed {
		return nil, fmt.Errorf("%s: %w", what, ErrFreed)
	}
	return buf, nil
}

// Write copies src into the buffer at byte offset off. Unaligned edges (the device writes whole
// 4-byte words) are merged with the buffer's current contents.
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
		return fmt.Errorf("webgpu: write %d bytes at %d into a %d-byte buffer", len(src), off, buf.size)
	}
	if len(src) == 0 {
		return nil
	}
	lo, hi := off&^3, (off+int64(len(src))+3)&^3
	data := src
	if lo != off || hi != off+int64(len(src)) {
		data = make([]byte, hi-lo)
		// Only the edge words need the old contents.
		if err := b.read(buf, lo, data[:4]); err != nil {
			return err
		}
		if err := b.read(buf, hi-4, data[len(data)-4:]); err != nil {
			return err
		}
		copy(data[off-lo:], src)
	}
	if err := b.queue.TryWriteBuffer(buf.buf, uint64(lo), data); err != nil {
		return fmt.Errorf("webgpu: write: %w", err)
	}
	return nil
}

// Read copies from the buffer at byte offset off into dst, after all submitted work.
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
		return fmt.Errorf("webgpu: read %d bytes at %d from a %d-byte buffer", len(dst), off, buf.size)
	}
	if len(dst) == 0 {
		return nil
	}
	return b.read(buf, off, dst)
}

// read copies through the staging buffer (whole words) and waits for the map without blocking in
// the driver.
func (b *Backend) read(buf *buffer, off int64, dst []byte) error {
	lo, hi := off&^3, (off+int64(len(dst))+3)&^3
	n := uint64(hi - lo)
	total := n + 4 // the data, then the fault flag
	if b.staging == nil || b.stageLen < total {
		if b.staging != nil {
			b.staging.Release()
			b.staging = nil
		}
		sz := uint64(sizeClass(int64(total)))
		st, err := b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe staging", Usage: wgpu.BufferUsageMapRead | wgpu.BufferUsageCopyDst, Size: sz})
		if err != nil {
			return fmt.Errorf("webgpu: read: staging buffer of %d bytes: %w", sz, err)
		}
		b.staging, b.stageLen = st, sz
	}
	enc, err := b.dev.TryCreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	defer enc.Release()
	if err := enc.TryCopyBufferToBuffer(buf.buf, uint64(lo), b.staging, 0, n); err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	if err := enc.TryCopyBufferToBuffer(b.fault, 0, b.staging, n, 4); err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	cmd, err := enc.TryFinish(nil)
	if err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	b.queue.Submit(cmd)
	cmd.Release()
	var status atomic.Int32
	status.Store(-1)
	if err := b.staging.TryMapAsync(wgpu.MapModeRead, 0, total, func(s wgpu.MapAsyncStatus) { status.Store(int32(s)) }); err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	if err := b.wait(func() bool { return status.Load() >= 0 }); err != nil {
		// Leave the staging buffer behind: it is still pending and cannot be reused.
		b.staging, b.stageLen = nil, 0
		return fmt.Errorf("webgpu: read: %w", err)
	}
	if s := wgpu.MapAsyncStatus(status.Load()); s != wgpu.MapAsyncStatusSuccess {
		if m := b.lost.Load(); m != nil {
			return fmt.Errorf("webgpu: read: %w: %s", ErrDeviceLost, *m)
		}
		return fmt.Errorf("webgpu: read: map failed: %s", s)
	}
	m := b.staging.GetMappedRange(0, uint(total))
	copy(dst, m[off-lo:n])
	fault := m[n] | m[n+1] | m[n+2] | m[n+3]
	if err := b.staging.TryUnmap(); err != nil {
		return fmt.Errorf("webgpu: read: %w", err)
	}
	if fault != 0 {
		if err := b.queue.TryWriteBuffer(b.fault, 0, make([]byte, 4)); err != nil {
			return fmt.Errorf("webgpu: read: %w", err)
		}
		return ErrIndex
	}
	if b.stageLen > maxKeptStaging { // keep small staging buffers only
		b.staging.Release()
		b.staging, b.stageLen = nil, 0
	}
	return nil
}

// maxKeptStaging is the largest staging buffer kept between reads.
const maxKeptStaging = 64 << 20

// Trim releases the freed buffers the pool keeps for reuse.
func (b *Backend) Trim() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.pool {
		for _, buf := range l {
			buf.Release()
		}
	}
	b.pool, b.pooled = map[int64][]*wgpu.Buffer{}, 0
}

// wait polls the device without blocking until done reports true, the device is lost or the
// timeout passes. Blocking polls are avoided: a long submission on lavapipe crashes in them.
func (b *Backend) wait(done func() bool) error {
	start := time.Now()
	for i := 0; ; i++ {
		b.dev.Poll(false, nil)
		if done() {
			return nil
		}
		if m := b.lost.Load(); m != nil {
			return fmt.Errorf("%w: %s", ErrDeviceLost, *m)
		}
		if time.Since(start) > b.timeout {
			return fmt.Errorf("%w (%s; set LATHE_WEBGPU_TIMEOUT to wait longer)", ErrTimeout, b.timeout)
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

// Sync waits until all submitted work has finished.
func (b *Backend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	return b.sync()
}

func (b *Backend) sync() error {
	var done atomic.Bool
	b.queue.OnSubmittedWorkDone(func(wgpu.QueueWorkDoneStatus) { done.Store(true) })
	return b.wait(done.Load)
}

// Close waits for pending work and releases the device; the backend must not be used afterwards.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var err error
	if b.lost.Load() == nil {
		err = b.sync()
	}
	for _, l := range b.pool {
		for _, buf := range l {
			buf.Release()
		}
	}
	b.pool, b.pooled = nil, 0
	for _, p := range b.pipes {
		p.release()
	}
	b.pipes = nil
	if b.staging != nil {
		b.staging.Release()
	}
	if b.uniform != nil {
		b.uniform.Release()
	}
	if b.fault != nil {
		b.fault.Release()
	}
	b.dropTimer()
	b.queue.Release()
	b.dev.Release()
	b.adapter.Release()
	b.inst.Release()
	b.closed = true
	return err
}

// pipeline is a compiled kernel with its explicit bind group layout.
type pipeline struct {
	module *wgpu.ShaderModule
	layout *wgpu.BindGroupLayout
	pl     *wgpu.PipelineLayout
	pipe   *wgpu.ComputePipeline
}

func (p *pipeline) release() {
	p.pipe.Release()
	p.pl.Release()
	p.layout.Release()
	p.module.Release()
}

// getPipeline compiles (once) kernel name with its constants for a binding signature: one storage
// buffer per rw entry (true = read_write), then a uniform buffer when uniform is set.
func (b *Backend) getPipeline(name string, consts []shaders.Const, sg bool, rw []bool, uniform bool) (*pipeline, error) {
	key := name
	for _, c := range consts {
		key += "|" + c.Name + "=" + c.Value
	}
	sig := make([]byte, len(rw))
	for i, w := range rw {
		sig[i] = 'r'
		if w {
			sig[i] = 'w'
		}
	}
	key += "|" + string(sig)
	if uniform {
		key += "u"
	}
	if sg {
		key += "|sg"
	}
	if p := b.pipes[key]; p != nil {
		return p, nil
	}
	src, err := shaders.ComposeVariant(name, consts, sg)
	if err != nil {
		return nil, err
	}
	mod, err := b.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: name, WGSLSource: &wgpu.ShaderSourceWGSL{Code: src}})
	if err != nil {
		return nil, fmt.Errorf("compile kernel %s: %w", name, err)
	}
	var entries []wgpu.BindGroupLayoutEntry
	for i, w := range rw {
		t := wgpu.BufferBindingTypeReadOnlyStorage
		if w {
			t = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{Binding: uint32(i), Visibility: wgpu.ShaderStageCompute, Buffer: wgpu.BufferBindingLayout{Type: t}})
	}
	if uniform {
		entries = append(entries, wgpu.BindGroupLayoutEntry{Binding: uint32(len(rw)), Visibility: wgpu.ShaderStageCompute, Buffer: wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform}})
	}
	bgl, err := b.dev.TryCreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: name, Entries: entries})
	if err != nil {
		mod.Release()
		return nil, fmt.Errorf("kernel %s: %w", name, err)
	}
	pl, err := b.dev.TryCreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: name, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("kernel %s: %w", name, err)
	}
	pipe, err := b.dev.TryCreateComputePipeline(&wgpu.ComputePipelineDescriptor{Label: name, Layout: pl,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: "main"}})
	if err != nil {
		pl.Release()
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("kernel %s: %w", name, err)
	}
	p := &pipeline{module: mod, layout: bgl, pl: pl, pipe: pipe}
	b.pipes[key] = p
	return p, nil
}
