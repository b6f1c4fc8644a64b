package engine

import (
	"fmt"

	"github.com/lathe-ml/lathe/quant"
)

// This file defines the ops of the graph. Each op is a struct of kernel parameters with Infer; ops
// that carry gradient implement grad (autodiff.go) in terms of other ops. Shapes are row-major and
// written llm.c style: x: [..., dim] means any leading dimensions, flattened as rows by kernels.

func want(m Meta, dt DType, what string) error {
	if m.DType != dt {
		return fmt.Errorf("%s must be %s, got %s", what, dt, m)
	}
	return nil
}

func wantN(in []Meta, n int) error {
	if len(in) != n {
		return fmt.Errorf("want %d operands, got %d", n, len(in))
	}
	return nil
}

func wantVec(m Meta, dim int, what string) error {
	if err := want(m, F32, what); err != nil {
		return err
	}
	if len(m.Shape) != 1 || m.Shape[0] != dim {
		return fmt.Errorf("%s must be [%d], got %s", what, dim, m.Shape)
	}
	return nil
}

// MatMul: C = op(A)·op(B), op(X) = X or Xᵀ. A: [m, k] ([k, m] if TransA), B: [k, n] ([n, k] if
// TransB), C: [m, n]. Without TransA, A may have leading dimensions, flattened into m.
type MatMul struct{ TransA, TransB bool }

func (MatMul) Name() string { return "matmul" }

// Dims returns m, n, k for operands a and b.
func (o MatMul) Dims(a, b Shape) (m, n, k int) {
	if o.TransA {
		k, m = a[0], a[1]
	} else {
		m, k = a.Rows(), a.Last()
	}
	if o.TransB {
		n = b[0]
	} else {
		n = b[1]
	}
	return
}

func (o MatMul) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	a, b := in[0], in[1]
	if a.DType != F32 || b.DType != F32 {
		return nil, fmt.Errorf("operands must be f32")
	}
	if len(b.Shape) != 2 || len(a.Shape) < 2 || (o.TransA && len(a.Shape) != 2) {
		return nil, fmt.Errorf("operands must be matrices")
	}
	m, n, k := o.Dims(a.Shape, b.Shape)
	kb := b.Shape[0]
	if o.TransB {
		kb = b.Shape[1]
	}
	if k != kb {
		return nil, fmt.Errorf("inner dimensions differ: %d and %d", k, kb)
	}
	if o.TransA {
		return []Meta{{Shape{m, n}, F32}}, nil
	}
	return []Meta{{a.Shape.With(n), F32}}, nil
}

// QuantSpec describes a frozen 4-bit weight W: [N, K] stored as bitsandbytes stores it: W flattened
// row-major, blocks of Blocksize elements, two codes a byte (first element in the high nibble),
// element = Code[q]·absmax[block]. The packed bytes (u8 [ceil(N·K/2)]) and the decoded per-block
// absmax (f32 [ceil(N·K/Blocksize)]) are two operands of the ops that use it.
type QuantSpec struct {
	Type      quant.Type
	Blocksize int
	N, K      int
	// Compute is the precision the products with W may take (x·Wᵀ, and dy·W in the backward pass;
	// bitsandbytes' bnb_4bit_compute_dtype): F32 (the zero value) computes them exactly in float32;
	// BF16 allows a backend to round x and the codebook to bfloat16 and sum their products in
	// float32, as
	// PyTorch's "medium" float32 matmul precision allows, where that is faster (the CPU's
	// decoding GEMV on AVX512_BF16). I8 allows what BF16 does and also 8-bit integer products
	// (llama.cpp's route on CPUs): x rounded to signed bytes a block of 64 with its own scale, the
	// codebook to code·127 (the CPU's decoding GEMV on AVX512_VNNI). Each is an allowance: a
	// backend may compute in float32 anyway.
	Compute DType
}

// Code is the type's codebook, defined once in package quant.
func (q *QuantSpec) Code() [16]float32 { return q.Type.Code() }

