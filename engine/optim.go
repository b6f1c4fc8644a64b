package engine

import (
	"fmt"
	"math"
)

// The optimizer's ops: with them a training step's graph ends in its own update (gradient norm,
// clipping, the non-finite check and AdamW), so that a step is one submission and one read.

// OptimControl is the layout of the control vector the host writes before each step (f32 [3]).
const (
	CtlLR    = iota // the learning rate of this update
	CtlScale        // the factor the gradients are multiplied by first (1/k after k micro-batches)
	CtlStep         // the update's number, counting from 1 (AdamW's bias corrections)
	CtlLen
)

// StepStatus is the layout of ClipStatus's output (f32 [4]), the one value the host reads back.
const (
	StatusLoss  = iota // the step's loss, as given
	StatusSumSq        // Σ g² over every gradient, before the scale
	StatusCoef         // what AdamWStep multiplies the gradients by: the scale, times the clip factor
	StatusSkip         // 1 when the loss or the norm is not finite: AdamWStep changes nothing
	StatusLen
)

// SumSquaresN reduces any number of f32 tensors to y: [1] = Σ_i Σ x_i², one multi-tensor
// reduction (the global gradient norm's square). Each tensor's sum is rounded to f32 and the sums
// are added in order in f32, so that the CPU repeats the per-tensor reduction it replaces bit for
// bit. A non-finite element makes the result non-finite.
type SumSquaresN struct{}

func (SumSquaresN) Name() string { return "sum_squares_n" }

func (SumSquaresN) Infer(in []Meta) ([]Meta, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("want at least one operand")
	}
	for i, m := range in {
		if err := want(m, F32, fmt.Sprintf("operand %d", i)); err != nil {
			return nil, err
		}
	}
	return []Meta{{Shape{1}, F32}}, nil
}

// ClipStatus decides a step's update on the device: operands loss: [1], sumsq: [1] (SumSquaresN of
// the gradients) and ctl: [CtlLen]; output status: [StatusLen]. With norm = √sumsq · scale, the
// step is skipped when the loss or the norm is not finite; the gradients' coefficient is the
// scale, times MaxNorm/(norm + 1e-6) when MaxNorm > 0 and norm > MaxNorm (torch's
// clip_grad_norm_).
type ClipStatus struct{ MaxNorm float32 }

func (ClipStatus) Name() string { return "clip_status" }

func (ClipStatus) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	for i, n := range []int{1, 1, CtlLen} {
		if err := wantVec(in[i], n, []string{"loss", "sumsq", "ctl"}[i]); err != nil {
			return nil, err
		}
	}
	return []Meta{{Shape{StatusLen}, F32}}, nil
}

// ClipStatusRef is ClipStatus in float64: the status for a loss, a sum of squares and a control
// vector (CPU kernels and tests share it).
func ClipStatusRef(maxNorm float32, loss, sumsq float32, ctl []float32) [StatusLen]float32 {
	scale := float64(ctl[CtlScale])
	norm := math.Sqrt(float64(sumsq)) * scale
	skip := math.IsNaN(norm) || math.IsInf(norm, 0) || math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0)
	coef := scale
	if maxNorm > 0 && norm > float64(maxNorm) {
		coef *= float64(maxNorm) / (norm + 1e-6)
	}
	st := [StatusLen]float32{StatusLoss: loss, StatusSumSq: sumsq, StatusCoef: float32(coef)}
	if skip {
		st[StatusSkip] = 1
	}
	return st
}

// AdamWStep is AdamW's update in place, its inputs on the device: operands p, g, m, v (f32 of one
// shape), status: [StatusLen] (ClipStatus) and ctl: [CtlLen]; outputs p, m, v are written over the
// operands' buffers. Unless status skips the step, g·coef is the gradient and ctl gives the
// learning rate and the step number; a skipped step leaves p, m and v as they were.
type AdamWStep struct{ Beta1, Beta2, Eps, WeightDecay float32 }

func (AdamWStep) Name() string   { return "adamw_step" }
func (AdamWStep) aliases() []int { return []int{0, 2, 3} }

func (AdamWStep) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 6); err != nil {
		return nil, err
	}
	if _, err := sameF32(in[:4], 4); err != nil {
		return nil, err
	}
	if err := wantVec(in[4], StatusLen, "status"); err != nil {
		return nil, err
	}
	if err := wantVec(in[5], CtlLen, "ctl"); err != nil {
		return nil, err
	}
	return []Meta{in[0], in[0], in[0]}, nil
}

// Optim8Block is the blocksize of the 8-bit optimizer states: one absmax per 256 values, as
// bitsandbytes' blockwise 8-bit optimizers use.
const Optim8Block = 256

// Optim8Blocks is the number of absmax blocks of an n-element parameter's 8-bit state.
func Optim8Blocks(n int) int { return (n + Optim8Block - 1) / Optim8Block }

// Optim8Codes is the length of one moment's codes for n elements: n rounded up to whole 4-byte
// words, so that each moment starts on a word (GPU kernels write codes a word at a time).
func Optim8Codes(n int) int { return (n + 3) &^ 3 }

