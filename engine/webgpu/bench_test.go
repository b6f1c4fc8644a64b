package webgpu

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/gpuplan"
	"github.com/lathe-ml/lathe/quant"
)

// benchCase is one kernel benchmark: a graph built for a shape, its work in flops and bytes moved
// (the minimum traffic: every operand read once, every output written once).
type benchCase struct {
	name  string
	flops float64
	bytes float64
	build func(g *engine.Graph) (outs []*engine.Node)
}

// benchShapes picks shapes: realistic ones on a GPU, small ones on a software adapter, where the
// numbers only prove that the kernels run (lavapipe says nothing about speed).
func benchShapes(b *Backend) (rows, din, dout, rank int) {
	if b.info.Type == "cpu" {
		return 32, 256, 256, 8
	}
	return 512, 4096, 4096, 16
}

func benchCases(rows, din, dout, rank int) []benchCase {
	const bs = 64
	q := engine.QuantSpec{Type: quant.NF4, Blocksize: bs, N: dout, K: din}
	qin := func(g *engine.Graph) (*engine.Node, *engine.Node) {
		return g.Input("packed", engine.U8, engine.Shape{dout * din / 2}), g.Input("absmax", engine.F32, engine.Shape{gpuplan.CeilDiv(dout*din, bs)})
	}
	wbytes := float64(dout*din)/2 + 4*float64(gpuplan.CeilDiv(dout*din, bs))
	f := func(x int) float64 { return float64(x) }
	s := float32(2)
	return []benchCase{
		{"nf4_gemv", 2 * f(dout*din), wbytes + 4*f(din+dout), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			return []*engine.Node{g.QMatMul(g.Input("x", engine.F32, engine.Shape{1, din}), p, a, q)}
		}},
		{"nf4_gemm", 2 * f(rows*dout*din), wbytes + 4*f(rows*(din+dout)), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			return []*engine.Node{g.QMatMul(g.Input("x", engine.F32, engine.Shape{rows, din}), p, a, q)}
		}},
		{"lora_fwd_fused", 2 * f(rows*dout*din+rows*rank*(din+dout)), wbytes + 4*f(rows*(din+dout+rank)+rank*(din+dout)), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			x := g.Input("x", engine.F32, engine.Shape{rows, din})
			return g.Apply(engine.LoRA{Scale: s, Quant: &q}, x, p, a, g.Input("A", engine.F32, engine.Shape{rank, din}), g.Input("B", engine.F32, engine.Shape{dout, rank}))[:1]
		}},
		{"lora_fwd_unfused", 2 * f(rows*dout*din+rows*rank*(din+dout)), wbytes + 4*f(rows*(din+dout+rank)+rank*(din+dout)), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			x := g.Input("x", engine.F32, engine.Shape{rows, din})
			base := g.QMatMul(x, p, a, q)
			xa := g.MatMul(x, g.Input("A", engine.F32, engine.Shape{rank, din}), false, true)
			l := g.MatMul(xa, g.Input("B", engine.F32, engine.Shape{dout, rank}), false, true)
			return []*engine.Node{g.Add(base, g.Scale(l, s))}
		}},
		{"lora_bwd_fused", 2 * f(rows*dout*din+3*rows*rank*(din+dout)), wbytes + 4*f(rows*(2*din+dout+rank)+2*rank*(din+dout)), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			dy, x := g.Input("dy", engine.F32, engine.Shape{rows, dout}), g.Input("x", engine.F32, engine.Shape{rows, din})
			A, B := g.Input("A", engine.F32, engine.Shape{rank, din}), g.Input("B", engine.F32, engine.Shape{dout, rank})
			xa := g.Input("xa", engine.F32, engine.Shape{rows, rank})
			return g.Apply(engine.LoRABackward{Scale: s, Quant: &q, NeedX: true, NeedA: true, NeedB: true}, dy, x, p, a, A, B, xa)[:3]
		}},
		{"lora_bwd_unfused", 2 * f(rows*dout*din+3*rows*rank*(din+dout)), wbytes + 4*f(rows*(2*din+dout+rank)+2*rank*(din+dout)), func(g *engine.Graph) []*engine.Node {
			p, a := qin(g)
			dy, x := g.Input("dy", engine.F32, engine.Shape{rows, dout}), g.Input("x", engine.F32, engine.Shape{rows, din})
			A, B := g.Input("A", engine.F32, engine.Shape{rank, din}), g.Input("B", engine.F32, engine.Shape{dout, rank})
			xa := g.Input("xa", engine.F32, engine.Shape{rows, rank})
			t := g.MatMul(dy, B, false, false)
			dx := g.Add(g.Apply1(engine.QMatMul{Quant: q, TransW: true}, dy, p, a), g.Scale(g.MatMul(t, A, false, false), s))
			dA := g.Scale(g.MatMul(t, x, true, false), s)
			dB := g.Scale(g.MatMul(dy, xa, true, false), s)
			return []*engine.Node{dx, dA, dB}
		}},
		{"ia3_fwd", f(rows * din), 4 * f(2*rows*din+din), func(g *engine.Graph) []*engine.Node {
			return []*engine.Node{g.ScaleCols(g.Input("x", engine.F32, engine.Shape{rows, din}), g.Input("l", engine.F32, engine.Shape{din}))}
		}},
		{"ia3_bwd", 3 * f(rows*din), 4 * f(4*rows*din+2*din), func(g *engine.Graph) []*engine.Node {
			dy, x := g.Input("dy", engine.F32, engine.Shape{rows, din}), g.Input("x", engine.F32, engine.Shape{rows, din})
			return g.Apply(engine.ScaleColsBackward{NeedX: true, NeedL: true}, dy, x, g.Input("l", engine.F32, engine.Shape{din}))[:2]
		}},
	}
}