func (q *QuantSpec) check(packed, absmax Meta) error {
	if q.Type != quant.NF4 && q.Type != quant.FP4 {
		return fmt.Errorf("unknown 4-bit type %d", q.Type)
	}
	if q.Blocksize < 32 || q.Blocksize&(q.Blocksize-1) != 0 {
		return fmt.Errorf("blocksize %d is not a power of two ≥ 32", q.Blocksize)
	}
	if q.Compute != F32 && q.Compute != BF16 && q.Compute != I8 {
		return fmt.Errorf("compute precision %s: want f32, bf16 or i8", q.Compute)
	}
	numel := q.N * q.K
	if q.N <= 0 || q.K <= 0 {
		return fmt.Errorf("quantized weight [%d %d] must have positive dimensions", q.N, q.K)
	}
	if packed.DType != U8 || packed.Shape.Numel() != (numel+1)/2 {
		return fmt.Errorf("packed weight must be u8 with %d bytes, got %s", (numel+1)/2, packed)
	}
	nb := (numel + q.Blocksize - 1) / q.Blocksize
	if absmax.DType != F32 || absmax.Shape.Numel() != nb {
		return fmt.Errorf("absmax must be f32 with %d blocks, got %s", nb, absmax)
	}
	return nil
}

// QMatMul: y = x·Wᵀ for a frozen 4-bit W: [N, K]; x: [..., K], y: [..., N]. With TransW, y = x·W:
// x: [..., N], y: [..., K] (the backward pass). Operands: x, packed, absmax.
type QMatMul struct {
	Quant  QuantSpec
	TransW bool
}

func (QMatMul) Name() string { return "qmatmul" }

func (o QMatMul) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	if err := o.Quant.check(in[1], in[2]); err != nil {
		return nil, err
	}
	kin, nout := o.Quant.K, o.Quant.N
	if o.TransW {
		kin, nout = nout, kin
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	if in[0].Shape.Last() != kin {
		return nil, fmt.Errorf("x must end in %d, got %s", kin, in[0].Shape)
	}
	return []Meta{{in[0].Shape.With(nout), F32}}, nil
}

// Dequantize4 decodes a frozen 4-bit weight: operands packed and absmax (see QuantSpec), output
// W: f32 [N, K]. It is the core op under the 4-bit fast paths (QMatMul, QLoRA), which decompose
// into it and a MatMul.
type Dequantize4 struct{ Quant QuantSpec }

func (Dequantize4) Name() string { return "dequantize4" }

func (o Dequantize4) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if err := o.Quant.check(in[0], in[1]); err != nil {
		return nil, err
	}
	return []Meta{{Shape{o.Quant.N, o.Quant.K}, F32}}, nil
}

// LoRA is the fused LoRA forward y = x·Wᵀ + Scale·(d(x)·Aᵀ)·Bᵀ, d(x) = x or, with Dropout > 0,
// dropout of x (the mask of DropoutKeep under the seed and Salt, the survivors scaled by
// 1/(1−Dropout)), as PEFT applies lora_dropout to the adapter's input only. Operands: x: [..., in],
// then W: [out, in] (f32, or a frozen f16 or bf16: see MatMul16) or, with Quant, packed and absmax, then A: [r, in] and B: [out, r], then
// with Dropout the seed: i32 [1]. Outputs: y: [..., out] and xa = d(x)·Aᵀ: [..., r], kept for the
// backward pass. Compute is the precision a bf16 W's products (x·Wᵀ, and dy·W in the backward
// pass) may take (MatMul16.Compute); a 4-bit W's is its Quant.Compute.
type LoRA struct {
	Scale   float32
	Quant   *QuantSpec
	Dropout float32
	Salt    uint32
	Compute DType
}

func (LoRA) Name() string { return "lora" }

// Operands returns the number of base-weight operands (1 dense, 2 quantized) and of seed operands
// (1 with dropout, else 0).
func (o LoRA) Operands() (weights, seeds int) {
	weights = 1
	if o.Quant != nil {
		weights = 2
	}
	if o.Dropout > 0 {
		seeds = 1
	}
	return
}

// Dims returns rows, in, out and rank for the operands.
func (o LoRA) Dims(in []Meta) (rows, din, dout, r int) {
	nw, _ := o.Operands()
	a := in[1+nw].Shape
	b := in[2+nw].Shape
	return in[0].Shape.Rows(), in[0].Shape.Last(), b[0], a[0]
}

