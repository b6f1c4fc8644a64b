// Package enginetest is the conformance suite, the whole contract of a backend: a backend is
// correct when it passes every case here.
//
//   - Check mode: each op, forward and backward (partial gradients too: only dx, only dW), on random
//     inputs against a reference backend (engine/cpu), with shapes derived from the backend's own
//     tile sizes (Caps().Tiles: below, at and above a tile multiple, odd, both sides of its
//     single-pass/two-pass and decode/prefill switches) and outputs poisoned (NaN) before each run
//     so that an unwritten element fails.
//   - Gradients: finite differences through the backend itself for every differentiable op.
//   - Error parity: the same bad launch (a row outside a KV cache, a token id outside the
//     vocabulary, ...) is an error on every backend, from Run or, on a backend that runs
//     asynchronously, from the next Read.
//
// Outputs are judged per element and as a whole, relative to each output's own scale: every
// |got − want| ≤ Tol·max|want|, and the normalised mean squared error Σ(got − want)²/Σwant² ≤ Tol²
// (ggml's NMSE), so that a kernel that zeroes, shifts or skips part of its output fails.
//
// With LATHE_TIMING=1 the suite also prints the time of every check case on the backend.
//
//	func TestConformance(t *testing.T) { enginetest.Run(t, myBackend, cpu.New()) }
package enginetest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"

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

// Case is one conformance check: a graph of one op (or a few), its inputs, and the tolerance Tol
// relative to each output's scale (see the package doc). Tol 0 asks for exact equality.
type Case struct {
	Name  string
	Tol   float64
	Build func(g *engine.Graph, r *rand.Rand) ([]Leaf, []*engine.Node)
}

// Run runs the whole suite on b, with ref (engine/cpu) as the reference of check mode.
func Run(t *testing.T, b, ref engine.Backend) { RunWith(t, b, ref, Options{}) }

// Options adapt the suite to a kernel set whose arithmetic is less exact than the f32 reference by
// design (the f16-arithmetic variants, engine.F16Arithmetic). The zero value is the strict suite.
type Options struct {
	// MinTol raises the tolerance of every inexact check case (Tol > 0) to at least MinTol; exact
	// cases (Tol 0: gathers, casts, copies) stay exact.
	MinTol float64
	// GradTol and GradEps, when positive, replace the finite-difference checks' tolerance and step
	// (a step of 1e-2 is below f16's resolution of operands near 1 after rounding).
	GradTol float64
	GradEps float32
}

