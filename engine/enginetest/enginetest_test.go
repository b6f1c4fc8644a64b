package enginetest_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
)

// The CPU backend against itself: proves every case builds, compiles, writes all of its outputs
// and is deterministic. GPU backends run the same suite against the CPU.
func TestConformanceCPU(t *testing.T) { enginetest.Run(t, cpu.New(), cpu.New()) }

// planted is the CPU backend with one wrong kernel: after op runs, fault rewrites its outputs.
type planted struct {
	// An interface, not *cpu.Backend: the CPU's Prepare must not be promoted past Run.
	engine.Backend
	op    string
	fault func(v []float32)
	// swallow turns every error of Run into success (a backend that skips bad launches).
	swallow bool
}

func (p *planted) Run(launches []engine.Launch) error {
	for _, l := range launches {
		err := p.Backend.Run([]engine.Launch{l})
		if p.swallow {
			continue
		}
		if err != nil {
			return err
		}
		if l.Op.Name() != p.op {
			continue
		}
		for _, o := range l.Out {
			if o.Meta.DType != engine.F32 {
				continue
			}
			raw := make([]byte, o.Meta.Bytes())
			if err := p.Read(o.Buf, 0, raw); err != nil {
				return err
			}
			v := unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), len(raw)/4)
			p.fault(v)
			if err := p.Write(o.Buf, 0, raw); err != nil {
				return err
			}
		}
	}
	return nil
}

func maxAbs(v []float32) float32 {
	var m float32
	for _, x := range v {
		m = max(m, float32(math.Abs(float64(x))))
	}
	return m
}

// faults are the ways a kernel goes wrong that the suite must catch.
var faults = map[string]func(v []float32){
	"zero":      func(v []float32) { clear(v) },
	"zero_tail": func(v []float32) { clear(v[len(v)-max(1, len(v)/8):]) },
	"skip_tail": func(v []float32) { // the last quarter left unwritten (poisoned)
		for i := len(v) - max(1, len(v)/4); i < len(v); i++ {
			v[i] = float32(math.NaN())
		}
	},
	"shift": func(v []float32) {
		s := 1e-3 * maxAbs(v)
		for i := range v {
			v[i] += s
		}
	},
	"scale": func(v []float32) {
		for i := range v {
			v[i] *= 1.001
		}
	},
	"one_element": func(v []float32) { v[len(v)/2] += 0.01 * maxAbs(v) },
}

// TestSuiteCatchesPlantedKernels plants each fault in kernels whose outputs are mostly small
// (softmax, its backward, cross-entropy's backward: an absolute tolerance passed a kernel that
// wrote 0 on most of them) and in the matrix product, and shows that check mode fails.
func TestSuiteCatchesPlantedKernels(t *testing.T) {
	ref := cpu.New()
	byName := map[string]enginetest.Case{}
	for _, c := range enginetest.OpCases() {
		byName[c.Name] = c
	}
	for _, op := range []string{"softmax", "softmax_backward", "cross_entropy_backward", "matmul", "rmsnorm"} {
		c, ok := byName[op]
		if op == "matmul" {
			c, ok = byName["matmul/nt"]
		}
		require.True(t, ok, op)
		require.NoError(t, enginetest.Verify(c, &planted{Backend: cpu.New(), op: "none"}, ref), "the unplanted backend passes %s", op)
		for name, f := range faults {
			err := enginetest.Verify(c, &planted{Backend: cpu.New(), op: op, fault: f}, ref)
			require.Error(t, err, "%s with fault %s passed", op, name)
		}
	}
}

// TestGradCheckCatchesWrongBackward plants a wrong backward kernel (a gradient 1% off) that
// check mode against a reference would need a reference to catch: the finite differences
// through the backend catch it alone.
func TestGradCheckCatchesWrongBackward(t *testing.T) {
	cases := map[string]enginetest.GradCase{}
	for _, c := range enginetest.GradCases() {
		cases[c.Name] = c
	}
	for op, cs := range map[string]string{"lora_backward": "lora/dense", "rmsnorm_backward": "rmsnorm", "attention_backward": "attention", "softmax_backward": "softmax"} {
		c := cases[cs]
		require.NoError(t, enginetest.VerifyGrad(c, cpu.New()), cs)
		err := enginetest.VerifyGrad(c, &planted{Backend: cpu.New(), op: op, fault: func(v []float32) {
			for i := range v {
				v[i] *= 1.05
			}
		}})
		require.Error(t, err, "a wrong %s passed the gradient check", op)
	}
}