func (o LoRA) Infer(in []Meta) ([]Meta, error) {
	nw, ns := o.Operands()
	if err := wantN(in, 3+nw+ns); err != nil {
		return nil, err
	}
	if o.Dropout < 0 || o.Dropout >= 1 {
		return nil, fmt.Errorf("dropout probability %v is not in [0, 1)", o.Dropout)
	}
	if o.Compute != F32 && o.Compute != BF16 {
		return nil, fmt.Errorf("compute precision %s: want f32 or bf16", o.Compute)
	}
	if ns > 0 && (in[3+nw].DType != I32 || in[3+nw].Shape.Numel() != 1) {
		return nil, fmt.Errorf("seed must be i32 [1], got %s", in[3+nw])
	}
	x, a, b := in[0], in[1+nw], in[2+nw]
	for _, m := range []Meta{x, a, b} {
		if m.DType != F32 {
			return nil, fmt.Errorf("x, A and B must be f32")
		}
	}
	if len(a.Shape) != 2 || len(b.Shape) != 2 {
		return nil, fmt.Errorf("A and B must be matrices")
	}
	din, r, dout := x.Shape.Last(), a.Shape[0], b.Shape[0]
	if a.Shape[1] != din || b.Shape[1] != r {
		return nil, fmt.Errorf("A %s and B %s do not fit x %s", a.Shape, b.Shape, x.Shape)
	}
	if o.Quant != nil {
		if err := o.Quant.check(in[1], in[2]); err != nil {
			return nil, err
		}
		if o.Quant.N != dout || o.Quant.K != din {
			return nil, fmt.Errorf("quantized W [%d %d] does not fit [%d %d]", o.Quant.N, o.Quant.K, dout, din)
		}
	} else if w := in[1]; (w.DType != F32 && !IsHalf(w.DType)) || len(w.Shape) != 2 || w.Shape[0] != dout || w.Shape[1] != din {
		return nil, fmt.Errorf("W must be f32, f16 or bf16 [%d %d], got %s", dout, din, w)
	}
	return []Meta{{x.Shape.With(dout), F32}, {x.Shape.With(r), F32}}, nil
}

// LoRABackward computes, from dy: [..., out] and the forward operands (x, W or packed+absmax, A, B,
// the seed with Dropout, then xa), with t = dy·B: dx = dy·W + Scale·d(t·A), dA = Scale·tᵀ·d(x) and
// dB = Scale·dyᵀ·xa, d the forward's dropout (the same mask). Outputs are the ones asked for, in
// the order dx, dA, dB. W never receives a gradient.
type LoRABackward struct {
	Scale               float32
	Quant               *QuantSpec
	Dropout             float32
	Salt                uint32
	NeedX, NeedA, NeedB bool
	// Compute is the forward op's (LoRA.Compute): the precision dx = dy·W may take for a bf16 W.
	Compute DType
}

func (LoRABackward) Name() string { return "lora_backward" }

// Forward returns the forward op whose gradient this is.
func (o LoRABackward) Forward() LoRA {
	return LoRA{Scale: o.Scale, Quant: o.Quant, Dropout: o.Dropout, Salt: o.Salt, Compute: o.Compute}
}

func (o LoRABackward) Infer(in []Meta) ([]Meta, error) {
	if len(in) < 2 {
		return nil, fmt.Errorf("want dy and the forward operands")
	}
	fwd := in[1 : len(in)-1]
	outs, err := o.Forward().Infer(fwd)
	if err != nil {
		return nil, err
	}
	if !in[0].Shape.Equal(outs[0].Shape) || !in[len(in)-1].Shape.Equal(outs[1].Shape) {
		return nil, fmt.Errorf("dy %s or xa %s does not fit", in[0].Shape, in[len(in)-1].Shape)
	}
	nw, _ := o.Forward().Operands()
	var res []Meta
	if o.NeedX {
		res = append(res, fwd[0])
	}
	if o.NeedA {
		res = append(res, fwd[1+nw])
	}
	if o.NeedB {
		res = append(res, fwd[2+nw])
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no gradient asked for")
	}
	return res, nil
}

// ScaleCols is IA3's scaling: y = x ⊙ l, l: [dim] broadcast over the rows of x: [..., dim].
type ScaleCols struct{}

func (ScaleCols) Name() string { return "scale_cols" }

func (ScaleCols) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	if err := wantVec(in[1], in[0].Shape.Last(), "l"); err != nil {
		return nil, err
	}
	return []Meta{in[0]}, nil
}

// ScaleColsBackward: from dy, x, l computes dx = dy ⊙ l and dl = Σ_rows dy ⊙ x (those asked for).
type ScaleColsBackward struct{ NeedX, NeedL bool }

func (ScaleColsBackward) Name() string { return "scale_cols_backward" }

