package cpu

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
)

// chainProgram is x: [1] broadcast to [7, 5], cast to f16 and back through Fill-free kernels that
// allocate nothing themselves, so that what a run allocates is the program's and the backend's.
func chainProgram(t *testing.T, b engine.Backend, length int) (*engine.Program, *engine.Node, *engine.Tensor) {
	t.Helper()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{1})
	y := g.Apply1(engine.Expand{Shape: engine.Shape{7, 5}}, x)
	for range length {
		y = g.Cast(g.Cast(y, engine.F16), engine.F32)
		y = g.Apply1(engine.Expand{Shape: engine.Shape{7, 5}}, g.Reshape(g.Apply1(engine.Fill{Shape: engine.Shape{1}, Value: 0.5}), 1))
	}
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	xt, err := engine.FromFloat32(b, engine.Shape{1}, []float32{1.25})
	require.NoError(t, err)
	require.NoError(t, p.Bind(x, xt))
	return p, y, xt
}

// A prepared program re-runs with no allocation on the CPU: no launch list rebuilt, no check
// repeated.
func TestPreparedRunAllocatesNothing(t *testing.T) {
	b := New()
	p, y, _ := chainProgram(t, b, 6)
	defer p.Release()
	require.NoError(t, p.Run())
	allocs := testing.AllocsPerRun(20, func() {
		if err := p.Run(); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "allocations per run")
	out, err := p.Float32(y)
	require.NoError(t, err)
	require.Equal(t, float32(0.5), out[34])
	require.Equal(t, 22, p.Runs())
}

// Binding another tensor to an input prepares the launches again over its buffer; binding the
// same tensor again keeps them.
func TestPreparedRebind(t *testing.T) {
	b := New()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{3})
	y := g.Scale(x, 2)
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	x1, err := engine.FromFloat32(b, engine.Shape{3}, []float32{1, 2, 3})
	require.NoError(t, err)
	x2, err := engine.FromFloat32(b, engine.Shape{3}, []float32{-4, 5, 0.5})
	require.NoError(t, err)
	require.NoError(t, p.Bind(x, x1))
	require.NoError(t, p.Run())
	out, err := p.Float32(y)
	require.NoError(t, err)
	require.Equal(t, []float32{2, 4, 6}, out)
	require.NoError(t, x1.SetFloat32([]float32{7, 8, 9})) // a new batch in the same tensor
	require.NoError(t, p.Run())
	out, err = p.Float32(y)
	require.NoError(t, err)
	require.Equal(t, []float32{14, 16, 18}, out)
	require.NoError(t, p.Bind(x, x2))
	require.NoError(t, p.Run())
	out, err = p.Float32(y)
	require.NoError(t, err)
	require.Equal(t, []float32{-8, 10, 1}, out)
	x2.Release()
	require.ErrorContains(t, p.Run(), "released")
}

// Prepare checks every launch once: a launch whose output does not match its op is refused
// before anything runs.
func TestPrepareChecks(t *testing.T) {
	b := New()
	x, err := b.Alloc(12)
	require.NoError(t, err)
	y, err := b.Alloc(8)
	require.NoError(t, err)
	m3 := engine.Meta{Shape: engine.Shape{3}, DType: engine.F32}
	_, err = b.Prepare([]engine.Launch{{Op: engine.Scale{S: 2}, In: []engine.Arg{{Buf: x, Meta: m3}}, Out: []engine.Arg{{Buf: y, Meta: m3}}}})
	require.ErrorContains(t, err, "does not fit")
	_, err = b.Prepare([]engine.Launch{{Op: engine.Scale{S: 2}, In: []engine.Arg{{Buf: x, Meta: m3}}, Out: []engine.Arg{{Buf: y, Meta: engine.Meta{Shape: engine.Shape{2}, DType: engine.F32}}}}})
	require.ErrorContains(t, err, "output 0")
}