// TestErrorParityCatchesSkippedLaunches: a backend that skips bad launches silently fails every
// error case.
func TestErrorParityCatchesSkippedLaunches(t *testing.T) {
	for _, c := range enginetest.ErrorCases() {
		require.NoError(t, enginetest.VerifyError(c, cpu.New()), c.Name)
		require.Error(t, enginetest.VerifyError(c, &planted{Backend: cpu.New(), swallow: true}), c.Name)
	}
}

// TestCoreOnlyBackendPassesTheSuite: a backend with only the core ops passes check mode and the
// finite-difference gradients: the compiler's decompositions of the fast paths (fused LoRA with
// dropout, dense and 4-bit, its backward, SwiGLU, IA3's backward) compute what the fused kernels
// compute.
func TestCoreOnlyBackendPassesTheSuite(t *testing.T) {
	b := enginetest.CoreOnly(cpu.New())
	decomposed := 0
	for _, c := range enginetest.Cases(b.Caps().Tiles) {
		require.NoError(t, enginetest.Verify(c, b, cpu.New()), c.Name)
		decomposed++
	}
	for _, c := range enginetest.GradCases() {
		require.NoError(t, enginetest.VerifyGrad(c, b), c.Name)
	}
	require.NotZero(t, decomposed)
	// The fast path is really refused: a fused LoRA compiles into several core launches.
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{3, 4})
	y := g.LoRA(x, g.Input("w", engine.F32, engine.Shape{5, 4}), g.Input("a", engine.F32, engine.Shape{2, 4}), g.Input("b", engine.F32, engine.Shape{5, 2}), 1)
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	require.Equal(t, 5, p.Launches(), "x·Wᵀ, x·Aᵀ, (x·Aᵀ)·Bᵀ, scale, add")
	p, err = engine.Compile(g, cpu.New(), []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, p.Launches())
}

// The core-only backend reports the same bad launches (through the decomposed gathers too).
func TestCoreOnlyBackendErrorParity(t *testing.T) {
	for _, c := range enginetest.ErrorCases() {
		require.NoError(t, enginetest.VerifyError(c, enginetest.CoreOnly(cpu.New())), c.Name)
	}
}

// Decompositions follow checkpointing: a block of fused LoRA layers, recomputed before its
// backward pass, gives the CPU's gradients on the core-only backend; compiling leaves the graph
// as it was built.
func TestCoreOnlyRecomputeAndGraphUntouched(t *testing.T) {
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{6, 8})
	w := g.Input("w", engine.F32, engine.Shape{8, 8})
	seed := g.Input("seed", engine.I32, engine.Shape{1})
	a := g.Param("a", engine.F32, engine.Shape{2, 8}, true)
	b := g.Param("b", engine.F32, engine.Shape{8, 2}, true)
	g.BeginBlock()
	h := x
	for i := range 2 {
		h = g.SwiGLU(g.Apply(engine.LoRA{Scale: 0.5, Dropout: 0.25, Salt: uint32(i)}, h, w, a, b, seed)[0], h)
	}
	g.EndBlock()
	loss := g.Sum(g.Mul(h, h))
	grads, err := g.Backward(loss)
	require.NoError(t, err)
	nodes := len(g.Nodes())
	vals := map[string][]float32{}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []*engine.Node{x, w, a, b} {
		v := make([]float32, n.Shape().Numel())
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.5)
		}
		vals[n.Name()] = v
	}
	var res [2][][]float32
	for i, be := range []engine.Backend{cpu.New(), enginetest.CoreOnly(cpu.New())} {
		p, err := engine.Compile(g, be, []*engine.Node{loss, grads[a], grads[b]}, engine.CompileOptions{Recompute: true})
		require.NoError(t, err)
		require.Len(t, g.Nodes(), nodes, "compiling changed the graph")
		for _, n := range []*engine.Node{x, w, a, b} {
			tt, err := engine.FromFloat32(be, n.Shape(), vals[n.Name()])
			require.NoError(t, err)
			require.NoError(t, p.Bind(n, tt))
		}
		s, err := engine.FromInt32(be, engine.Shape{1}, []int32{5})
		require.NoError(t, err)
		require.NoError(t, p.Bind(seed, s))
		require.NoError(t, p.Run())
		for _, o := range []*engine.Node{loss, grads[a], grads[b]} {
			v, err := p.Float32(o)
			require.NoError(t, err)
			res[i] = append(res[i], v)
		}
	}
	for k := range res[0] {
		require.NoError(t, enginetest.Compare(res[0][k], res[1][k], 1e-5), "output %d", k)
	}
}

