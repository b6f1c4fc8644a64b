package vulkan

import (
	"fmt"

	vk "github.com/goki/vulkan"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/gpuplan"
)

// binding is one buffer range a dispatch binds.
type binding struct {
	buf  vk.Buffer
	size int64
}

// step is one recorded command: a dispatch (pipe set) or a copy.
type step struct {
	pipe     *pipeline
	binds    []binding
	params   []byte
	grid     [3]uint32
	src, dst vk.Buffer
	copyLen  int64
}

// program is a launch list recorded once into a command buffer: the plans' pipelines, one
// descriptor set a dispatch from a pool of its own, the parameters of every dispatch in one
// uniform buffer, and the scratch buffers. Run resubmits the command buffer.
type program struct {
	b        *Backend
	steps    []step
	operands []*buffer
	temps    []*buffer
	uniform  *buffer
	pool     vk.DescriptorPool
	cb       vk.CommandBuffer
	released bool
}

// Prepare validates and records launches once.
func (b *Backend) Prepare(launches []engine.Launch) (engine.Executable, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return nil, err
	}
	b.collect()
	p, err := b.build(launches, vk.CommandBufferUsageSimultaneousUseBit)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Run executes the launches in order as one submission; its scratch buffers are freed once it
// has finished.
func (b *Backend) Run(launches []engine.Launch) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	b.collect()
	p, err := b.build(launches, vk.CommandBufferUsageOneTimeSubmitBit)
	if err != nil {
		return err
	}
	if p.cb == nil {
		return nil
	}
	if err := b.submit(p.cb, p.destroyNow); err != nil {
		p.destroyNow()
		return fmt.Errorf("vulkan: run: %w", err)
	}
	return nil
}

// build plans every launch (gpuplan), resolves its buffers, compiles the pipelines and records
// the command buffer.
func (b *Backend) build(launches []engine.Launch, usage vk.CommandBufferUsageFlagBits) (p *program, err error) {
	p = &program{b: b}
	defer func() {
		if err != nil {
			p.destroyNow()
		}
	}()
	seen := map[*buffer]bool{}
	dev := b.planDevice()
	for _, l := range launches {
		if err := p.plan(dev, l, seen); err != nil {
			return nil, fmt.Errorf("vulkan: %s: %w", l.Op.Name(), err)
		}
	}
	if err := p.record(usage); err != nil {
		return nil, fmt.Errorf("vulkan: prepare: %w", err)
	}
	return p, nil
}

// arg is an operand's binding: exactly its bytes, whole words.
func (b *Backend) arg(a engine.Arg) (*buffer, binding, error) {
	buf, err := b.own(a.Buf, "operand")
	if err != nil {
		return nil, binding{}, err
	}
	n := gpuplan.BindSize(a.Meta.Bytes())
	if n > buf.size {
		return nil, binding{}, fmt.Errorf("operand %s does not fit its %d-byte buffer", a.Meta, buf.size)
	}
	if n > int64(b.d.limits.MaxStorageBufferRange) {
		return nil, binding{}, fmt.Errorf("%w: operand %s exceeds the %d-byte binding limit", ErrTooLarge, a.Meta, b.d.limits.MaxStorageBufferRange)
	}
	return buf, binding{buf: buf.buf, size: n}, nil
}

func (p *program) plan(dev gpuplan.Device, l engine.Launch, seen map[*buffer]bool) error {
	b := p.b
	plan, err := gpuplan.Launch(dev, l)
	if err != nil {
		return err
	}
	in := make([]binding, len(l.In))
	out := make([]binding, len(l.Out))
	for k, args := range [][]engine.Arg{l.In, l.Out} {
		dst := in
		if k == 1 {
			dst = out
		}
		for i, a := range args {
			buf, bd, err := b.arg(a)
			if err != nil {
				return err
			}
			dst[i] = bd
			if !seen[buf] {
				seen[buf] = true
				p.operands = append(p.operands, buf)
			}
		}
	}
	temps := make([]binding, len(plan.Temps))
	for i, n := range plan.Temps {
		t, err := b.alloc(n, false)
		if err != nil {
			return err
		}
		p.temps = append(p.temps, t)
		temps[i] = binding{buf: t.buf, size: gpuplan.BindSize(n)}
	}
	resolve := func(r gpuplan.Ref) binding {
		switch r.Kind {
		case gpuplan.In:
			return in[r.Index]
		case gpuplan.Out:
			return out[r.Index]
		case gpuplan.Temp:
			return temps[r.Index]
		}
		return binding{buf: b.fault.buf, size: 4}
	}
	for _, c := range plan.Cmds {
		if c.Kernel == "" {
			p.steps = append(p.steps, step{src: resolve(c.Src).buf, dst: resolve(c.Dst).buf, copyLen: c.CopyBytes})
			continue
		}
		pl, grid, err := b.pipelineFor(c)
		if err != nil {
			return err
		}
		s := step{pipe: pl, params: c.Params, grid: grid}
		for _, r := range c.Binds {
			s.binds = append(s.binds, resolve(r))
		}
		p.steps = append(p.steps, s)
	}
	return nil
}

// pipelineFor returns the pipeline and grid of a planned dispatch: the GLSL tier's module where it
// replaces the kernel (glslTier.choose), else naga's translation of the WGSL.
func (b *Backend) pipelineFor(c gpuplan.Cmd) (*pipeline, [3]uint32, error) {
	if b.glslOn() {
		ch, ok, err := b.tier.choose(c)
		if err != nil {
			return nil, c.Grid, err
		}
		if ok {
			pl, err := b.getGLSLPipeline(ch, len(c.Binds), len(c.Params) > 0)
			return pl, ch.grid, err
		}
	}
	pl, err := b.getPipeline(c.Kernel, c.Consts, c.Subgroups, len(c.Binds), len(c.Params) > 0)
	return pl, c.Grid, err
}

