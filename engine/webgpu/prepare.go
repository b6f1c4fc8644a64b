package webgpu

import (
	"fmt"

	"github.com/oliverbestmann/webgpu/wgpu"

	"github.com/lathe-ml/lathe/engine"
)

// prepared is a launch list recorded once: every launch validated and turned into dispatches, the
// pipelines compiled, one bind group per dispatch, and the parameters of all dispatches written
// once into a uniform buffer of its own. Run encodes the dispatches into one command buffer and
// submits it: no validation, no pipeline lookup, no bind group, no parameter upload.
type prepared struct {
	b        *Backend
	cmds     []preparedCmd
	operands []*buffer // the launches' buffers: Run refuses to run over a freed one
	temps    []*buffer // scratch buffers the dispatches use, held until Release
	uniform  *wgpu.Buffer
	groups   []*wgpu.BindGroup
	released bool
}

// preparedCmd is a dispatch (pipe set) or a buffer-to-buffer copy.
type preparedCmd struct {
	pipe     *wgpu.ComputePipeline
	group    *wgpu.BindGroup
	grid     [3]uint32
	src, dst *wgpu.Buffer
	copyLen  uint64
}

// Prepare validates and records launches once (see prepared).
func (b *Backend) Prepare(launches []engine.Launch) (ex engine.Executable, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return nil, err
	}
	r := &recorder{b: b}
	p := &prepared{b: b}
	defer func() {
		if rec := recover(); rec != nil { // the binding panics on some native failures
			err = fmt.Errorf("webgpu: prepare: %v", rec)
		}
		if err != nil {
			r.release()
			p.releaseLocked()
		}
	}()
	seen := map[*buffer]bool{}
	for _, l := range launches {
		if err := r.launch(l); err != nil {
			return nil, fmt.Errorf("webgpu: %s: %w", l.Op.Name(), err)
		}
		for _, a := range append(append([]engine.Arg(nil), l.In...), l.Out...) {
			if buf, ok := a.Buf.(*buffer); ok && !seen[buf] {
				seen[buf] = true
				p.operands = append(p.operands, buf)
			}
		}
	}
	if err := p.build(r); err != nil {
		return nil, fmt.Errorf("webgpu: prepare: %w", err)
	}
	// The scratch buffers now belong to the prepared list, not to one submission.
	p.temps, r.temps = r.temps, nil
	return p, nil
}

// build resolves the recorder's commands: pipelines, the uniform buffer and the bind groups.
func (p *prepared) build(r *recorder) error {
	b := p.b
	offs, total := r.paramOffsets()
	if total > 0 {
		u, err := b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe prepared params", Usage: wgpu.BufferUsageUniform | wgpu.BufferUsageCopyDst, Size: total})
		if err != nil {
			return fmt.Errorf("params buffer: %w", err)
		}
		p.uniform = u
		data := make([]byte, total)
		for k, c := range r.cmds {
			copy(data[offs[k]:], c.params)
		}
		if err := b.queue.TryWriteBuffer(u, 0, data); err != nil {
			return fmt.Errorf("params: %w", err)
		}
	}
	for k, c := range r.cmds {
		if c.src != nil {
			p.cmds = append(p.cmds, preparedCmd{src: c.src, dst: c.dst, copyLen: c.copyLen})
			continue
		}
		rw := make([]bool, len(c.binds))
		for i, bd := range c.binds {
			rw[i] = bd.rw
		}
		pl, err := b.getPipeline(c.name, c.consts, c.subgroups, rw, len(c.params) > 0)
		if err != nil {
			return err
		}
		entries := make([]wgpu.BindGroupEntry, 0, len(c.binds)+1)
		for i, bd := range c.binds {
			entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i), Buffer: bd.buf, Size: bd.size})
		}
		if len(c.params) > 0 {
			entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(len(c.binds)), Buffer: p.uniform, Offset: offs[k], Size: uint64(len(c.params))})
		}
		bg, err := b.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Label: c.name, Layout: pl.layout, Entries: entries})
		if err != nil {
			return fmt.Errorf("kernel %s: %w", c.name, err)
		}
		p.groups = append(p.groups, bg)
		p.cmds = append(p.cmds, preparedCmd{pipe: pl.pipe, group: bg, grid: c.groups})
	}
	return nil
}

// Run encodes the prepared commands into one command buffer and submits it.
func (p *prepared) Run() (err error) {
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.released {
		return fmt.Errorf("webgpu: run: the prepared launches were released")
	}
	if err := b.check(); err != nil {
		return err
	}
	for _, o := range p.operands {
		if o.freed {
			return fmt.Errorf("webgpu: run: an operand: %w", ErrFreed)
		}
	}
	if len(p.cmds) == 0 {
		return nil
	}
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("webgpu: run: %v", rec)
		}
	}()
	enc, err := b.dev.TryCreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("webgpu: run: %w", err)
	}
	defer enc.Release()
	first := b.submitSlot()
	var pass *wgpu.ComputePassEncoder
	for i := range p.cmds {
		c := &p.cmds[i]
		if c.pipe == nil {
			if pass != nil {
				err := pass.TryEnd()
				pass.Release()
				pass = nil
				if err != nil {
					return fmt.Errorf("webgpu: run: %w", err)
				}
			}
			if err := enc.TryCopyBufferToBuffer(c.src, 0, c.dst, 0, c.copyLen); err != nil {
				return fmt.Errorf("webgpu: run: %w", err)
			}
			continue
		}
		if pass == nil {
			pass = b.beginPass(enc)
		}
		pass.SetPipeline(c.pipe)
		pass.SetBindGroup(0, c.group, nil)
		pass.DispatchWorkgroups(c.grid[0], c.grid[1], c.grid[2])
	}
	if pass != nil {
		err := pass.TryEnd()
		pass.Release()
		if err != nil {
			return fmt.Errorf("webgpu: run: %w", err)
		}
	}
	if err := b.resolveTimes(enc, first); err != nil {
		return fmt.Errorf("webgpu: run: %w", err)
	}
	cmd, err := enc.TryFinish(nil)
	if err != nil {
		return fmt.Errorf("webgpu: run: %w", err)
	}
	b.queue.Submit(cmd)
	cmd.Release()
	return nil
}

// Release frees the bind groups, the parameter buffer and the scratch buffers.
func (p *prepared) Release() {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	p.releaseLocked()
}

func (p *prepared) releaseLocked() {
	if p.released {
		return
	}
	p.released = true
	if p.b.closed {
		return // the device took everything with it
	}
	for _, g := range p.groups {
		g.Release()
	}
	if p.uniform != nil {
		p.uniform.Release()
	}
	for _, t := range p.temps {
		p.b.release(t)
	}
	p.groups, p.uniform, p.temps, p.cmds = nil, nil, nil, nil
}