// BenchmarkLoRADropoutStep times the forward and backward of one LoRA layer with dropout (the
// trainer's default) at a 1B model's shape, fused (the CPU backend) and decomposed into core ops
// (the core-only wrapper: what peft recorded by hand before the fused ops took the mask).
func BenchmarkLoRADropoutStep(b *testing.B) {
	const rows, din, dout, r = 512, 2048, 2048, 16
	for _, be := range []engine.Backend{cpu.New(), enginetest.CoreOnly(cpu.New())} {
		b.Run(be.Device().Backend, func(b *testing.B) {
			g := engine.NewGraph()
			x := g.Input("x", engine.F32, engine.Shape{rows, din})
			w := g.Input("w", engine.F32, engine.Shape{dout, din})
			seed := g.Input("seed", engine.I32, engine.Shape{1})
			a := g.Param("a", engine.F32, engine.Shape{r, din}, true)
			bb := g.Param("b", engine.F32, engine.Shape{dout, r}, true)
			y := g.Apply(engine.LoRA{Scale: 2, Dropout: 0.05, Salt: 1}, x, w, a, bb, seed)[0]
			loss := g.Sum(g.Mul(y, y))
			grads, err := g.Backward(loss)
			require.NoError(b, err)
			p, err := engine.Compile(g, be, []*engine.Node{loss, grads[a], grads[bb]}, engine.CompileOptions{})
			require.NoError(b, err)
			rng := rand.New(rand.NewPCG(1, 1))
			for _, n := range []*engine.Node{x, w, a, bb} {
				v := make([]float32, n.Shape().Numel())
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
				t, err := engine.FromFloat32(be, n.Shape(), v)
				require.NoError(b, err)
				require.NoError(b, p.Bind(n, t))
			}
			s, err := engine.FromInt32(be, engine.Shape{1}, []int32{3})
			require.NoError(b, err)
			require.NoError(b, p.Bind(seed, s))
			b.ResetTimer()
			for range b.N {
				require.NoError(b, p.Run())
			}
		})
	}
}

// noHalf is the CPU backend with Caps.Weights16 off: a backend (WebGPU today) whose Supports
// accepts LoRA but whose kernels read f32 weights only.
type noHalf struct{ engine.Backend }

func (n noHalf) Caps() engine.Caps {
	c := n.Backend.Caps()
	c.Weights16 = false
	return c
}

// A backend without Weights16 gets every op that reads a 16-bit weight decomposed (the weight cast
// to f32, then the f32 op), even ops its Supports accepts, and computes what the CPU's 16-bit
// kernels compute: the fast paths against the plain ones.
func TestWeights16OffDecomposes(t *testing.T) {
	b := noHalf{cpu.New()}
	n := 0
	for _, c := range enginetest.Cases(b.Caps().Tiles) {
		if strings.Contains(c.Name, "16") && (strings.Contains(c.Name, "matmul16") || strings.Contains(c.Name, "embedding16") || strings.HasSuffix(c.Name, "f16")) {
			require.NoError(t, enginetest.Verify(c, b, cpu.New()), c.Name)
			n++
		}
	}
	require.GreaterOrEqual(t, n, 10)
	for _, c := range enginetest.GradCases() {
		if strings.Contains(c.Name, "16") {
			require.NoError(t, enginetest.VerifyGrad(c, b), c.Name)
		}
	}
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{3, 4})
	w := g.Input("w", engine.BF16, engine.Shape{5, 4})
	y := g.LoRA(x, w, g.Input("a", engine.F32, engine.Shape{2, 4}), g.Input("b", engine.F32, engine.Shape{5, 2}), 1)
	p, err := engine.Compile(g, b, []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	require.Equal(t, 6, p.Launches(), "cast, x·Wᵀ, x·Aᵀ, (x·Aᵀ)·Bᵀ, scale, add")
	p, err = engine.Compile(g, cpu.New(), []*engine.Node{y}, engine.CompileOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, p.Launches())
}
