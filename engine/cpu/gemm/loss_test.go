package gemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu/kernels"
)

// CrossEntropy and its backward against the float64 reference on every path: vocabularies that
// are not multiples of 16 or that span several chunks of lseChunk, ignored rows, a row with a
// NaN (the loss must be NaN), one with +∞, one with −∞ logits (masked: finite), and the gradient
// written over the logits.
func TestCrossEntropyMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, isa := range isas(t) {
		useISA(t, isa)
		for _, vocab := range []int{1, 15, 17, 333, 3*lseChunk + 7} {
			const rows = 5
			logits := make([]float32, rows*vocab)
			for i := range logits {
				logits[i] = float32(r.NormFloat64() * 4)
			}
			targets := []int32{int32(vocab - 1), -100, 0, int32(vocab / 2), int32(vocab / 3)}
			if vocab > 2 {
				logits[3*vocab+1] = float32(math.Inf(-1)) // a masked logit, not the target
			}
			check := func(name string, logits []float32) {
				want, wn, werr := kernels.CrossEntropy(logits, targets, rows, vocab, -100)
				got, n, err := CrossEntropy(logits, targets, rows, vocab, -100)
				if werr != nil || err != nil || n != wn {
					t.Fatalf("%s %s vocab %d: count %d err %v, reference %d %v", isa, name, vocab, n, err, wn, werr)
				}
				if math.IsNaN(float64(want)) != math.IsNaN(float64(got)) || (!math.IsNaN(float64(want)) && math.Abs(float64(got-want)) > 2e-6*math.Abs(float64(want))+1e-6) {
					t.Fatalf("%s %s vocab %d: loss %v, reference %v", isa, name, vocab, got, want)
				}
				wd := make([]float32, len(logits))
				for _, dloss := range []float32{1.5, -0.5} {
					if err := kernels.CrossEntropyBackward(wd, logits, targets, rows, vocab, -100, dloss, n); err != nil {
						t.Fatal(err)
					}
					gd := append([]float32(nil), logits...) // written over the logits
					if err := CrossEntropyBackward(gd, gd, targets, rows, vocab, -100, dloss, n); err != nil {
						t.Fatal(err)
					}
					for i := range wd {
						w, g := float64(wd[i]), float64(gd[i])
						if math.IsNaN(w) != math.IsNaN(g) || (!math.IsNaN(w) && math.Abs(g-w) > 2e-6*math.Abs(w)+1e-9) {
							t.Fatalf("%s %s vocab %d dloss %v: dlogits[%d] %v, reference %v", isa, name, vocab, dloss, i, g, w)
						}
					}
				}
			}
			check("finite", logits)
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
				l := append([]float32(nil), logits...)
				l[2*vocab+vocab/2] = bad // row 2
				check("non-finite", l)
			}
		}
	}
	if _, _, err := CrossEntropy([]float32{1, 2}, []int32{2}, 1, 2, -100); err == nil {
		t.Fatal("a target out of range gave no error")
	}
	if err := CrossEntropyBackward(make([]float32, 2), []float32{1, 2}, []int32{-1}, 1, 2, -100, 1, 1); err == nil {
		t.Fatal("a target out of range gave no error in the backward")
	}
}

// BenchmarkCrossEntropy: the loss and its gradient over 256 rows of Llama-3's vocabulary (128 256
// logits a row), beside the float64 reference (kernels) in the same run.
//
//	go test -run '^$' -bench CrossEntropy -benchtime 5x ./engine/cpu/gemm/
func BenchmarkCrossEntropy(b *testing.B) {
	r := rand.New(rand.NewPCG(23, 24))
	const rows, vocab = 256, 128256
	logits := make([]float32, rows*vocab)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	targets := make([]int32, rows)
	for i := range targets {
		targets[i] = int32(r.IntN(vocab))
	}
	d := make([]float32, rows*vocab)
	for _, impl := range []struct {
		name string
		fwd  func([]float32, []int32, int, int, int32) (float32, int, error)
		bwd  func([]float32, []float32, []int32, int, int, int32, float32, int) error
	}{{"lathe", CrossEntropy, CrossEntropyBackward}, {"float64", kernels.CrossEntropy, kernels.CrossEntropyBackward}} {
		b.Run(impl.name+"/forward", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := impl.fwd(logits, targets, rows, vocab, -100); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(impl.name+"/backward", func(b *testing.B) {
			for b.Loop() {
				if err := impl.bwd(d, logits, targets, rows, vocab, -100, 1, rows); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