// RunWith is Run with the suite's tolerances adapted by o.
func RunWith(t *testing.T, b, ref engine.Backend, o Options) {
	tiles := b.Caps().Tiles
	t.Run("check", func(t *testing.T) {
		for _, c := range Cases(tiles) {
			if c.Tol > 0 && c.Tol < o.MinTol {
				c.Tol = o.MinTol
			}
			t.Run(c.Name, func(t *testing.T) { Check(t, c, b, ref) })
		}
	})
	eps := float32(1e-2)
	if o.GradEps > 0 {
		eps = o.GradEps
	}
	t.Run("grad", func(t *testing.T) {
		for _, c := range GradCases() {
			if o.GradTol > 0 {
				c.Tol = o.GradTol
			}
			t.Run(c.Name, func(t *testing.T) {
				if err := verifyGrad(c, b, eps); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, c := range ErrorCases() {
			t.Run(c.Name, func(t *testing.T) {
				if err := VerifyError(c, b); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	t.Run("launch", func(t *testing.T) {
		if err := VerifyInPlace(b, ref); err != nil {
			t.Fatal(err)
		}
	})
}

// Seed is a case's random seed: a hash of its name, so that every case draws its own inputs.
func Seed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// Check runs one case on b and ref and fails t if their outputs differ.
func Check(t testing.TB, c Case, b, ref engine.Backend) {
	t.Helper()
	if err := Verify(c, b, ref); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("LATHE_TIMING") == "1" {
		wall, gpu, launches, err := TimeGPU(c, b)
		if err != nil {
			t.Fatal(err)
		}
		gpuText := "gpu n/a"
		if gpu > 0 {
			gpuText = fmt.Sprintf("gpu %9.3f ms", float64(gpu.Nanoseconds())/1e6)
		}
		t.Logf("timing %-40s %-8s wall %9.3f ms, %s a run (%d launches)", c.Name, b.Device().Backend, float64(wall.Nanoseconds())/1e6, gpuText, launches)
	}
}

// Verify runs one case on b and ref and returns what differs, nil when the outputs agree.
func Verify(c Case, b, ref engine.Backend) error {
	g := engine.NewGraph()
	leaves, outs := c.Build(g, rand.New(rand.NewPCG(Seed(c.Name), 0x1a7e)))
	if err := g.Err(); err != nil {
		return fmt.Errorf("%s: build: %w", c.Name, err)
	}
	want, err := runOn(ref, g, leaves, outs)
	if err != nil {
		return fmt.Errorf("%s on the reference: %w", c.Name, err)
	}
	got, err := runOn(b, g, leaves, outs)
	if err != nil {
		return fmt.Errorf("%s on %s: %w", c.Name, b.Device().Backend, err)
	}
	var errs []error
	for i := range outs {
		if err := Compare(want[i], got[i], c.Tol); err != nil {
			errs = append(errs, fmt.Errorf("%s: output %d (%s): %w", c.Name, i, outs[i].Meta(), err))
		}
	}
	return errors.Join(errs...)
}

// TimeGPU runs a case's program on b until about 50 ms have passed (at least 3 runs, each waited
// for) and returns the mean wall time of one run, the kernel time a run takes as the device
// measures it (engine.GPUTimer, on devices with timestamps; 0 elsewhere) and its launches.
func TimeGPU(c Case, b engine.Backend) (wall, gpu time.Duration, launches int, err error) {
	timer, _ := b.(engine.GPUTimer)
	if !b.Caps().Timestamps {
		timer = nil
	}
	g := engine.NewGraph()
	leaves, outs := c.Build(g, rand.New(rand.NewPCG(Seed(c.Name), 0x1a7e)))
	p, free, err := prepare(b, g, leaves, outs)
	if err != nil {
		return 0, 0, 0, err
	}
	defer free()
	wait := func() error { // a read of one element waits for the run
		a, err := p.Arg(outs[0])
		if err != nil {
			return err
		}
		return b.Read(a.Buf, 0, make([]byte, 4))
	}
	if err := p.Run(); err != nil { // warm-up: pipelines, buffers
		return 0, 0, 0, err
	}
	if err := wait(); err != nil {
		return 0, 0, 0, err
	}
	if timer != nil {
		if err := timer.SetGPUTiming(true); err != nil {
			return 0, 0, 0, err
		}
		defer timer.SetGPUTiming(false)
	}
	start := time.Now()
	n := 0
	for n < 3 || time.Since(start) < 50*time.Millisecond {
		if err := p.Run(); err != nil {
			return 0, 0, 0, err
		}
		if err := wait(); err != nil {
			return 0, 0, 0, err
		}
		if timer != nil {
			d, err := timer.GPUTime()
			if err != nil {
				return 0, 0, 0, err
			}
			gpu += d
		}
		n++
	}
	return time.Since(start) / time.Duration(n), gpu / time.Duration(n), p.Launches(), nil
}

// prepare compiles outs on b and binds the leaves' data; free releases it all.
func prepare(b engine.Backend, g *engine.Graph, leaves []Leaf, outs []*engine.Node) (*engine.Program, func(), error) {
	p, _, free, err := prepareBound(b, g, leaves, outs)
	return p, free, err
}

// prepareBound is prepare that also returns the tensors bound to the leaves.
func prepareBound(b engine.Backend, g *engine.Graph, leaves []Leaf, outs []*engine.Node) (*engine.Program, map[*engine.Node]*engine.Tensor, func(), error) {
	p, err := engine.Compile(g, b, outs, engine.CompileOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	var ts []*engine.Tensor
	bound := map[*engine.Node]*engine.Tensor{}
	free := func() {
		for _, x := range ts {
			x.Release()
		}
		p.Release()
	}
	for _, l := range leaves {
		var x *engine.Tensor
		switch {
		case l.F32 != nil:
			x, err = engine.FromFloat32(b, l.Node.Shape(), l.F32)
		case l.I32 != nil:
			x, err = engine.FromInt32(b, l.Node.Shape(), l.I32)
		default:
			x, err = engine.FromBytes(b, l.Node.DType(), l.Node.Shape(), l.U8)
		}
		if err != nil {
			free()
			return nil, nil, nil, err
		}
		ts = append(ts, x)
		bound[l.Node] = x
		if err := p.Bind(l.Node, x); err != nil {
			free()
			return nil, nil, nil, err
		}
	}
	return p, bound, free, nil
}

// runOn runs the graph's outs on b, the planned buffers poisoned first, and reads them back as
// f32 (f16 and bf16 outputs converted on the host).
func runOn(b engine.Backend, g *engine.Graph, leaves []Leaf, outs []*engine.Node) ([][]float32, error) {
	p, free, err := prepare(b, g, leaves, outs)
	if err != nil {
		return nil, err
	}
	defer free()
	if err := p.Poison(); err != nil {
		return nil, err
	}
	if err := p.Run(); err != nil {
		return nil, err
	}
	return readAll(b, p, outs)
}

func readAll(b engine.Backend, p *engine.Program, outs []*engine.Node) ([][]float32, error) {
	res := make([][]float32, len(outs))
	for i, o := range outs {
		if o.DType() != engine.F32 {
			a, err := p.Arg(o)
			if err != nil {
				return nil, err
			}
			raw := make([]byte, a.Meta.Bytes())
			if err := b.Read(a.Buf, 0, raw); err != nil {
				return nil, err
			}
			if o.DType() == engine.U8 { // codes (the 8-bit optimizer's), compared as numbers
				res[i] = make([]float32, len(raw))
				for k, x := range raw {
					res[i][k] = float32(x)
				}
				continue
			}
			res[i] = halfToFloat32(o.DType(), raw)
			continue
		}
		v, err := p.Float32(o)
		if err != nil {
			return nil, err
		}
		res[i] = v
	}
	return res, nil
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

// Compare judges got against want relative to want's own scale: NaN where want has none (an
// unwritten, poisoned element) fails; every |got − want| must be ≤ tol·max|want| and the
// normalised mean squared error Σ(got − want)²/Σwant² ≤ tol². An all-zero want is refused: a case
// whose output is zero tests nothing.
func Compare(want, got []float32, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d elements, want %d", len(got), len(want))
	}
	var scale, sw, sd, worst float64
	at := -1
	for i := range want {
		w, g := float64(want[i]), float64(got[i])
		if math.IsNaN(w) || math.IsNaN(g) {
			if math.IsNaN(w) != math.IsNaN(g) {
				return fmt.Errorf("element %d: got %v, want %v (unwritten or NaN)", i, got[i], want[i])
			}
			continue
		}
		if math.IsInf(w, 0) || math.IsInf(g, 0) {
			if w != g {
				return fmt.Errorf("element %d: got %v, want %v", i, got[i], want[i])
			}
			continue
		}
		scale = math.Max(scale, math.Abs(w))
		sw += w * w
		d := math.Abs(g - w)
		sd += d * d
		if d > worst || at < 0 {
			worst, at = d, i
		}
	}
	if at < 0 {
		return nil // nothing finite to compare
	}
	if sw == 0 {
		return fmt.Errorf("the reference output is all zeros: the case tests nothing")
	}
	if worst > tol*scale {
		return fmt.Errorf("element %d: got %v, want %v (|diff| %.3g > %.3g = tol·max|want|)", at, got[at], want[at], worst, tol*scale)
	}
	if nmse := sd / sw; nmse > tol*tol {
		return fmt.Errorf("NMSE %.3g > %.3g", nmse, tol*tol)
	}
	return nil
}
