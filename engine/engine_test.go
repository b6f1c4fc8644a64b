package engine

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeBackend supports only the ops it lists; it runs nothing.
type fakeBackend struct {
	info DeviceInfo
	ops  map[string]bool
}

func (f *fakeBackend) Device() DeviceInfo            { return f.info }
func (f *fakeBackend) Caps() Caps                    { return Caps{} }
func (f *fakeBackend) Alloc(n int64) (Buffer, error) { return nil, errors.New("fake") }
func (f *fakeBackend) Free(Buffer)                   {}
func (f *fakeBackend) Write(Buffer, int64, []byte) error {
	return errors.New("fake")
}
func (f *fakeBackend) Read(Buffer, int64, []byte) error { return errors.New("fake") }
func (f *fakeBackend) Run([]Launch) error               { return errors.New("fake") }
func (f *fakeBackend) Close() error                     { return nil }
func (f *fakeBackend) Supports(op Op, _ []Meta) error {
	if f.ops[op.Name()] {
		return nil
	}
	return fmt.Errorf("no kernel for %s", op.Name())
}

type fakeProvider struct {
	name string
	devs []DeviceInfo
	fail bool
}

func (p fakeProvider) Name() string                   { return p.name }
func (p fakeProvider) Devices() ([]DeviceInfo, error) { return p.devs, nil }
func (p fakeProvider) Open(i int) (Backend, error) {
	if p.fail {
		return nil, errors.New("device lost")
	}
	for _, d := range p.devs {
		if d.Index == i {
			return &fakeBackend{info: d}, nil
		}
	}
	return nil, errors.New("no such device")
}

func TestBuilderErrorsAreKeptNotPanicked(t *testing.T) {
	g := NewGraph()
	a := g.Input("a", F32, Shape{3, 4})
	b := g.Input("b", F32, Shape{5, 6})
	c := g.MatMul(a, b, false, false) // inner dimensions differ
	d := g.RMSNorm(c, b, 1e-5)        // recorded after the error: placeholder, no panic
	require.NotNil(t, d)
	require.ErrorContains(t, g.Err(), "matmul(f32[3 4], f32[5 6]): inner dimensions differ: 4 and 5")
	_, err := Compile(g, &fakeBackend{}, []*Node{d}, CompileOptions{})
	require.ErrorContains(t, err, "inner dimensions differ")

	g = NewGraph()
	g.Param("w", F16, Shape{2}, true)
	require.ErrorContains(t, g.Err(), "trainable parameters are f32")

	g = NewGraph()
	g.Input("x", F32, Shape{2, 0})
	require.ErrorContains(t, g.Err(), "positive dimensions")

	g = NewGraph()
	x := g.Input("x", F32, Shape{2, 3})
	g.Input("x", F32, Shape{2, 3})
	require.ErrorContains(t, g.Err(), "declared twice")
	_ = x
}

func TestBackwardOnlyWhereTrainableParametersNeedIt(t *testing.T) {
	g := NewGraph()
	x := g.Input("x", F32, Shape{4, 3})
	frozen := g.Param("frozen", F32, Shape{5, 3}, false)
	w := g.Param("w", F32, Shape{2, 5}, true)
	h := g.MatMul(x, frozen, false, true) // needs no gradient: no backward op for it
	y := g.Sum(g.MatMul(h, w, false, true))
	before := len(g.Nodes())
	grads, err := g.Backward(y)
	require.NoError(t, err)
	require.Len(t, grads, 1)
	require.Contains(t, grads, w)
	for _, n := range g.Nodes()[before:] {
		if mm, ok := n.Op().(MatMul); ok {
			// only dW = dYᵀ·h; never dh or d(frozen)
			require.True(t, mm.TransA, "unexpected backward matmul %s", n)
		}
	}

	g = NewGraph()
	x = g.Input("x", F32, Shape{4, 3})
	_, err = g.Backward(g.Sum(x))
	require.ErrorContains(t, err, "depends on no trainable parameter")
}

func TestCompileRejectsOpsTheBackendLacks(t *testing.T) {
	g := NewGraph()
	x := g.Input("x", F32, Shape{4, 3})
	w := g.Param("w", F32, Shape{3}, false)
	y := g.RMSNorm(x, w, 1e-5)
	_, err := Compile(g, &fakeBackend{info: DeviceInfo{Backend: "fake"}, ops: map[string]bool{}}, []*Node{y}, CompileOptions{})
	require.ErrorContains(t, err, "compile: rmsnorm#2 f32[4 3] on fake: no kernel for rmsnorm")
	_, err = Compile(g, &fakeBackend{ops: map[string]bool{"rmsnorm": true}}, []*Node{y}, CompileOptions{})
	require.NoError(t, err)
}