// AdamW8bitStep is AdamWStep with both moments stored in 8 bits, bitsandbytes' blockwise 8-bit
// AdamW (kOptimizerStatic8bit2StateBlockwise): operands p, g (f32 of one shape, n elements),
// q: u8 [2·Optim8Codes(n)] (the first moment's codes, then the second's, each padded to whole
// words), absmax: f32 [2·nb], nb = Optim8Blocks(n) (the first moment's block scales, then the
// second's), qmap: f32 [512] (the first moment's sorted signed code, then the second's unsigned
// one: quant.DynamicCode and quant.DynamicCodeUnsigned), status: [StatusLen] and ctl: [CtlLen];
// outputs p, q, absmax are written over the operands' buffers.
//
// Per block, in f32: each moment is decoded (code·absmax) and updated with g·coef; the new absmax
// is the block's max |moment|; p ← p − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + √(1−β₂ᵗ)·ε), then
// p ← p·(1 − lr·wd) (bitsandbytes decays after the update); each moment/absmax is requantized to
// its nearest code (quant.Quantize8), a first moment's code moved one step when rounding flipped
// its sign, as bitsandbytes does. Padding codes are written as the code of 0. A block whose absmax
// is 0 keeps the code of 0. A skipped step changes nothing.
type AdamW8bitStep struct{ Beta1, Beta2, Eps, WeightDecay float32 }

func (AdamW8bitStep) Name() string   { return "adamw8bit_step" }
func (AdamW8bitStep) aliases() []int { return []int{0, 2, 3} }

func (AdamW8bitStep) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 7); err != nil {
		return nil, err
	}
	if _, err := sameF32(in[:2], 2); err != nil {
		return nil, err
	}
	nb := Optim8Blocks(in[0].Shape.Numel())
	if err := want(in[2], U8, "q"); err != nil {
		return nil, err
	}
	if nq := 2 * Optim8Codes(in[0].Shape.Numel()); len(in[2].Shape) != 1 || in[2].Shape[0] != nq {
		return nil, fmt.Errorf("q must be [%d], got %s", nq, in[2].Shape)
	}
	for i, w := range []struct {
		n    int
		what string
	}{{2 * nb, "absmax"}, {512, "qmap"}, {StatusLen, "status"}, {CtlLen, "ctl"}} {
		if err := wantVec(in[3+i], w.n, w.what); err != nil {
			return nil, err
		}
	}
	return []Meta{in[0], in[2], in[3]}, nil
}

// Accumulate adds x to acc in place (acc ← acc + x), or copies it (acc ← x) with Overwrite: the
// sum of micro-batches' gradients. Operands acc and x, f32 of one shape; the output is written over
// acc's buffer.
//
// With N > 0 it works on a span: acc[Dst+i] (+)= x[Src+i] for i < N, the operands of any shapes
// that hold their spans. That packs tensors into one flat buffer (Src 0, Dst each one's offset)
// and unpacks them (Dst 0, Src the offset), so that data parallelism reads and writes all the
// gradients of a step as one transfer.
type Accumulate struct {
	Overwrite bool
	// Dst and Src are the span's first elements in acc and in x; N is its length (0: the whole
	// of operands of one shape, Dst and Src 0).
	Dst, Src, N int
}

func (Accumulate) Name() string   { return "accumulate" }
func (Accumulate) aliases() []int { return []int{0} }

func (o Accumulate) Infer(in []Meta) ([]Meta, error) {
	if o.N == 0 {
		if o.Dst != 0 || o.Src != 0 {
			return nil, fmt.Errorf("offsets %d, %d need a span length N", o.Dst, o.Src)
		}
		return sameF32(in, 2)
	}
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if in[0].DType != F32 || in[1].DType != F32 {
		return nil, fmt.Errorf("operands must be f32")
	}
	if o.N < 0 || o.Dst < 0 || o.Src < 0 || o.Dst > in[0].Shape.Numel()-o.N || o.Src > in[1].Shape.Numel()-o.N {
		return nil, fmt.Errorf("span of %d at %d of %s and %d of %s lies outside them", o.N, o.Dst, in[0].Shape, o.Src, in[1].Shape)
	}
	return []Meta{in[0]}, nil
}

// Span returns the span's offsets and length, N resolved for operands of one shape.
func (o Accumulate) Span(acc Meta) (dst, src, n int) {
	if o.N == 0 {
		return 0, 0, acc.Shape.Numel()
	}
	return o.Dst, o.Src, o.N
}

// ClipStatus records the status of a step (see the op).
func (g *Graph) ClipStatus(loss, sumsq, ctl *Node, maxNorm float32) *Node {
	return g.Apply1(ClipStatus{MaxNorm: maxNorm}, loss, sumsq, ctl)
}

// SumSquaresN records Σ x² over every tensor of xs.
func (g *Graph) SumSquaresN(xs ...*Node) *Node { return g.Apply1(SumSquaresN{}, xs...) }
