package webgpu

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
)

// scaleChain compiles y = x·1.5·1.5… (length launches) over an input of n elements.
func scaleChain(t *testing.T, b engine.Backend, n, length int) (*engine.Program, *engine.Node) {
	t.Helper()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{n})
	y := x
	for range length {
		y = g.Scale(y, 1.5)
	}
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(i%7) - 3
	}
	xt, err := engine.FromFloat32(b, engine.Shape{n}, data)
	require.NoError(t, err)
	t.Cleanup(xt.Release)
	require.NoError(t, p.Bind(x, xt))
	t.Cleanup(p.Release)
	return p, y
}

// A prepared program resubmits its dispatches without re-validating them, rebuilding pipeline
// keys or creating bind groups: what a run allocates on the host is the binding's constant cost
// of one command encoder and one submission, the same for 3 launches as for 40.
func TestPreparedRunAllocations(t *testing.T) {
	b := openTest(t)
	short, _ := scaleChain(t, b, 1000, 3)
	long, y := scaleChain(t, b, 1000, 40)
	allocs := func(p *engine.Program) float64 {
		require.NoError(t, p.Run())
		return testing.AllocsPerRun(10, func() {
			if err := p.Run(); err != nil {
				t.Fatal(err)
			}
		})
	}
	a3, a40 := allocs(short), allocs(long)
	t.Logf("allocations per run: %v with 3 launches, %v with 40", a3, a40)
	require.Equal(t, a3, a40, "a run's allocations must not grow with its launches")
	require.LessOrEqual(t, a40, 16.0)
	out, err := long.Float32(y)
	require.NoError(t, err)
	want := float32(6 - 3) // element 6 is 3
	for range 40 {
		want *= 1.5
	}
	require.InEpsilon(t, want, out[6], 1e-5)
}

// A prepared program refuses to run over a freed operand instead of reading a buffer the pool
// has handed to someone else.
func TestPreparedFreedOperand(t *testing.T) {
	b := openTest(t)
	x, err := b.Alloc(16)
	require.NoError(t, err)
	y, err := b.Alloc(16)
	require.NoError(t, err)
	m := engine.Meta{Shape: engine.Shape{4}, DType: engine.F32}
	ex, err := b.Prepare([]engine.Launch{{Op: engine.Scale{S: 2}, In: []engine.Arg{{Buf: x, Meta: m}}, Out: []engine.Arg{{Buf: y, Meta: m}}}})
	require.NoError(t, err)
	defer ex.Release()
	require.NoError(t, ex.Run())
	b.Free(x)
	require.ErrorIs(t, ex.Run(), ErrFreed)
	b.Free(y)
}
