package webgpu

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/gpuplan"
)

// planDevice is what the shared planner (engine/gpuplan) needs to know of this device.
func (b *Backend) planDevice() gpuplan.Device {
	return gpuplan.Device{MaxGroups: b.maxGroups(), WorkgroupStorage: int(b.limits.MaxComputeWorkgroupStorageSize),
		MaxBinding: int64(b.limits.MaxStorageBufferBindingSize), Subgroups: b.subgroups(), PerQueryRows: b.perQueryRows, F16: b.f16}
}

// SetF16Arithmetic selects the f16-arithmetic kernel variants for the programs prepared after it
// (engine.F16Arithmetic); the device must have shader-f16.
func (b *Backend) SetF16Arithmetic(on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on && !b.caps.ShaderF16 {
		return fmt.Errorf("webgpu: %s has no shader-f16 for the f16 kernels", b.info.Name)
	}
	b.f16 = on
	return nil
}

// Supports reports whether a kernel exists for op with these operands (gpuplan.Supports): what
// the kernels assume is checked at compile time, not at run time.
func (b *Backend) Supports(op engine.Op, in []engine.Meta) error {
	if err := gpuplan.Supports(b.planDevice(), op, in); err != nil {
		return fmt.Errorf("webgpu: %w", err)
	}
	return nil
}

// Run executes the launches in order as one command submission.
func (b *Backend) Run(launches []engine.Launch) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	r := &recorder{b: b}
	defer r.release()
	defer func() {
		if p := recover(); p != nil { // the binding panics on some native failures
			err = fmt.Errorf("webgpu: run: %v", p)
		}
	}()
	for _, l := range launches {
		if err := r.launch(l); err != nil {
			return fmt.Errorf("webgpu: %s: %w", l.Op.Name(), err)
		}
	}
	if err := r.submit(); err != nil {
		return fmt.Errorf("webgpu: run: %w", err)
	}
	return nil
}

// arg turns an operand into a binding of exactly its bytes (whole words).
func (r *recorder) arg(a engine.Arg) (bind, error) {
	buf, err := r.b.own(a.Buf, "operand")
	if err != nil {
		return bind{}, err
	}
	n := gpuplan.BindSize(a.Meta.Bytes())
	if n > buf.size {
		return bind{}, fmt.Errorf("operand %s does not fit its %d-byte buffer", a.Meta, buf.size)
	}
	if n > int64(r.b.limits.MaxStorageBufferBindingSize) {
		return bind{}, fmt.Errorf("%w: operand %s exceeds the %d-byte binding limit", ErrTooLarge, a.Meta, r.b.limits.MaxStorageBufferBindingSize)
	}
	return bind{buf: buf.buf, size: uint64(n)}, nil
}

// launch plans l (gpuplan.Launch) and records its commands over this device's buffers: the
// operands, scratch buffers for the plan's temps, and the fault flag.
func (r *recorder) launch(l engine.Launch) error {
	plan, err := gpuplan.Launch(r.planDevice(), l)
	if err != nil {
		return err
	}
	in := make([]bind, len(l.In))
	for i, a := range l.In {
		if in[i], err = r.arg(a); err != nil {
			return err
		}
	}
	out := make([]bind, len(l.Out))
	for i, a := range l.Out {
		if out[i], err = r.arg(a); err != nil {
			return err
		}
	}
	temps := make([]bind, len(plan.Temps))
	for i, n := range plan.Temps {
		if temps[i], err = r.temp(n); err != nil {
			return err
		}
	}
	resolve := func(ref gpuplan.Ref) bind {
		var x bind
		switch ref.Kind {
		case gpuplan.In:
			x = in[ref.Index]
		case gpuplan.Out:
			x = out[ref.Index]
		case gpuplan.Temp:
			x = temps[ref.Index]
		case gpuplan.Fault:
			x = bind{buf: r.b.fault, size: 4}
		}
		x.rw = ref.RW
		return x
	}
	for _, c := range plan.Cmds {
		if c.Kernel == "" {
			r.copy(resolve(c.Dst), resolve(c.Src), c.CopyBytes)
			continue
		}
		binds := make([]bind, len(c.Binds))
		for i, ref := range c.Binds {
			binds[i] = resolve(ref)
		}
		r.dispatch(c.Kernel, c.Consts, c.Subgroups, c.Grid, c.Params, binds...)
	}
	return nil
}

// planDevice is the recorder's backend's planDevice.
func (r *recorder) planDevice() gpuplan.Device { return r.b.planDevice() }
