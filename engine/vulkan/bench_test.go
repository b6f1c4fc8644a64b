package vulkan

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/quant"
)

// BenchmarkGLSLTier times the kernels the GLSL tier replaces against naga's translation of the
// WGSL on the same device, back to back (glsl, then naga, per shape; -count repeats each):
// NF4 decode GEMV, NF4 GEMM, f32 GEMM. On a software device (lavapipe) the shapes are small and
// the figures show only that both paths run.
//
//	go test -run '^$' -bench GLSLTier -count 3 ./engine/vulkan/
func BenchmarkGLSLTier(b *testing.B) {
	vb := openTest(b)
	n, k, m := 4096, 4096, 512
	if vb.d.info.Type == "cpu" {
		n, k, m = 1024, 1024, 64
	}
	q := engine.QuantSpec{Type: quant.NF4, Blocksize: 64, N: n, K: k}
	cases := []struct {
		name  string
		flops float64
		build func(g *engine.Graph) *engine.Node
	}{
		{fmt.Sprintf("nf4_gemv/1x%dx%d", n, k), 2 * float64(n*k), func(g *engine.Graph) *engine.Node {
			return g.QMatMul(g.Input("x", engine.F32, engine.Shape{1, k}), g.Input("w", engine.U8, engine.Shape{n * k / 2}), g.Input("s", engine.F32, engine.Shape{n * k / 64}), q)
		}},
		{fmt.Sprintf("nf4_gemm/%dx%dx%d", m, n, k), 2 * float64(m*n*k), func(g *engine.Graph) *engine.Node {
			return g.QMatMul(g.Input("x", engine.F32, engine.Shape{m, k}), g.Input("w", engine.U8, engine.Shape{n * k / 2}), g.Input("s", engine.F32, engine.Shape{n * k / 64}), q)
		}},
		{fmt.Sprintf("f32_gemm/%dx%dx%d", m, n, k), 2 * float64(m*n*k), func(g *engine.Graph) *engine.Node {
			return g.MatMul(g.Input("x", engine.F32, engine.Shape{m, k}), g.Input("w", engine.F32, engine.Shape{n, k}), false, true)
		}},
	}
	b.Logf("device %s (%s); GLSL tier %+v", vb.d.info.Name, vb.d.info.Type, vb.tier)
	for _, c := range cases {
		for _, glsl := range []bool{true, false} {
			path := map[bool]string{true: "glsl", false: "naga"}[glsl]
			b.Run(c.name+"/"+path, func(b *testing.B) {
				vb.UseGLSL(glsl)
				defer vb.UseGLSL(true)
				run, done := prepareBench(b, vb, c.build)
				defer done()
				if err := run(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := run(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(c.flops/(b.Elapsed().Seconds()/float64(b.N))/1e9, "GFLOP/s")
			})
		}
	}
}

// prepareBench compiles one output on be with random inputs bound; run runs it and waits (a
// 4-byte read of the output).
func prepareBench(tb testing.TB, be engine.Backend, build func(g *engine.Graph) *engine.Node) (run func() error, done func()) {
	g := engine.NewGraph()
	out := build(g)
	if err := g.Err(); err != nil {
		tb.Fatal(err)
	}
	p, err := engine.Compile(g, be, []*engine.Node{out}, engine.CompileOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var ts []*engine.Tensor
	for _, n := range p.Leaves() {
		var t *engine.Tensor
		if n.DType() == engine.U8 {
			raw := make([]byte, n.Shape().Numel())
			for i := range raw {
				raw[i] = byte(r.IntN(256))
			}
			t, err = engine.FromBytes(be, engine.U8, n.Shape(), raw)
		} else {
			v := make([]float32, n.Shape().Numel())
			for i := range v {
				v[i] = float32(0.05 + r.Float64())
			}
			t, err = engine.FromFloat32(be, n.Shape(), v)
		}
		if err != nil {
			tb.Fatal(err)
		}
		ts = append(ts, t)
		if err := p.Bind(n, t); err != nil {
			tb.Fatal(err)
		}
	}
	probe := make([]byte, 4)
	run = func() error {
		if err := p.Run(); err != nil {
			return err
		}
		a, err := p.Arg(out)
		if err != nil {
			return err
		}
		return be.Read(a.Buf, 0, probe)
	}
	return run, func() {
		p.Release()
		for _, t := range ts {
			t.Release()
		}
	}
}