// prepare compiles c on be and binds random inputs; the returned run executes one step and waits.
// measure times case c on be after a warm-up run (pipelines, buffers) and reports its GFLOP/s
// and GB/s.
func measure(b *testing.B, be engine.Backend, c benchCase) {
	run, done := prepare(b, be, c)
	defer done()
	if err := run(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(c.bytes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(c.flops/sec/1e9, "GFLOP/s")
	b.ReportMetric(c.bytes/sec/1e9, "GB/s")
}

func prepare(tb testing.TB, be engine.Backend, c benchCase) (run func() error, done func()) {
	g := engine.NewGraph()
	outs := c.build(g)
	if err := g.Err(); err != nil {
		tb.Fatal(err)
	}
	p, err := engine.Compile(g, be, outs, engine.CompileOptions{})
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
		} else if n.DType() == engine.I32 {
			// i32 inputs are cache rows: 0, 1, 2, ... (a prefill of slot 0).
			v := make([]int32, n.Shape().Numel())
			for i := range v {
				v[i] = int32(i)
			}
			t, err = engine.FromInt32(be, n.Shape(), v)
		} else {
			v := make([]float32, n.Shape().Numel())
			for i := range v {
				v[i] = float32(r.NormFloat64() * 0.1)
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
		a, err := p.Arg(outs[0]) // reading one word waits for the submission
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

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r == ',' || r == '(' || r == ')' {
			return '_'
		}
		return r
	}, s)
}

// BenchmarkKernels times each kernel on the first WebGPU adapter and on the CPU backend in the
// same run, reporting GFLOP/s and GB/s.
func BenchmarkKernels(b *testing.B) {
	gb := openTest(b)
	rows, din, dout, rank := benchShapes(gb)
	b.Logf("adapter %q (%s); shapes rows=%d in=%d out=%d rank=%d", gb.info.Name, gb.info.Type, rows, din, dout, rank)
	backends := []struct {
		name string
		be   engine.Backend
	}{{"webgpu=" + sanitize(gb.info.Name), gb}, {"cpu", cpu.New()}}
	for _, c := range benchCases(rows, din, dout, rank) {
		for _, be := range backends {
			b.Run(fmt.Sprintf("%s/%s/rows=%d", c.name, be.name, rows), func(b *testing.B) {
				measure(b, be.be, c)
			})
		}
	}
}

// BenchmarkCachedPrefill times attention over a KV cache for a prefill of one sequence, with the
// tiled rows kernel (K and V tiles shared by a workgroup's queries) and with the per-query kernel
// (each query reads its keys itself).
func BenchmarkCachedPrefill(b *testing.B) {
	gb := openTest(b)
	const queries, heads, kvHeads, hd, stride = 256, 8, 2, 64, 512
	a := engine.Attention{Batch: 1, QLen: queries, KVLen: stride, Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125, KVStride: stride}
	f := func(x int) float64 { return float64(x) }
	c := benchCase{"cached_prefill",
		4 * f(heads*hd*queries*(queries+1)/2), // two dot products of hd a (query, key seen)
		4 * f(2*queries*heads*hd+2*queries*kvHeads*hd+heads*queries+queries),
		func(g *engine.Graph) []*engine.Node {
			q := g.Input("q", engine.F32, engine.Shape{queries, heads * hd})
			k, v := g.Input("k", engine.F32, engine.Shape{stride, kvHeads * hd}), g.Input("v", engine.F32, engine.Shape{stride, kvHeads * hd})
			return g.Apply(a, q, k, v, g.Input("rows", engine.I32, engine.Shape{queries}))
		}}
	b.Logf("adapter %q (%s)", gb.info.Name, gb.info.Type)
	for _, perQuery := range []bool{false, true} {
		kernel := "tiled"
		if perQuery {
			kernel = "per_query"
		}
		b.Run(fmt.Sprintf("%s/%s/webgpu=%s/queries=%d", c.name, kernel, sanitize(gb.info.Name), queries), func(b *testing.B) {
			gb.perQueryRows = perQuery
			defer func() { gb.perQueryRows = false }()
			measure(b, gb, c)
		})
	}
}

// BenchmarkDecodeGEMV times the NF4 GEMV of a decode step with the kernels the caps choose (the
// subgroup reduction across K where the device has subgroups) and with the base kernel set.
func BenchmarkDecodeGEMV(b *testing.B) {
	gb := openTest(b)
	rows, din, dout, rank := benchShapes(gb)
	c := benchCases(rows, din, dout, rank)[0] // nf4_gemv
	b.Logf("adapter %q (%s); caps %+v", gb.info.Name, gb.info.Type, gb.Caps())
	for _, plain := range []bool{false, true} {
		kernel := "caps"
		if plain {
			kernel = "plain"
		}
		b.Run(fmt.Sprintf("%s/%s/webgpu=%s/in=%d/out=%d", c.name, kernel, sanitize(gb.info.Name), din, dout), func(b *testing.B) {
			gb.plain = plain
			defer func() { gb.plain = false }()
			measure(b, gb, c)
		})
	}
}
