package webgpu

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/oliverbestmann/webgpu/wgpu"

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
	name   string
	consts []shaders.Const
	binds  []bind
	params []byte
	groups [3]uint32

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

// params packs a kernel's uniform block: scalars of 4 bytes in declaration order, then optional
// vec4 arrays (16-byte aligned, as WGSL's uniform layout wants).
type params struct{ w []uint32 }

func (p *params) u(v ...int) *params {
	for _, x := range v {
		p.w = append(p.w, uint32(x))
	}
	return p
}

func (p *params) i(v ...int32) *params {
	for _, x := range v {
		p.w = append(p.w, uint32(x))
	}
	return p
}

func (p *params) f(v ...float32) *params {
	for _, x := range v {
		p.w = append(p.w, math.Float32bits(x))
	}
	return p
}

// vec4s pads to a 16-byte boundary and appends n floats (zero-filled past len(v)), n a multiple of 4.
func (p *params) vec4s(v []float32, n int) *params {
	for len(p.w)%4 != 0 {
		p.w = append(p.w, 0)
	}
	for k := 0; k < n; k++ {
		var x float32
		if k < len(v) {
			x = v[k]
		}
		p.w = append(p.w, math.Float32bits(x))
	}
	return p
}

func (p *params) bytes() []byte {
	for len(p.w)%4 != 0 { // uniform bindings are sized in 16-byte units
		p.w = append(p.w, 0)
	}
	out := make([]byte, 4*len(p.w))
	for k, x := range p.w {
		binary.LittleEndian.PutUint32(out[4*k:], x)
	}
	return out
}

// maxGroups is the most workgroups per dimension of a dispatch.
func (b *Backend) maxGroups() uint32 {
	if m := b.limits.MaxComputeWorkgroupsPerDimension; m > 0 {
		return m
	}
	return 65535
}

// groupsFor folds a count of workgroups into a 2D grid (x·y ≥ groups, x ≤ maxDim). Kernels
// recover the linear workgroup index as y·nx + x and skip the surplus of the last row.
func groupsFor(groups int, maxDim uint32) ([3]uint32, error) {
	if groups <= 0 {
		return [3]uint32{0, 1, 1}, nil
	}
	if uint64(groups) <= uint64(maxDim) {
		return [3]uint32{uint32(groups), 1, 1}, nil
	}
	y := (uint64(groups) + uint64(maxDim) - 1) / uint64(maxDim)
	if y > uint64(maxDim) {
		return [3]uint32{}, fmt.Errorf("%d workgroups exceed the device's %d×%d grid", groups, maxDim, maxDim)
	}
	x := (uint64(groups) + y - 1) / y
	return [3]uint32{uint32(x), uint32(y), 1}, nil
}

// ceilDiv is ⌈a/b⌉ for positive b.
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// items returns the grid for n items handled per invocations per workgroup.
func (r *recorder) items(n, per int) ([3]uint32, error) {
	return groupsFor(ceilDiv(n, per), r.b.maxGroups())
}

// dispatch appends a kernel launch.
func (r *recorder) dispatch(name string, consts []shaders.Const, groups [3]uint32, p *params, binds ...bind) {
	if groups[0] == 0 || groups[1] == 0 || groups[2] == 0 {
		return // nothing to do
	}
	var pb []byte
	if p != nil {
		pb = p.bytes()
	}
	r.cmds = append(r.cmds, command{name: name, consts: consts, binds: binds, params: pb, groups: groups})
}

// copy appends a buffer-to-buffer copy of n bytes (rounded up to whole words).
func (r *recorder) copy(dst, src bind, n int64) {
	r.cmds = append(r.cmds, command{src: src.buf, dst: dst.buf, copyLen: uint64((n + 3) &^ 3)})
}

// temp returns a scratch buffer of n bytes bound read-write.
func (r *recorder) temp(n int64) (bind, error) {
	buf, err := r.b.alloc(n)
	if err != nil {
		return bind{}, err
	}
	r.temps = append(r.temps, buf)
	return bind{buf: buf.buf, size: uint64(bindSize(n)), rw: true}, nil
}

func bindSize(n int64) int64 {
	if n < 4 {
		return 4
	}
	return (n + 3) &^ 3
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
		p, err := b.getPipeline(c.name, c.consts, rw, len(c.params) > 0)
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