func (o ScaleColsBackward) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	if _, err := (ScaleCols{}).Infer(in[1:]); err != nil {
		return nil, err
	}
	return needed(o.NeedX, in[1], o.NeedL, in[2])
}

func needed(pairs ...any) ([]Meta, error) {
	var res []Meta
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i].(bool) {
			res = append(res, pairs[i+1].(Meta))
		}
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no gradient asked for")
	}
	return res, nil
}

// RMSNorm: y = x / sqrt(mean(x²) + Eps) ⊙ w; x: [..., dim], w: [dim].
type RMSNorm struct{ Eps float32 }

func (RMSNorm) Name() string { return "rmsnorm" }

func (RMSNorm) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	if err := wantVec(in[1], in[0].Shape.Last(), "w"); err != nil {
		return nil, err
	}
	return []Meta{in[0]}, nil
}

// RMSNormBackward: from dy, x, w computes dx and dw (those asked for).
type RMSNormBackward struct {
	Eps          float32
	NeedX, NeedW bool
}

func (RMSNormBackward) Name() string { return "rmsnorm_backward" }

func (o RMSNormBackward) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	if _, err := (RMSNorm{}).Infer(in[1:]); err != nil {
		return nil, err
	}
	return needed(o.NeedX, in[1], o.NeedW, in[2])
}

// RoPE rotates x: [tokens, Heads·HeadDim] by position in Hugging Face's rotate_half convention:
// for i < HeadDim/2, angle = pos·InvFreq[i], (x[i], x[i+half]) ↦ (x[i]cos − x[i+half]sin,
// x[i+half]cos + x[i]sin), cos and sin scaled by AttnScale. Operands: x, pos: i32 [tokens].
// Inverse rotates by −angle (the backward pass).
type RoPE struct {
	Heads, HeadDim int
	InvFreq        []float32
	AttnScale      float32
	Inverse        bool
}

func (RoPE) Name() string { return "rope" }

func (o RoPE) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if o.HeadDim%2 != 0 || len(o.InvFreq) != o.HeadDim/2 {
		return nil, fmt.Errorf("head dim %d must be even with %d frequencies", o.HeadDim, o.HeadDim/2)
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	if in[0].Shape.Last() != o.Heads*o.HeadDim {
		return nil, fmt.Errorf("x must end in %d·%d, got %s", o.Heads, o.HeadDim, in[0].Shape)
	}
	if in[1].DType != I32 || in[1].Shape.Numel() != in[0].Shape.Rows() {
		return nil, fmt.Errorf("pos must be i32 [%d], got %s", in[0].Shape.Rows(), in[1])
	}
	return []Meta{in[0]}, nil
}

// Attention is causal scaled-dot-product attention with grouped-query heads. q: [Batch·QLen,
// Heads·HeadDim], k and v: [Batch·KVLen, KVHeads·HeadDim]; query head h reads kv head
// h/(Heads/KVHeads); query i sits at position KVLen−QLen+i and sees keys j ≤ that. Outputs: out:
// [Batch·QLen, Heads·HeadDim] and lse: [Batch, Heads, QLen], the log-sum-exp of the scaled scores
// (kept for the backward pass).
//
// With KVStride, k and v are a KV cache of slots of KVStride rows ([slots·KVStride, ...], any
// number of slots) and a fourth operand rows (i32 [Batch·QLen]) places each query: query t sees
// the rows of its slot from the slot's first through rows[t] (its own key's row), so sequences
// of different lengths, in any slots, share one step. KVLen is then the most keys a query sees
// (at most KVStride). This mode has no backward pass (serving).
//
// With Docs (packed documents, not with KVStride), a fourth operand starts (i32 [Batch·QLen])
// gives each query the index, within its sequence, of the first key of its document: query i
// sees keys starts[i] ≤ j ≤ KVLen−QLen+i, so documents packed in one row never see each other
// (padding-free packing, as flash-attention's varlen does), with no mask materialised.
type Attention struct {
	Batch, QLen, KVLen, Heads, KVHeads, HeadDim int
	Scale                                       float32
	KVStride                                    int
	Docs                                        bool
}

func (Attention) Name() string { return "attention" }

