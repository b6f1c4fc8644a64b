package vulkan

import (
	"fmt"
	"time"

	vk "github.com/goki/vulkan"
)

// barrier makes every earlier transfer and compute write visible to every later transfer and
// compute access. Kernels of one program depend on each other's outputs, so each dispatch is
// separated by one; at the start of a command buffer it orders it after earlier submissions.
func (b *Backend) barrier(cb vk.CommandBuffer) {
	b.calls.barrier(cb, vk.PipelineStageAllCommandsBit, vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit,
		vk.AccessShaderWriteBit|vk.AccessTransferWriteBit|vk.AccessHostWriteBit,
		vk.AccessShaderReadBit|vk.AccessShaderWriteBit|vk.AccessTransferReadBit|vk.AccessTransferWriteBit|vk.AccessUniformReadBit)
}

// hostBarrier makes transfer writes visible to the host (a read's staging copy).
func (b *Backend) hostBarrier(cb vk.CommandBuffer) {
	b.calls.barrier(cb, vk.PipelineStageTransferBit, vk.PipelineStageHostBit, vk.AccessTransferWriteBit, vk.AccessHostReadBit)
}

// newCommandBuffer allocates a primary command buffer and begins it.
func (b *Backend) newCommandBuffer(flags vk.CommandBufferUsageFlagBits) (vk.CommandBuffer, error) {
	cbs := make([]vk.CommandBuffer, 1)
	if err := vkErr("allocate command buffer", vk.AllocateCommandBuffers(b.dev, &vk.CommandBufferAllocateInfo{SType: vk.StructureTypeCommandBufferAllocateInfo,
		CommandPool: b.cmdPool, Level: vk.CommandBufferLevelPrimary, CommandBufferCount: 1}, cbs)); err != nil {
		return nil, err
	}
	if err := vkErr("begin command buffer", vk.BeginCommandBuffer(cbs[0], &vk.CommandBufferBeginInfo{SType: vk.StructureTypeCommandBufferBeginInfo,
		Flags: vk.CommandBufferUsageFlags(flags)})); err != nil {
		vk.FreeCommandBuffers(b.dev, b.cmdPool, 1, cbs)
		return nil, err
	}
	b.barrier(cbs[0])
	return cbs[0], nil
}

func (b *Backend) freeCommandBuffer(cb vk.CommandBuffer) {
	vk.FreeCommandBuffers(b.dev, b.cmdPool, 1, []vk.CommandBuffer{cb})
}

// fence returns an unsignalled fence.
func (b *Backend) fence() (vk.Fence, error) {
	if n := len(b.fences); n > 0 {
		f := b.fences[n-1]
		b.fences = b.fences[:n-1]
		if err := vkErr("reset fence", vk.ResetFences(b.dev, 1, []vk.Fence{f})); err != nil {
			return nil, err
		}
		return f, nil
	}
	var f vk.Fence
	if err := vkErr("create fence", vk.CreateFence(b.dev, &vk.FenceCreateInfo{SType: vk.StructureTypeFenceCreateInfo}, nil, &f)); err != nil {
		return nil, err
	}
	return f, nil
}

// submit queues an ended command buffer with a fence; cleanup runs once it has finished.
func (b *Backend) submit(cb vk.CommandBuffer, cleanup func()) error {
	f, err := b.fence()
	if err != nil {
		return err
	}
	r := b.calls.submit(b.queue, cb, f)
	if err := vkErr("queue submit", r); err != nil {
		b.fences = append(b.fences, f)
		if r == vk.ErrorDeviceLost {
			b.lost = true
		}
		return err
	}
	b.serial++
	b.inflight = append(b.inflight, &submission{serial: b.serial, fence: f, cleanup: cleanup})
	return nil
}

// runCmd records one command buffer with rec, submits it and waits for it.
func (b *Backend) runCmd(rec func(vk.CommandBuffer)) error {
	cb, err := b.newCommandBuffer(vk.CommandBufferUsageOneTimeSubmitBit)
	if err != nil {
		return err
	}
	rec(cb)
	if err := vkErr("end command buffer", vk.EndCommandBuffer(cb)); err != nil {
		b.freeCommandBuffer(cb)
		return err
	}
	if err := b.submit(cb, func() { b.freeCommandBuffer(cb) }); err != nil {
		b.freeCommandBuffer(cb)
		return err
	}
	return b.wait(b.serial)
}

// collect retires the finished submissions in order (their cleanup, their fence back to the
// free list) and frees the buffers no pending submission can still use.
func (b *Backend) collect() {
	for len(b.inflight) > 0 {
		s := b.inflight[0]
		r := vk.GetFenceStatus(b.dev, s.fence)
		if r == vk.ErrorDeviceLost {
			b.lost = true
			return
		}
		if r != vk.Success {
			break
		}
		if s.cleanup != nil {
			s.cleanup()
		}
		b.fences = append(b.fences, s.fence)
		b.done = s.serial
		b.inflight = b.inflight[1:]
	}
	if len(b.inflight) == 0 {
		b.done = b.serial
	}
	k := 0
	for _, d := range b.deferred {
		if d.serial <= b.done {
			d.fn()
			continue
		}
		b.deferred[k] = d
		k++
	}
	b.deferred = b.deferred[:k]
}

// wait waits until submission serial has finished. It polls the fences without blocking in the
// driver and sleeps between polls (up to 2 ms, so that a software device keeps the CPU), so a
// lost or hung device becomes an error after the timeout instead of a hang.
func (b *Backend) wait(serial uint64) error {
	start := time.Now()
	nap := 20 * time.Microsecond
	for {
		b.collect()
		if b.lost {
			return ErrDeviceLost
		}
		if b.done >= serial {
			return nil
		}
		if time.Since(start) > b.timeout {
			return fmt.Errorf("%w (%s; set LATHE_VULKAN_TIMEOUT to wait longer)", ErrTimeout, b.timeout)
		}
		time.Sleep(nap)
		nap = min(2*nap, 2*time.Millisecond)
	}
}
