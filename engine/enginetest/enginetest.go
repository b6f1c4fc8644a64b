// Package enginetest is the conformance suite every backend runs: each op, forward and backward,
// on random inputs with odd shapes that are not multiples of any tile, against a reference backend
// (engine/cpu), with the outputs poisoned (NaN) before each run so that an unwritten element fails.
//
//	func TestConformance(t *testing.T) { enginetest.Run(t, myBackend, cpu.New()) }
package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine"
)

// Leaf is an input of a case with its host data (one of F32, I32, U8 is set).
type Leaf struct {
	Node *engine.Node
	F32  []float32
	I32  []int32
	U8   []byte
}

// Case is one conformance check: a graph of one op (or a few), its inputs, and the tolerance: the
// largest |got − want| allowed, relative to max(1, max |want|) of each output.
type Case struct {
	Name  string
	Tol   float64
	Build func(g *engine.Graph, r *rand.Rand) ([]Leaf, []*engine.Node)
}

// Run runs every case of Cases on b and on ref and compares the outputs.
func Run(t *testing.T, b, ref engine.Backend) {
	for _, c := range append(append(Cases(), CacheCases()...), RowCases()...) {
		t.Run(c.Name, func(t *testing.T) { Check(t, c, b, ref) })
	}
}

// Check runs one case on b and ref and compares their outputs.
func Check(t *testing.T, c Case, b, ref engine.Backend) {
	t.Helper()
	g := engine.NewGraph()
	leaves, outs := c.Build(g, rand.New(rand.NewPCG(uint64(len(c.Name)), 0x1a7e)))
	require.NoError(t, g.Err())
	got := runOn(t, b, g, leaves, outs)
	want := runOn(t, ref, g, leaves, outs)
	for i := range outs {
		compare(t, fmt.Sprintf("output %d (%s)", i, outs[i].Meta()), want[i], got[i], c.Tol)
	}
}

func runOn(t *testing.T, b engine.Backend, g *engine.Graph, leaves []Leaf, outs []*engine.Node) [][]float32 {
	t.Helper()
	p, err := engine.Compile(g, b, outs, engine.CompileOptions{})
	require.NoError(t, err, "compile on %s", b.Device().Backend)
	defer p.Release()
	for _, l := range leaves {
		var x *engine.Tensor
		var err error
		switch {
		case l.F32 != nil:
			x, err = engine.FromFloat32(b, l.Node.Shape(), l.F32)
		case l.I32 != nil:
			x, err = engine.FromInt32(b, l.Node.Shape(), l.I32)
		default:
			x, err = engine.FromBytes(b, l.Node.DType(), l.Node.Shape(), l.U8)
		}
		require.NoError(t, err)
		defer x.Release()
		require.NoError(t, p.Bind(l.Node, x))
	}
	require.NoError(t, p.Poison())
	require.NoError(t, p.Run(), "run on %s", b.Device().Backend)
	res := make([][]float32, len(outs))
	for i, o := range outs {
		if o.DType() != engine.F32 { // compare other float types through a cast on the host
			a, err := p.Arg(o)
			require.NoError(t, err)
			raw := make([]byte, a.Meta.Bytes())
			require.NoError(t, b.Read(a.Buf, 0, raw))
			res[i] = halfToFloat32(o.DType(), raw)
			continue
		}
		res[i], err = p.Float32(o)
		require.NoError(t, err)
	}
	return res
}

func halfToFloat32(dt engine.DType, raw []byte) []float32 {
	out := make([]float32, len(raw)/2)
	for i := range out {
		h := uint16(raw[2*i]) | uint16(raw[2*i+1])<<8
		if dt == engine.BF16 {
			out[i] = math.Float32frombits(uint32(h) << 16)
		} else {
			out[i] = float16.Frombits(h).Float32()
		}
	}
	return out
}

func compare(t *testing.T, what string, want, got []float32, tol float64) {
	t.Helper()
	require.Len(t, got, len(want), what)
	scale := 1.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	worst, at := 0.0, -1
	for i := range want {
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(want[i])) {
			require.Failf(t, "unwritten or NaN element", "%s[%d]: got %v, want %v", what, i, got[i], want[i])
		}
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > worst {
			worst, at = d, i
		}
	}
	if worst > tol*scale {
		require.Failf(t, "outside tolerance", "%s[%d]: got %v, want %v (|diff| %.3g > %.3g)", what, at, got[at], want[at], worst, tol*scale)
	}
}