func TestDeviceSpecAndSelection(t *testing.T) {
	for in, want := range map[string]DeviceSpec{
		"": {Index: -1}, "auto": {Index: -1}, "cpu": {Backend: "cpu", Index: -1}, "webgpu:1": {Backend: "webgpu", Index: 1},
	} {
		got, err := ParseDeviceSpec(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseDeviceSpec("vulkan:x")
	require.ErrorContains(t, err, "index must be a non-negative integer")

	cpu := fakeProvider{name: "cpu", devs: []DeviceInfo{{Backend: "cpu", Name: "host", Type: "cpu"}}}
	gpu := fakeProvider{name: "webgpu", devs: []DeviceInfo{
		{Backend: "webgpu", Index: 0, Name: "llvmpipe", Type: "cpu"},
		{Backend: "webgpu", Index: 1, Name: "igpu", Type: "integrated"},
		{Backend: "webgpu", Index: 2, Name: "dgpu", Type: "discrete"},
	}}
	pick := func(spec string, ps ...Provider) (string, error) {
		s, err := ParseDeviceSpec(spec)
		require.NoError(t, err)
		b, err := Select(s, ps)
		if err != nil {
			return "", err
		}
		return b.Device().Name, nil
	}
	name, err := pick("auto", cpu, gpu)
	require.NoError(t, err)
	require.Equal(t, "dgpu", name, "a discrete GPU beats everything")
	name, err = pick("webgpu:1", cpu, gpu)
	require.NoError(t, err)
	require.Equal(t, "igpu", name)
	name, err = pick("auto", fakeProvider{name: "webgpu", devs: gpu.devs[:1]}, cpu)
	require.NoError(t, err)
	require.Equal(t, "host", name, "the native CPU backend beats a software rasteriser")
	_, err = pick("vulkan", cpu, gpu)
	require.ErrorIs(t, err, ErrNoDevice)
	broken := gpu
	broken.fail = true
	name, err = pick("auto", cpu, broken)
	require.NoError(t, err)
	require.Equal(t, "host", name, "a device that fails to open falls back to the next")
}

// An op the backend lacks is no error when the outputs do not need it.
func TestCompileIgnoresUnneededOps(t *testing.T) {
	g := NewGraph()
	x := g.Input("x", F32, Shape{2, 3})
	y := g.Scale(x, 2)
	g.SiLU(x) // the fake backend below refuses silu
	b := &refusing{fakeBackend: &fakeBackend{info: DeviceInfo{Backend: "fake"}}, refuse: "silu"}
	if _, err := Compile(g, b, []*Node{y}, CompileOptions{}); err != nil {
		t.Fatal(err)
	}
}

type refusing struct {
	*fakeBackend
	refuse string
}

func (r *refusing) Supports(op Op, _ []Meta) error {
	if op.Name() == r.refuse {
		return errors.New("refused")
	}
	return nil
}

// DivSqrt's norm operand is detached: a parameter that reaches the loss only through it gets no
// gradient and no backward op is recorded for it; one that reaches it through x does.
func TestDivSqrtDetachesTheNorm(t *testing.T) {
	g := NewGraph()
	x := g.Input("x", F32, Shape{4, 3})
	p := g.Param("p", F32, Shape{3}, true)
	_, err := g.Backward(g.Sum(g.DivSqrt(x, g.Mul(p, p))))
	require.ErrorContains(t, err, "depends on no trainable parameter")

	g = NewGraph()
	m := g.Param("m", F32, Shape{4, 3}, true)
	p = g.Param("p", F32, Shape{3}, true)
	y := g.Sum(g.DivSqrt(m, g.Mul(p, p)))
	before := len(g.Nodes())
	grads, err := g.Backward(y)
	require.NoError(t, err)
	require.Len(t, grads, 1)
	require.Contains(t, grads, m)
	for _, n := range g.Nodes()[before:] {
		_, isMul := n.Op().(Binary)
		require.False(t, isMul && n.Op().(Binary).Fn == Mul, "a backward op was recorded through the detached norm: %s", n)
	}
}
