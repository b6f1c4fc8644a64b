package webgpu

import (
	"fmt"

	"github.com/oliverbestmann/webgpu/wgpu"

	"github.com/lathe-ml/lathe/engine/gpuplan"
	"github.com/lathe-ml/lathe/shaders"
)

// bind is one storage binding of a dispatch.
type bind struct {
	buf  *wgpu.Buffer
	size uint64
	rw   bool
}

// command is a dispatch of a kernel, or (when src is set) a buffer-to-buffer copy.
type command struct {
	name      string
	consts    []shaders.Const
	subgroups bool // the kernel's subgroup variant
	binds     []bind
	params    []byte
	groups    [3]uint32

	src, dst *wgpu.Buffer
	copyLen  uint64
}

// recorder collects the commands of one Run; temps are scratch buffers that go back to the pool
// once the submission is queued (later queue operations are ordered after it).
type recorder struct {
	b     *Backend
	cmds  []command
	temps []*buffer
}

// maxGroups is the most workgroups per dimension of a dispatch.
func (b *Backend) maxGroups() uint32 {
	if m := b.limits.MaxComputeWorkgroupsPerDimension; m > 0 {
		return m
	}
	return 65535
}

// dispatch appends a kernel launch.
func (r *recorder) dispatch(name string, consts []shaders.Const, subgroups bool, groups [3]uint32, params []byte, binds ...bind) {
	if groups[0] == 0 || groups[1] == 0 || groups[2] == 0 {
		return // nothing to do
	}
	r.cmds = append(r.cmds, command{name: name, consts: consts, subgroups: subgroups, binds: binds, params: params, groups: groups})
}

// copy appends a buffer-to-buffer copy of n bytes (whole words).
func (r *recorder) copy(dst, src bind, n int64) {
	r.cmds = append(r.cmds, command{src: src.buf, dst: dst.buf, copyLen: uint64(n)})
}

// temp returns a scratch buffer of n bytes bound read-write.
func (r *recorder) temp(n int64) (bind, error) {
	buf, err := r.b.alloc(n)
	if err != nil {
		return bind{}, err
	}
	r.temps = append(r.temps, buf)
	return bind{buf: buf.buf, size: uint64(gpuplan.BindSize(n)), rw: true}, nil
}

func (r *recorder) release() {
	for _, t := range r.temps {
		r.b.release(t)
	}
	r.temps = nil
}

// paramOffsets lays the commands' parameters out in one uniform buffer, each at an offset the
// device's uniform alignment allows; it returns the offsets and the buffer's size.
func (r *recorder) paramOffsets() (offs []uint64, total uint64) {
	align := uint64(r.b.limits.MinUniformBufferOffsetAlignment)
	if align == 0 {
		align = 256
	}
	offs = make([]uint64, len(r.cmds))
	for k, c := range r.cmds {
		if len(c.params) == 0 {
			continue
		}
		offs[k] = total
		total += (uint64(len(c.params)) + align - 1) / align * align
	}
	return offs, total
}

// submit encodes every command into one command encoder and submits it once.
func (r *recorder) submit() error {
	b := r.b
	if len(r.cmds) == 0 {
		return nil
	}
	offs, total := r.paramOffsets()
	if total > 0 {
		if b.uniform == nil || b.uniLen < total {
			if b.uniform != nil {
				b.uniform.Release()
				b.uniform = nil
			}
			sz := uint64(sizeClass(int64(total)))
			u, err := b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe params", Usage: wgpu.BufferUsageUniform | wgpu.BufferUsageCopyDst, Size: sz})
			if err != nil {
				return fmt.Errorf("params buffer: %w", err)
			}
			b.uniform, b.uniLen = u, sz
		}
		data := make([]byte, total)
		for k, c := range r.cmds {
			copy(data[offs[k]:], c.params)
		}
		if err := b.queue.TryWriteBuffer(b.uniform, 0, data); err != nil {
			return fmt.Errorf("params: %w", err)
		}
	}
	enc, err := b.dev.TryCreateCommandEncoder(&wgpu.CommandEncoderDescriptor{Label: "lathe run"})
	if err != nil {
		return err
	}
	defer enc.Release()
	var groupsToRelease []*wgpu.BindGroup
	defer func() {
		for _, g := range groupsToRelease {
			g.Release()
		}
	}()
	first := b.submitSlot()
	var pass *wgpu.ComputePassEncoder
	endPass := func() error {
		if pass == nil {
			return nil
		}
		err := pass.TryEnd()
		pass.Release()
		pass = nil
		return err
	}
	for k, c := range r.cmds {
		if c.src != nil {
			if err := endPass(); err != nil {
				return err
			}
			if err := enc.TryCopyBufferToBuffer(c.src, 0, c.dst, 0, c.copyLen); err != nil {
				return err
			}
			continue
		}
		rw := make([]bool, len(c.binds))
		for i, bd := range c.binds {
			rw[i] = bd.rw
		}
		p, err := b.getPipeline(c.name, c.consts, c.subgroups, rw, len(c.params) > 0)
		if err != nil {
			endPass()
			return err
		}
		entries := make([]wgpu.BindGroupEntry, 0, len(c.binds)+1)
		for i, bd := range c.binds {
			entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i), Buffer: bd.buf, Size: bd.size})
		}
		if len(c.params) > 0 {
			entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(len(c.binds)), Buffer: b.uniform, Offset: offs[k], Size: uint64(len(c.params))})
		}
		bg, err := b.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Label: c.name, Layout: p.layout, Entries: entries})
		if err != nil {
			endPass()
			return fmt.Errorf("kernel %s: %w", c.name, err)
		}
		groupsToRelease = append(groupsToRelease, bg)
		if pass == nil {
			pass = b.beginPass(enc)
		}
		pass.SetPipeline(p.pipe)
		pass.SetBindGroup(0, bg, nil)
		pass.DispatchWorkgroups(c.groups[0], c.groups[1], c.groups[2])
	}
	if err := endPass(); err != nil {
		return err
	}
	if err := b.resolveTimes(enc, first); err != nil {
		return err
	}
	cmd, err := enc.TryFinish(nil)
	if err != nil {
		return err
	}
	b.queue.Submit(cmd)
	cmd.Release()
	return nil
}
