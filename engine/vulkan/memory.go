package vulkan

import (
	"fmt"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// blockSize is the device memory block buffers are sub-allocated from: few vkAllocateMemory
// calls (drivers limit their number, and each is slow), while a buffer larger than half a block
// gets a block of its own.
const blockSize = 256 << 20

// block is one vkAllocateMemory with its free ranges (sorted, coalesced).
type block struct {
	mem       vk.DeviceMemory
	typ       uint32
	size      int64
	free      []span
	ptr       unsafe.Pointer // mapped, for host-visible blocks
	dedicated bool
}

type span struct{ off, n int64 }

// memory is the sub-allocator: blocks per memory type, first fit with alignment, coalescing frees.
type memory struct {
	props  vk.PhysicalDeviceMemoryProperties
	blocks []*block
}

func (m *memory) init(b *Backend) error {
	vk.GetPhysicalDeviceMemoryProperties(b.pd, &m.props)
	m.props.Deref()
	for i := range m.props.MemoryTypes {
		m.props.MemoryTypes[i].Deref()
	}
	return nil
}

// pick chooses a memory type among typeBits: device-local for kernels' buffers, host-visible and
// coherent for staging.
func (m *memory) pick(typeBits uint32, host bool) (uint32, error) {
	want := vk.MemoryPropertyFlags(vk.MemoryPropertyDeviceLocalBit)
	if host {
		want = vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit | vk.MemoryPropertyHostCoherentBit)
	}
	for pass := 0; pass < 2; pass++ {
		for i := uint32(0); i < m.props.MemoryTypeCount; i++ {
			if typeBits&(1<<i) == 0 {
				continue
			}
			f := m.props.MemoryTypes[i].PropertyFlags
			if f&want == want {
				return i, nil
			}
		}
		if host {
			break
		}
		want = 0 // no device-local type: any type the buffer allows
	}
	return 0, fmt.Errorf("no memory type with flags %#x", uint32(want))
}

// take finds room for n bytes aligned to align in bl.
func (bl *block) take(n, align int64) (int64, bool) {
	for i, s := range bl.free {
		off := (s.off + align - 1) / align * align
		if off+n > s.off+s.n {
			continue
		}
		// Split the free span around [off, off+n).
		rest := []span{}
		if off > s.off {
			rest = append(rest, span{s.off, off - s.off})
		}
		if end := s.off + s.n; off+n < end {
			rest = append(rest, span{off + n, end - off - n})
		}
		bl.free = append(bl.free[:i], append(rest, bl.free[i+1:]...)...)
		return off, true
	}
	return 0, false
}

// give returns [off, off+n) to bl's free list, merging neighbours.
func (bl *block) give(off, n int64) {
	i := 0
	for i < len(bl.free) && bl.free[i].off < off {
		i++
	}
	bl.free = append(bl.free[:i], append([]span{{off, n}}, bl.free[i:]...)...)
	out := bl.free[:0]
	for _, s := range bl.free {
		if k := len(out); k > 0 && out[k-1].off+out[k-1].n == s.off {
			out[k-1].n += s.n
			continue
		}
		out = append(out, s)
	}
	bl.free = out
}

func (bl *block) empty() bool {
	return len(bl.free) == 1 && bl.free[0].off == 0 && bl.free[0].n == bl.size
}

