package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine"
)

// F16Options are the suite's options for an f16-arithmetic kernel set: its matmul rounds both
// operands to f16 (relative error up to 2⁻¹¹ each) and accumulates in f32, so outputs are held to
// 2e-3 of their scale (per element and as NMSE; on lavapipe all pass at 1e-3); finite differences
// take a 5e-2 step (1e-2 is within a few f16 steps of an operand near 1) at the usual 1e-2.
var F16Options = Options{MinTol: 2e-3, GradTol: 1e-2, GradEps: 5e-2}

// VerifyF16MatMul checks a backend's f16-arithmetic matmul (engine.F16Arithmetic, already turned
// on) against a float64 reference: its operands rounded to f16 (round to nearest even), the
// products and sums exact. A kernel that accumulates in f32 matches that reference to f32
// rounding (1e-5 of the output's scale); and it must round: the unrounded product differs by
// more, so a backend that ran its f32 kernels fails. Shapes are off the tiles, in every transpose.
func VerifyF16MatMul(b engine.Backend) error {
	r := rand.New(rand.NewPCG(7, 13))
	const m, n, k = 67, 45, 37
	for _, tr := range transposes {
		av, bv := make([]float32, m*k), make([]float32, k*n)
		for i := range av {
			av[i] = float32(r.NormFloat64())
		}
		for i := range bv {
			bv[i] = float32(r.NormFloat64())
		}
		at := func(i, kk int) int { // a(i, kk)
			if tr[0] {
				return kk*m + i
			}
			return i*k + kk
		}
		bt := func(kk, j int) int {
			if tr[1] {
				return j*k + kk
			}
			return kk*n + j
		}
		sa, sb := engine.Shape{m, k}, engine.Shape{k, n}
		if tr[0] {
			sa = engine.Shape{k, m}
		}
		if tr[1] {
			sb = engine.Shape{n, k}
		}
		g := engine.NewGraph()
		x, w := g.Input("a", engine.F32, sa), g.Input("b", engine.F32, sb)
		y := g.MatMul(x, w, tr[0], tr[1])
		p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
		if err != nil {
			return err
		}
		xa, err := engine.FromFloat32(b, sa, av)
		if err != nil {
			return err
		}
		wb, err := engine.FromFloat32(b, sb, bv)
		if err != nil {
			return err
		}
		if err := p.Bind(x, xa); err != nil {
			return err
		}
		if err := p.Bind(w, wb); err != nil {
			return err
		}
		if err := p.Run(); err != nil {
			return err
		}
		got, err := p.Float32(y)
		if err != nil {
			return err
		}
		h := func(v float32) float64 { return float64(float16.Fromfloat32(v).Float32()) }
		var scale, worstRounded, worstExact float64
		for i := range m {
			for j := range n {
				var rounded, exact float64
				for kk := range k {
					a, bb := av[at(i, kk)], bv[bt(kk, j)]
					rounded += h(a) * h(bb)
					exact += float64(a) * float64(bb)
				}
				gv := float64(got[i*n+j])
				scale = math.Max(scale, math.Abs(rounded))
				worstRounded = math.Max(worstRounded, math.Abs(gv-rounded))
				worstExact = math.Max(worstExact, math.Abs(gv-exact))
			}
		}
		xa.Release()
		wb.Release()
		p.Release()
		if worstRounded > 1e-5*scale {
			return fmt.Errorf("%s: |f16 kernel − float64 of f16 operands| = %.3g > 1e-5·%.3g", trName(tr), worstRounded, scale)
		}
		if worstExact <= 1e-5*scale {
			return fmt.Errorf("%s: the f16 kernel equals the unrounded product (|diff| %.3g): its operands were not rounded to f16", trName(tr), worstExact)
		}
	}
	return nil
}