func (o Attention) Infer(in []Meta) ([]Meta, error) {
	n := 3
	if o.KVStride > 0 || o.Docs {
		n = 4
	}
	if err := wantN(in, n); err != nil {
		return nil, err
	}
	if o.Docs && o.KVStride > 0 {
		return nil, fmt.Errorf("attention: Docs and KVStride do not combine")
	}
	if o.Docs && (in[3].DType != I32 || in[3].Shape.Numel() != o.Batch*o.QLen) {
		return nil, fmt.Errorf("starts must be i32 [%d], got %s", o.Batch*o.QLen, in[3])
	}
	if o.Heads <= 0 || o.KVHeads <= 0 || o.Heads%o.KVHeads != 0 || o.QLen <= 0 || o.Batch <= 0 ||
		(o.KVStride == 0 && o.QLen > o.KVLen) || o.KVStride < 0 || (o.KVStride > 0 && (o.KVLen <= 0 || o.KVLen > o.KVStride)) {
		return nil, fmt.Errorf("bad attention shape %+v", o)
	}
	qm := Meta{Shape{o.Batch * o.QLen, o.Heads * o.HeadDim}, F32}
	kvm := Meta{Shape{o.Batch * o.KVLen, o.KVHeads * o.HeadDim}, F32}
	if o.KVStride > 0 {
		rows := in[1].Shape.Rows()
		if rows == 0 || rows%o.KVStride != 0 {
			return nil, fmt.Errorf("the KV cache's %d rows are not slots of %d", rows, o.KVStride)
		}
		kvm.Shape[0] = rows
		if in[3].DType != I32 || in[3].Shape.Numel() != o.Batch*o.QLen {
			return nil, fmt.Errorf("rows must be i32 [%d], got %s", o.Batch*o.QLen, in[3])
		}
	}
	for i, m := range []Meta{qm, kvm, kvm} {
		if in[i].DType != F32 || in[i].Shape.Numel() != m.Shape.Numel() || in[i].Shape.Last() != m.Shape.Last() {
			return nil, fmt.Errorf("operand %d must be %s, got %s", i, m, in[i])
		}
	}
	return []Meta{in[0], {Shape{o.Batch, o.Heads, o.QLen}, F32}}, nil
}

// AttentionBackward: from dout, q, k, v, out, lse (and with Docs, starts) computes dq, dk, dv
// (those asked for).
type AttentionBackward struct {
	Attention
	NeedQ, NeedK, NeedV bool
}

func (AttentionBackward) Name() string { return "attention_backward" }

func (o AttentionBackward) Infer(in []Meta) ([]Meta, error) {
	n := 6
	if o.Docs {
		n = 7
	}
	if err := wantN(in, n); err != nil {
		return nil, err
	}
	if o.KVStride != 0 {
		return nil, fmt.Errorf("attention over a KV cache (KVStride) has no backward pass")
	}
	fwd := in[1:4]
	if o.Docs {
		fwd = []Meta{in[1], in[2], in[3], in[6]}
	}
	outs, err := o.Attention.Infer(fwd)
	if err != nil {
		return nil, err
	}
	if !in[0].Shape.Equal(outs[0].Shape) || !in[4].Shape.Equal(outs[0].Shape) || !in[5].Shape.Equal(outs[1].Shape) {
		return nil, fmt.Errorf("dout, out or lse does not fit")
	}
	return needed(o.NeedQ, in[1], o.NeedK, in[2], o.NeedV, in[3])
}

// Unary is an elementwise function of one f32 operand.
type Unary struct{ Fn UnaryFn }

// UnaryFn names an elementwise function.
type UnaryFn uint8

// The elementwise functions.
const (
	SiLU UnaryFn = iota
)

func (o Unary) Name() string { return [...]string{"silu"}[o.Fn] }

func (Unary) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	return []Meta{in[0]}, want(in[0], F32, "x")
}

// UnaryBackward: from dy and x computes dx for Fn.
type UnaryBackward struct{ Fn UnaryFn }

func (o UnaryBackward) Name() string { return Unary(o).Name() + "_backward" }

func (UnaryBackward) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 2) }

func sameF32(in []Meta, n int) ([]Meta, error) {
	if err := wantN(in, n); err != nil {
		return nil, err
	}
	for _, m := range in {
		if m.DType != F32 || !m.Shape.Equal(in[0].Shape) {
			return nil, fmt.Errorf("operands must be f32 of one shape")
		}
	}
	return []Meta{in[0]}, nil
}

// SwiGLU: y = silu(gate) ⊙ up, all of one shape.
type SwiGLU struct{}

func (SwiGLU) Name() string { return "swiglu" }

func (SwiGLU) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 2) }