// alloc creates a buffer of n bytes (whole words) bound to sub-allocated memory; host buffers
// are mapped.
func (b *Backend) alloc(n int64, host bool) (*buffer, error) {
	size := max(4, (n+3)&^3)
	if size > b.caps.MaxBufferBytes && b.caps.MaxBufferBytes > 0 && !host {
		return nil, fmt.Errorf("%w: %d bytes asked, the device binds at most %d", ErrTooLarge, n, b.caps.MaxBufferBytes)
	}
	usage := vk.BufferUsageFlags(vk.BufferUsageStorageBufferBit | vk.BufferUsageUniformBufferBit | vk.BufferUsageTransferSrcBit | vk.BufferUsageTransferDstBit)
	var vb vk.Buffer
	if err := vkErr("create buffer", vk.CreateBuffer(b.dev, &vk.BufferCreateInfo{SType: vk.StructureTypeBufferCreateInfo,
		Size: vk.DeviceSize(size), Usage: usage, SharingMode: vk.SharingModeExclusive}, nil, &vb)); err != nil {
		return nil, fmt.Errorf("alloc %d bytes: %w", n, err)
	}
	var req vk.MemoryRequirements
	vk.GetBufferMemoryRequirements(b.dev, vb, &req)
	req.Deref()
	typ, err := b.mem.pick(req.MemoryTypeBits, host)
	if err != nil {
		vk.DestroyBuffer(b.dev, vb, nil)
		return nil, fmt.Errorf("vulkan: alloc %d bytes: %w", n, err)
	}
	need, align := int64(req.Size), max(int64(req.Alignment), 16)
	var bl *block
	off := int64(0)
	if need <= blockSize/2 {
		for _, c := range b.mem.blocks {
			if c.typ != typ || c.dedicated {
				continue
			}
			if o, ok := c.take(need, align); ok {
				bl, off = c, o
				break
			}
		}
	}
	if bl == nil {
		bs := int64(blockSize)
		dedicated := need > blockSize/2
		if dedicated {
			bs = need
		}
		nb, err := b.newBlock(typ, bs, host)
		if err != nil {
			vk.DestroyBuffer(b.dev, vb, nil)
			return nil, fmt.Errorf("alloc %d bytes: %w", n, err)
		}
		nb.dedicated = dedicated
		bl = nb
		off, _ = bl.take(need, align)
	}
	if err := vkErr("bind buffer memory", vk.BindBufferMemory(b.dev, vb, bl.mem, vk.DeviceSize(off))); err != nil {
		bl.give(off, need)
		vk.DestroyBuffer(b.dev, vb, nil)
		return nil, err
	}
	x := &buffer{b: b, buf: vb, block: bl, off: off, span: need, size: size}
	if bl.ptr != nil {
		x.ptr = unsafe.Add(bl.ptr, off)
	}
	return x, nil
}

// newBlock allocates a block of memory type typ, mapped when host.
func (b *Backend) newBlock(typ uint32, size int64, host bool) (*block, error) {
	var mem vk.DeviceMemory
	if err := vkErr("allocate memory", vk.AllocateMemory(b.dev, &vk.MemoryAllocateInfo{SType: vk.StructureTypeMemoryAllocateInfo,
		AllocationSize: vk.DeviceSize(size), MemoryTypeIndex: typ}, nil, &mem)); err != nil {
		return nil, err
	}
	bl := &block{mem: mem, typ: typ, size: size, free: []span{{0, size}}}
	if host || m32(b.mem.props.MemoryTypes[typ].PropertyFlags)&uint32(vk.MemoryPropertyHostVisibleBit) != 0 {
		var p unsafe.Pointer
		if err := vkErr("map memory", vk.MapMemory(b.dev, mem, 0, vk.DeviceSize(size), 0, &p)); err != nil {
			vk.FreeMemory(b.dev, mem, nil)
			return nil, err
		}
		bl.ptr = p
	}
	b.mem.blocks = append(b.mem.blocks, bl)
	return bl, nil
}

func m32(f vk.MemoryPropertyFlags) uint32 { return uint32(f) }

// freeNow destroys buf and returns its memory; no pending work may use it.
func (b *Backend) freeNow(x *buffer) {
	vk.DestroyBuffer(b.dev, x.buf, nil)
	x.block.give(x.off, x.span)
	if x.block.dedicated && x.block.empty() {
		if x.block.ptr != nil {
			vk.UnmapMemory(b.dev, x.block.mem)
		}
		vk.FreeMemory(b.dev, x.block.mem, nil)
		for i, c := range b.mem.blocks {
			if c == x.block {
				b.mem.blocks = append(b.mem.blocks[:i], b.mem.blocks[i+1:]...)
				break
			}
		}
	}
	x.buf, x.block, x.ptr = nil, nil, nil
}

func (m *memory) destroy(dev vk.Device) {
	for _, bl := range m.blocks {
		if bl.ptr != nil {
			vk.UnmapMemory(dev, bl.mem)
		}
		vk.FreeMemory(dev, bl.mem, nil)
	}
	m.blocks = nil
}

// unsafeBytes is n bytes of the mapped host buffer x at offset off.
func unsafeBytes(x *buffer, off int64, n int) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(x.ptr, off)), n)
}
