package cpu

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
)

// runGraph binds leaves (by node) and returns the outputs' values after one run on the CPU.
func runGraph(t *testing.T, g *engine.Graph, leaves map[*engine.Node][]float32, outs ...*engine.Node) [][]float32 {
	t.Helper()
	p, err := engine.Compile(g, cpuBackend, outs, engine.CompileOptions{})
	require.NoError(t, err)
	defer p.Release()
	for n, v := range leaves {
		require.NoError(t, p.Bind(n, tensor(t, n.Shape(), v)))
	}
	require.NoError(t, p.Run())
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i], err = p.Float32(o)
		require.NoError(t, err)
	}
	return res
}

// adamw64 is torch.optim.AdamW's update of one element in float64, the gradient already scaled.
func adamw64(p, g, m, v float64, step int, lr, b1, b2, eps, wd float64) (float64, float64, float64) {
	m = b1*m + (1-b1)*g
	v = b2*v + (1-b2)*g*g
	p *= 1 - lr*wd
	mh := m / (1 - math.Pow(b1, float64(step)))
	vh := v / (1 - math.Pow(b2, float64(step)))
	return p - lr*mh/(math.Sqrt(vh)+eps), m, v
}

// The optimizer's ops against float64 references: the sum of squares over tensors, the clip
// decision, AdamW with the clipped gradient, and a skipped step that changes nothing.
func TestOptimizerOpsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	shapes := []engine.Shape{{7, 9}, {5}, {3, 11}}
	for _, clip := range []float32{0, 1, 1e6} {
		g := engine.NewGraph()
		leaves := map[*engine.Node][]float32{}
		var grads []*engine.Node
		var want float64
		for i, s := range shapes {
			n := g.Input("g"+string(rune('a'+i)), engine.F32, s)
			v := randn(r, s.Numel(), 0.7)
			leaves[n] = v
			grads = append(grads, n)
			for _, x := range v {
				want += float64(x) * float64(x)
			}
		}
		ctl := g.Input("ctl", engine.F32, engine.Shape{engine.CtlLen})
		leaves[ctl] = []float32{2e-2, 0.25, 4}
		loss := g.Input("loss", engine.F32, engine.Shape{1})
		leaves[loss] = []float32{3.5}
		ss := g.SumSquaresN(grads...)
		st := g.ClipStatus(loss, ss, ctl, clip)
		s := shapes[0]
		pn, mn, vn := g.Input("p", engine.F32, s), g.Input("m", engine.F32, s), g.Input("v", engine.F32, s)
		p0, m0, v0 := randn(r, s.Numel(), 1), randn(r, s.Numel(), 0.1), make([]float32, s.Numel())
		for i := range v0 {
			v0[i] = float32(0.001 + 0.01*r.Float64())
		}
		leaves[pn], leaves[mn], leaves[vn] = p0, m0, v0
		upd := g.Apply(engine.AdamWStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}, pn, grads[0], mn, vn, st, ctl)
		out := runGraph(t, g, leaves, append([]*engine.Node{ss, st}, upd...)...)
		require.InEpsilon(t, want, float64(out[0][0]), 1e-6, "sum of squares")
		norm := math.Sqrt(want) * 0.25
		coef := 0.25
		if clip > 0 && norm > float64(clip) {
			coef *= float64(clip) / (norm + 1e-6)
		}
		require.Equal(t, []float32{3.5, out[0][0], out[1][engine.StatusCoef], 0}, out[1])
		require.InEpsilon(t, coef, float64(out[1][engine.StatusCoef]), 1e-6, "coefficient, clip %v", clip)
		for i := range p0 {
			gi := float64(leaves[grads[0]][i]) * coef
			wp, wm, wv := adamw64(float64(p0[i]), gi, float64(m0[i]), float64(v0[i]), 4, 2e-2, 0.9, 0.999, 1e-8, 0.1)
			require.InDelta(t, wp, float64(out[2][i]), 1e-5*math.Max(1, math.Abs(wp)), "p[%d]", i)
			require.InDelta(t, wm, float64(out[3][i]), 1e-5*math.Max(1e-3, math.Abs(wm)), "m[%d]", i)
			require.InDelta(t, wv, float64(out[4][i]), 1e-5*math.Abs(wv), "v[%d]", i)
			require.NotEqual(t, p0[i], out[2][i])
		}
	}
}