// SwiGLUBackward: from dy, gate, up computes dgate and dup (those asked for).
type SwiGLUBackward struct{ NeedGate, NeedUp bool }

func (SwiGLUBackward) Name() string { return "swiglu_backward" }

func (o SwiGLUBackward) Infer(in []Meta) ([]Meta, error) {
	if _, err := sameF32(in, 3); err != nil {
		return nil, err
	}
	return needed(o.NeedGate, in[1], o.NeedUp, in[2])
}

// Softmax over the last dimension.
type Softmax struct{}

func (Softmax) Name() string { return "softmax" }

func (Softmax) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 1) }

// SoftmaxBackward: from dy and y = softmax(x) computes dx.
type SoftmaxBackward struct{}

func (SoftmaxBackward) Name() string { return "softmax_backward" }

func (SoftmaxBackward) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 2) }

// Embedding gathers rows of table: [vocab, dim] by ids: i32 [...]; y: [..., dim]. An id outside
// [0, vocab) is an error when the launch runs, except, with Pad, a negative id, whose row is
// filled with PadValue (a gather in which a row picks nothing: the adapter pool's rows without an
// adapter). A padded embedding has no backward pass.
type Embedding struct {
	Pad      bool
	PadValue float32
}

func (Embedding) Name() string { return "embedding" }

func (Embedding) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if in[0].DType != F32 || len(in[0].Shape) != 2 {
		return nil, fmt.Errorf("table must be an f32 matrix, got %s", in[0])
	}
	if in[1].DType != I32 {
		return nil, fmt.Errorf("ids must be i32, got %s", in[1])
	}
	return []Meta{{append(in[1].Shape.Clone(), in[0].Shape[1]), F32}}, nil
}

// EmbeddingBackward: from dy: [..., dim] and ids scatters the gradient of table: [Vocab, dim].
type EmbeddingBackward struct{ Vocab int }

func (EmbeddingBackward) Name() string { return "embedding_backward" }

func (o EmbeddingBackward) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if in[0].DType != F32 || in[1].DType != I32 || in[0].Shape.Rows() != in[1].Shape.Numel() {
		return nil, fmt.Errorf("dy %s does not fit ids %s", in[0], in[1])
	}
	return []Meta{{Shape{o.Vocab, in[0].Shape.Last()}, F32}}, nil
}

// CrossEntropy is the mean next-token loss: logits: [rows, vocab], targets: i32 [rows]; rows whose
// target is Ignore are left out of the mean. Output: loss: [1].
type CrossEntropy struct{ Ignore int32 }

func (CrossEntropy) Name() string { return "cross_entropy" }

func (CrossEntropy) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if in[0].DType != F32 || in[1].DType != I32 || in[0].Shape.Rows() != in[1].Shape.Numel() {
		return nil, fmt.Errorf("logits %s do not fit targets %s", in[0], in[1])
	}
	return []Meta{{Shape{1}, F32}}, nil
}

// CrossEntropyBackward: from dloss: [1], logits and targets computes dlogits.
type CrossEntropyBackward struct{ Ignore int32 }

func (CrossEntropyBackward) Name() string { return "cross_entropy_backward" }

func (o CrossEntropyBackward) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	if _, err := (CrossEntropy{}).Infer(in[1:]); err != nil {
		return nil, err
	}
	return []Meta{in[1]}, nil
}

// Binary is an elementwise op on two f32 operands of one shape.
type Binary struct{ Fn BinaryFn }

// BinaryFn names an elementwise binary function.
type BinaryFn uint8

// The binary functions.
const (
	Add BinaryFn = iota
	Mul
)

func (o Binary) Name() string { return [...]string{"add", "mul"}[o.Fn] }

func (Binary) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 2) }

// Scale: y = S·x.
type Scale struct{ S float32 }

func (Scale) Name() string { return "scale" }

func (Scale) Infer(in []Meta) ([]Meta, error) { return sameF32(in, 1) }

// AddBias: y = x + b, b: [dim] broadcast over the rows of x: [..., dim].
type AddBias struct{}

func (AddBias) Name() string { return "add_bias" }

func (AddBias) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	return []Meta{in[0]}, wantVec(in[1], in[0].Shape.Last(), "b")
}

// SumRows: y[j] = Σ_i x[i, j]; x: [..., dim], y: [dim].
type SumRows struct{}

func (SumRows) Name() string { return "sum_rows" }

func (SumRows) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	return []Meta{{Shape{in[0].Shape.Last()}, F32}}, want(in[0], F32, "x")
}