// record lays the parameters out in one uniform buffer, writes one descriptor set per dispatch
// and records the command buffer.
func (p *program) record(usage vk.CommandBufferUsageFlagBits) error {
	b := p.b
	if len(p.steps) == 0 {
		return nil
	}
	align := int64(b.d.limits.MinUniformBufferOffsetAlignment)
	if align < 16 {
		align = 16
	}
	offs := make([]int64, len(p.steps))
	total := int64(0)
	sets, storage, uniforms := 0, 0, 0
	for i, s := range p.steps {
		if s.pipe == nil {
			continue
		}
		sets++
		storage += len(s.binds)
		if len(s.params) > 0 {
			uniforms++
			offs[i] = total
			total += (int64(len(s.params)) + align - 1) / align * align
		}
	}
	if total > 0 {
		u, err := b.alloc(total, true)
		if err != nil {
			return fmt.Errorf("parameters: %w", err)
		}
		p.uniform = u
		for i, s := range p.steps {
			if len(s.params) > 0 {
				copy(unsafeBytes(u, offs[i], len(s.params)), s.params)
			}
		}
	}
	descSets := make([]vk.DescriptorSet, len(p.steps))
	if sets > 0 {
		var sizes []vk.DescriptorPoolSize
		if storage > 0 {
			sizes = append(sizes, vk.DescriptorPoolSize{Type: vk.DescriptorTypeStorageBuffer, DescriptorCount: uint32(storage)})
		}
		if uniforms > 0 {
			sizes = append(sizes, vk.DescriptorPoolSize{Type: vk.DescriptorTypeUniformBuffer, DescriptorCount: uint32(uniforms)})
		}
		var pool vk.DescriptorPool
		if err := vkErr("create descriptor pool", vk.CreateDescriptorPool(b.dev, &vk.DescriptorPoolCreateInfo{SType: vk.StructureTypeDescriptorPoolCreateInfo,
			MaxSets: uint32(sets), PoolSizeCount: uint32(len(sizes)), PPoolSizes: sizes}, nil, &pool)); err != nil {
			return err
		}
		p.pool = pool
		for i, s := range p.steps {
			if s.pipe == nil {
				continue
			}
			var set vk.DescriptorSet
			if err := vkErr("allocate descriptor set", vk.AllocateDescriptorSets(b.dev, &vk.DescriptorSetAllocateInfo{SType: vk.StructureTypeDescriptorSetAllocateInfo,
				DescriptorPool: pool, DescriptorSetCount: 1, PSetLayouts: []vk.DescriptorSetLayout{s.pipe.dsl}}, &set)); err != nil {
				return err
			}
			descSets[i] = set
			binds := make([]bufferBinding, 0, len(s.binds)+1)
			for _, bd := range s.binds {
				binds = append(binds, bufferBinding{buf: bd.buf, size: uint64(bd.size)})
			}
			if len(s.params) > 0 {
				binds = append(binds, bufferBinding{buf: p.uniform.buf, off: uint64(offs[i]), size: uint64(len(s.params)), uniform: true})
			}
			if err := b.calls.writeBuffers(set, binds); err != nil {
				return err
			}
		}
	}
	cb, err := b.newCommandBuffer(usage)
	if err != nil {
		return err
	}
	p.cb = cb
	for i, s := range p.steps {
		if i > 0 {
			b.barrier(cb)
		}
		if s.pipe == nil {
			b.calls.copy(cb, s.src, s.dst, 0, 0, uint64(s.copyLen))
			continue
		}
		vk.CmdBindPipeline(cb, vk.PipelineBindPointCompute, s.pipe.pipe)
		vk.CmdBindDescriptorSets(cb, vk.PipelineBindPointCompute, s.pipe.layout, 0, 1, []vk.DescriptorSet{descSets[i]}, 0, nil)
		vk.CmdDispatch(cb, s.grid[0], s.grid[1], s.grid[2])
	}
	return vkErr("end command buffer", vk.EndCommandBuffer(cb))
}

// Run submits the recorded command buffer again.
func (p *program) Run() error {
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.released {
		return fmt.Errorf("vulkan: run: the prepared launches were released")
	}
	if err := b.check(); err != nil {
		return err
	}
	for _, o := range p.operands {
		if o.freed {
			return fmt.Errorf("vulkan: run: an operand: %w", ErrFreed)
		}
	}
	if p.cb == nil {
		return nil
	}
	b.collect()
	if err := b.submit(p.cb, nil); err != nil {
		return fmt.Errorf("vulkan: run: %w", err)
	}
	return nil
}

// Release frees what Prepare made once the submissions that use it have finished.
func (p *program) Release() {
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.released {
		return
	}
	p.released = true
	if b.closed {
		return
	}
	b.later(p.destroyNow)
}

// destroyNow frees the program's objects; no pending submission may use them.
func (p *program) destroyNow() {
	b := p.b
	for _, t := range p.temps {
		b.freeNow(t)
	}
	if p.uniform != nil {
		b.freeNow(p.uniform)
	}
	if p.pool != nil {
		vk.DestroyDescriptorPool(b.dev, p.pool, nil)
	}
	if p.cb != nil {
		b.freeCommandBuffer(p.cb)
	}
	p.temps, p.uniform, p.pool, p.cb = nil, nil, nil, nil
}