// A non-finite loss or gradient sets the skip flag; the update then leaves p, m and v bit for bit.
func TestOptimizerSkip(t *testing.T) {
	for _, c := range []struct {
		name string
		loss float32
		bad  float32
	}{{"nan gradient", 1, float32(math.NaN())}, {"inf gradient", 1, float32(math.Inf(-1))}, {"inf loss", float32(math.Inf(1)), 0.5}, {"nan loss", float32(math.NaN()), 0.5}} {
		t.Run(c.name, func(t *testing.T) {
			g := engine.NewGraph()
			s := engine.Shape{4}
			gn, ctl, loss := g.Input("g", engine.F32, s), g.Input("ctl", engine.F32, engine.Shape{engine.CtlLen}), g.Input("loss", engine.F32, engine.Shape{1})
			pn, mn, vn := g.Input("p", engine.F32, s), g.Input("m", engine.F32, s), g.Input("v", engine.F32, s)
			st := g.ClipStatus(loss, g.SumSquaresN(gn), ctl, 1)
			upd := g.Apply(engine.AdamWStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, pn, gn, mn, vn, st, ctl)
			p0, m0, v0 := []float32{1, -2, 3, 0.5}, []float32{0.1, 0.2, -0.3, 0.05}, []float32{0.01, 0.02, 0.03, 0.04}
			out := runGraph(t, g, map[*engine.Node][]float32{gn: {0.1, c.bad, 0.3, -0.2}, ctl: {1e-2, 1, 2}, loss: {c.loss},
				pn: p0, mn: m0, vn: v0}, append([]*engine.Node{st}, upd...)...)
			require.Equal(t, float32(1), out[0][engine.StatusSkip])
			require.Equal(t, p0, out[1])
			require.Equal(t, m0, out[2])
			require.Equal(t, v0, out[3])
		})
	}
}

// Accumulate sums in place in f32, as Add does.
func TestAccumulateReference(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	s := engine.Shape{3, 17}
	g := engine.NewGraph()
	acc, x, y := g.Input("acc", engine.F32, s), g.Input("x", engine.F32, s), g.Input("y", engine.F32, s)
	out := g.Apply1(engine.Accumulate{}, g.Apply1(engine.Accumulate{Overwrite: true}, acc, x), y)
	xv, yv := randn(r, s.Numel(), 1), randn(r, s.Numel(), 1)
	res := runGraph(t, g, map[*engine.Node][]float32{acc: randn(r, s.Numel(), 5), x: xv, y: yv}, out)
	for i := range xv {
		require.Equal(t, xv[i]+yv[i], res[0][i])
	}
}

// TopK against a sort of each row (value descending, index ascending), with ties, NaNs skipped
// and a row with fewer numbers than k.
func TestTopKReference(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	const rows, v, k = 4, 97, 9
	x := randn(r, rows*v, 1)
	for i := range x {
		x[i] = float32(math.Round(float64(x[i])*3) / 3) // ties
	}
	x[5], x[v+3] = float32(math.NaN()), float32(math.Inf(1))
	for i := 3 * v; i < 4*v; i++ {
		x[i] = float32(math.NaN())
	}
	x[3*v+10], x[3*v+50] = 2, 7
	g := engine.NewGraph()
	xn := g.Input("x", engine.F32, engine.Shape{rows, v})
	out := runGraph(t, g, map[*engine.Node][]float32{xn: x}, g.TopK(xn, k))[0]
	for row := range rows {
		var idx []int
		for i := range v {
			if !math.IsNaN(float64(x[row*v+i])) {
				idx = append(idx, i)
			}
		}
		sort.SliceStable(idx, func(a, b int) bool { return x[row*v+idx[a]] > x[row*v+idx[b]] })
		for j := range k {
			got := out[(row*k+j)*2 : (row*k+j)*2+2]
			if j >= len(idx) {
				require.Equal(t, []float32{float32(math.Inf(-1)), -1}, got, "row %d slot %d", row, j)
				continue
			}
			require.Equal(t, []float32{x[row*v+idx[j]], float32(idx[j])}, got, "row %d slot %d", row, j)
		}
	}
}

// Accumulate on spans packs tensors into one buffer at offsets and unpacks them, leaving the rest
// of the destination as it was; spans outside an operand are refused when the graph is built, on
// every backend alike (Infer).
func TestAccumulateSpanReference(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	g := engine.NewGraph()
	a, b := g.Input("a", engine.F32, engine.Shape{3, 5}), g.Input("b", engine.F32, engine.Shape{4})
	fused := g.Input("fused", engine.F32, engine.Shape{23})
	f := g.Apply1(engine.Accumulate{Overwrite: true, Dst: 1, N: 15}, fused, a)
	f = g.Apply1(engine.Accumulate{Overwrite: true, Dst: 17, N: 4}, f, b)
	f = g.Apply1(engine.Accumulate{Dst: 17, N: 4}, f, b)
	backIn := g.Input("back", engine.F32, engine.Shape{3, 5})
	back := g.Apply1(engine.Accumulate{Overwrite: true, Src: 1, N: 15}, backIn, f)
	av, bv, fv := randn(r, 15, 1), randn(r, 4, 1), randn(r, 23, 3)
	res := runGraph(t, g, map[*engine.Node][]float32{a: av, b: bv, fused: append([]float32(nil), fv...),
		backIn: randn(r, 15, 1)}, f, back)
	want := append([]float32(nil), fv...)
	copy(want[1:], av)
	for i, v := range bv {
		want[17+i] = v + v
	}
	require.Equal(t, want, res[0])
	require.Equal(t, av, res[1])

	for _, bad := range []engine.Accumulate{{N: 16}, {Dst: 9, N: 15}, {Src: 1, N: 15}, {Dst: 3}, {N: -1}} {
		g := engine.NewGraph()
		g.Apply1(bad, g.Input("acc", engine.F32, engine.Shape{23}), g.Input("x", engine.F32, engine.Shape{15}))
		require.Error(t, g.Err(), "%+v", bad)
	}
}