// Sum reduces all elements to y: [1].
type Sum struct{}

func (Sum) Name() string { return "sum" }

func (Sum) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	return []Meta{{Shape{1}, F32}}, want(in[0], F32, "x")
}

// Expand broadcasts x: [1] to Shape.
type Expand struct{ Shape Shape }

func (Expand) Name() string { return "expand" }

func (o Expand) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	if in[0].Shape.Numel() != 1 || !o.Shape.valid() {
		return nil, fmt.Errorf("expand %s to %s", in[0], o.Shape)
	}
	return []Meta{{o.Shape.Clone(), F32}}, want(in[0], F32, "x")
}

// Fill produces a constant f32 tensor of Shape (it takes no operands).
type Fill struct {
	Shape Shape
	Value float32
}

func (Fill) Name() string { return "fill" }

func (o Fill) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 0); err != nil {
		return nil, err
	}
	if !o.Shape.valid() {
		return nil, fmt.Errorf("bad shape %s", o.Shape)
	}
	return []Meta{{o.Shape.Clone(), F32}}, nil
}

// Cast converts f32, f16 or bf16 to To (f32, f16 or bf16), rounding to nearest even.
type Cast struct{ To DType }

func (o Cast) Name() string { return "cast_" + o.To.String() }

func (o Cast) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	float := func(d DType) bool { return d == F32 || d == F16 || d == BF16 }
	if !float(in[0].DType) || !float(o.To) {
		return nil, fmt.Errorf("cast %s to %s: float types only", in[0], o.To)
	}
	return []Meta{{in[0].Shape, o.To}}, nil
}

// Reshape views x with another shape of the same element count; it shares x's storage.
type Reshape struct{ Shape Shape }

func (Reshape) Name() string { return "reshape" }
func (Reshape) isView()      {}

func (o Reshape) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 1); err != nil {
		return nil, err
	}
	if !o.Shape.valid() || o.Shape.Numel() != in[0].Shape.Numel() {
		return nil, fmt.Errorf("cannot view %s as %s", in[0], o.Shape)
	}
	return []Meta{{o.Shape.Clone(), in[0].DType}}, nil
}

// Dropout zeroes each element of x with probability P and scales the rest by 1/(1−P). The mask is
// a pure function of (seed, Salt, element index) — a counter-based hash every backend computes the
// same way — so the backward pass and a recomputed forward see the same mask, and ops with other
// salts (one per layer) draw independent masks. Operands: x and seed: i32 [1], fresh each step.
type Dropout struct {
	P    float32
	Salt uint32
}

func (Dropout) Name() string { return "dropout" }

func (o Dropout) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if o.P < 0 || o.P >= 1 {
		return nil, fmt.Errorf("dropout probability %v is not in [0, 1)", o.P)
	}
	if in[1].DType != I32 || in[1].Shape.Numel() != 1 {
		return nil, fmt.Errorf("seed must be i32 [1], got %s", in[1])
	}
	return []Meta{in[0]}, want(in[0], F32, "x")
}

// DropoutKeep reports whether element i survives dropout with probability p under seed and salt:
// the mask every backend reproduces. The hash is a 32-bit integer mix (lowbias32) of the index,
// seed and salt (Hash32).
func DropoutKeep(seed int32, salt, i uint32, p float32) bool {
	h := Hash32(i*0x9E3779B9 ^ uint32(seed) ^ salt*0x85EBCA6B)
	// The top 24 bits as a uniform number in [0, 1).
	return float32(h>>8)*(1.0/16777216.0) >= p
}

// CacheWrite writes the rows of src: [T, dim] into the cache: [R, dim] in place, row t at row
// rows[t] (operands cache, src, rows: i32 [T]): the keys or values of a generation step, each
// token at its sequence's slot and position. Its output is the cache itself: consumers of the
// output read the updated cache, and the cache's buffer (a bound input) keeps the rows for the
// next step. A row outside the cache is an error when the step runs.
type CacheWrite struct{}

func (CacheWrite) Name() string { return "cache_write" }
func (CacheWrite) isInPlace()   {}

func (CacheWrite) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	c, s, r := in[0], in[1], in[2]
	if c.DType != F32 || s.DType != F32 || len(c.Shape) != 2 || s.Shape.Last() != c.Shape[1] {
		return nil, fmt.Errorf("cache %s does not take rows of %s", c, s)
	}
	if r.DType != I32 || r.Shape.Numel() != s.Shape.Rows() {
		return nil, fmt.Errorf("rows must be i32 [%d], got %s", s.Shape.Rows(), r)
	}
	return []Meta{c}, nil
}

// GatherLoRA adds to each row of a batch the LoRA delta of the adapter that row picks from a pool,
// so that one launch serves any mix of adapters: out[n] = y[n] + B_s·(A_s·x[n]) with s = sel[n],
// y[n] where sel[n] < 0. The pool stacks P adapters of rank up to R (zero rows and columns pad
// lower ranks; each B_s carries its adapter's scale): A: [P·R, in], A_s its rows s·R..; B:
// [P·out, R], B_s its rows s·out... Operands: y: [N, out], x: [N, in], sel: i32 [N], A, B. It has
// no backward pass (serving).
type GatherLoRA struct{ R int }

func (GatherLoRA) Name() string { return "gather_lora" }

// Dims returns rows, in, out and the pool's slots for the operands.
func (o GatherLoRA) Dims(in []Meta) (n, din, dout, slots int) {
	n, din, dout = in[1].Shape[0], in[1].Shape[1], in[0].Shape[1]
	return n, din, dout, in[3].Shape[0] / max(o.R, 1)
}

func (o GatherLoRA) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 5); err != nil {
		return nil, err
	}
	y, x, sel, a, b := in[0], in[1], in[2], in[3], in[4]
	for _, m := range []Meta{y, x, a, b} {
		if m.DType != F32 || len(m.Shape) != 2 {
			return nil, fmt.Errorf("y, x, A and B must be f32 matrices, got %s", m)
		}
	}
	if o.R <= 0 || a.Shape[0]%o.R != 0 {
		return nil, fmt.Errorf("A %s is not slots of rank %d", a.Shape, o.R)
	}
	n, din, dout, slots := o.Dims(in)
	if y.Shape[0] != n || a.Shape[1] != din || b.Shape[0] != slots*dout || b.Shape[1] != o.R {
		return nil, fmt.Errorf("y %s, x %s, A %s and B %s do not fit", y.Shape, x.Shape, a.Shape, b.Shape)
	}
	if sel.DType != I32 || sel.Shape.Numel() != n {
		return nil, fmt.Errorf("sel must be i32 [%d], got %s", n, sel)
	}
	return []Meta{y}, nil
}

// GatherScaleCols is IA3's scaling with a vector each row picks from a pool: out[n] = x[n] ⊙ L[s]
// with s = sel[n], x[n] where sel[n] < 0. Operands: x: [N, dim], sel: i32 [N], L: [P, dim]. It has
// no backward pass (serving).
type GatherScaleCols struct{}

func (GatherScaleCols) Name() string { return "gather_scale_cols" }

func (GatherScaleCols) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 3); err != nil {
		return nil, err
	}
	x, sel, l := in[0], in[1], in[2]
	if x.DType != F32 || len(x.Shape) != 2 {
		return nil, fmt.Errorf("x must be an f32 matrix, got %s", x)
	}
	if sel.DType != I32 || sel.Shape.Numel() != x.Shape[0] {
		return nil, fmt.Errorf("sel must be i32 [%d], got %s", x.Shape[0], sel)
	}
	if l.DType != F32 || len(l.Shape) != 2 || l.Shape[1] != x.Shape[1] {
		return nil, fmt.Errorf("L must be f32 [slots, %d], got %s", x.Shape[1], l)
	}
	return []Meta{x}, nil
}

// DivSqrt is DoRA's magnitude scaling: y = x ⊘ sqrt(n), n: [dim] broadcast over the rows of x:
// [..., dim]. n carries no gradient: DoRA detaches the weight norm ‖W + s·B·A‖ (section 4.3 of
// the DoRA paper, as PEFT does), so the op is linear in x and its backward is DivSqrt(dy, n).
type DivSqrt struct{}

func (DivSqrt) Name() string { return "div_sqrt" }

func (DivSqrt) Infer(in []Meta) ([]Meta, error) {
	if err := wantN(in, 2); err != nil {
		return nil, err
	}
	if err := want(in[0], F32, "x"); err != nil {
		return nil, err
	}
	return []Meta{in[0]}, wantVec(in[1], in[0].Shape.Last(), "n")
}

// detached: operand 1 (the norm) is a constant to autodiff.
func (DivSqrt) detached(i int) bool { return i == 1 }
