package bench

import (
	"fmt"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/quant"
)

// The kernel names, as they appear in reports.
const (
	KernelGEMV          = "nf4_gemv"
	KernelGEMVBF16      = "nf4_gemv_bf16"
	KernelGEMVI8        = "nf4_gemv_i8"
	KernelGEMM          = "nf4_gemm"
	KernelGEMMBF16      = "nf4_gemm_bf16"
	KernelGEMMI8        = "nf4_gemm_i8"
	KernelLoRAFwd       = "lora_fwd_fused"
	KernelLoRAFwdUnfuse = "lora_fwd_unfused"
	KernelLoRABwd       = "lora_bwd_fused"
	KernelLoRABwdUnfuse = "lora_bwd_unfused"
	KernelIA3Fwd        = "ia3_fwd"
	KernelIA3Bwd        = "ia3_bwd"
	KernelAttnPrefill   = "attention_prefill"
	KernelAttnDecode    = "attention_decode"
	KernelAttnBwd       = "attention_bwd_prefill"
	KernelRMSNorm       = "rmsnorm"
)

// AllKernels lists every kernel in report order.
var AllKernels = []string{KernelGEMV, KernelGEMVBF16, KernelGEMVI8, KernelGEMM, KernelGEMMBF16, KernelGEMMI8, KernelLoRAFwd, KernelLoRAFwdUnfuse, KernelLoRABwd, KernelLoRABwdUnfuse,
	KernelIA3Fwd, KernelIA3Bwd, KernelAttnPrefill, KernelAttnDecode, KernelAttnBwd, KernelRMSNorm}

// Dims are a case's sizes: M rows (tokens), N outputs, K inputs, R the LoRA rank; for attention
// M is the query length and K the key length.
type Dims struct {
	M int `json:"m"`
	N int `json:"n"`
	K int `json:"k"`
	R int `json:"r,omitempty"`
}

// leafFunc declares (or, on a repeat, finds) a graph input.
type leafFunc func(name string, dt engine.DType, shape engine.Shape) *engine.Node

// Case is one kernel measurement: a graph built for one shape, its work in flops and the minimum
// traffic in bytes (every operand read once, every output written once).
type Case struct {
	// ID identifies the case across runs and the reference: kernel/model/projection/dims.
	ID     string
	Kernel string
	Model  string
	Proj   string
	Dims   Dims
	Shape  string
	Flops  float64
	Bytes  float64
	build  func(g *engine.Graph, in leafFunc) []*engine.Node
	// cold names the inputs (the weights) that decoding reads from memory, not from cache: on
	// the CPU each replica of the case gets its own copy of them, and enough replicas run that
	// their copies outgrow the last-level cache (coldBytes).
	cold []string
}

const nf4Blocksize = 64

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// nf4Bytes is the size of an NF4 weight of n elements: packed nibbles and f32 block scales.
func nf4Bytes(n int) float64 { return float64(n)/2 + 4*float64(ceilDiv(n, nf4Blocksize)) }

func nf4Spec(n, k int) engine.QuantSpec {
	return engine.QuantSpec{Type: quant.NF4, Blocksize: nf4Blocksize, N: n, K: k}
}

func nf4Leaves(in leafFunc, n, k int) (packed, absmax *engine.Node) {
	return in("packed", engine.U8, engine.Shape{ceilDiv(n*k, 2)}), in("absmax", engine.F32, engine.Shape{ceilDiv(n*k, nf4Blocksize)})
}

func f32(in leafFunc, name string, shape ...int) *engine.Node {
	return in(name, engine.F32, engine.Shape(shape))
}

func newCase(kernel string, m ModelShape, proj string, d Dims, flops, bytes float64, build func(g *engine.Graph, in leafFunc) []*engine.Node) Case {
	var shape string
	switch {
	case strings.HasPrefix(kernel, "attention"):
		shape = fmt.Sprintf("q=%d kv=%d", d.M, d.K)
	case d.K == 0:
		shape = fmt.Sprintf("%d×%d", d.M, d.N)
	default:
		shape = fmt.Sprintf("M=%d N=%d K=%d", d.M, d.N, d.K)
	}
	if d.R > 0 {
		shape += fmt.Sprintf(" r=%d", d.R)
	}
	id := fmt.Sprintf("%s/%s/%s/%d,%d,%d,%d", kernel, m.Name, proj, d.M, d.N, d.K, d.R)
	return Case{ID: id, Kernel: kernel, Model: m.Name, Proj: proj, Dims: d, Shape: shape, Flops: flops, Bytes: bytes, build: build}
}

// GEMVCase is y = x·Wᵀ for one token and an NF4 W: [n, k].
func GEMVCase(m ModelShape, proj string, n, k int) Case { return qmmCase(KernelGEMV, m, proj, 1, n, k) }

// GEMVBF16Case is GEMVCase with bfloat16 products allowed (engine.QuantSpec.Compute), which the
// CPU takes where it has AVX512_BF16 (measured on the CPU only).
func GEMVBF16Case(m ModelShape, proj string, n, k int) Case {
	return qmmCase(KernelGEMVBF16, m, proj, 1, n, k)
}

// GEMVI8Case is GEMVCase with 8-bit integer products allowed (engine.QuantSpec.Compute I8), which
// the CPU takes where it has AVX512_VNNI (measured on the CPU only).
func GEMVI8Case(m ModelShape, proj string, n, k int) Case {
	return qmmCase(KernelGEMVI8, m, proj, 1, n, k)
}

// GEMMCase is y = x·Wᵀ for rows tokens and an NF4 W: [n, k].
func GEMMCase(m ModelShape, proj string, rows, n, k int) Case {
	return qmmCase(KernelGEMM, m, proj, rows, n, k)
}

func qmmCase(kernel string, m ModelShape, proj string, rows, n, k int) Case {
	d := Dims{M: rows, N: n, K: k}
	flops := 2 * float64(rows) * float64(n) * float64(k)
	bytes := nf4Bytes(n*k) + 4*float64(rows*(n+k))
	c := newCase(kernel, m, proj, d, flops, bytes, func(g *engine.Graph, in leafFunc) []*engine.Node {
		p, a := nf4Leaves(in, n, k)
		q := nf4Spec(n, k)
		switch kernel {
		case KernelGEMVBF16, KernelGEMMBF16:
			q.Compute = engine.BF16
		case KernelGEMVI8, KernelGEMMI8:
			q.Compute = engine.I8
		}
		return []*engine.Node{g.QMatMul(f32(in, "x", rows, k), p, a, q)}
	})
	if rows == 1 {
		// A decoding step reads every weight once: from memory, as the roofline's bandwidth is.
		c.cold = []string{"packed", "absmax"}
	}
	return c
}

// GEMMI8Case is GEMMCase with 8-bit products allowed, which the CPU takes where it has AVX512_VNNI
// (measured on the CPU only, against the 8-bit dot product's peak).
func GEMMI8Case(m ModelShape, proj string, rows, n, k int) Case {
	return qmmCase(KernelGEMMI8, m, proj, rows, n, k)
}

// loraScale is alpha/r for the common alpha = 2r.
const loraScale = 2

// GEMMBF16Case is GEMMCase with bfloat16 products allowed, which the CPU takes where it has
// AVX512_BF16 (measured on the CPU only, against the bfloat16 dot product's peak).
func GEMMBF16Case(m ModelShape, proj string, rows, n, k int) Case {
	return qmmCase(KernelGEMMBF16, m, proj, rows, n, k)
}

// LoRAFwdCase is QLoRA's forward y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with an NF4 W: [n, k], fused in one op
// or recorded as separate matmuls.
func LoRAFwdCase(m ModelShape, proj string, rows, n, k, r int, fused bool) Case {
	d := Dims{M: rows, N: n, K: k, R: r}
	fl := 2 * (float64(rows)*float64(n)*float64(k) + float64(rows*r)*float64(k+n))
	by := nf4Bytes(n*k) + 4*float64(rows*(k+n+r)+r*(k+n))
	kernel := KernelLoRAFwdUnfuse
	if fused {
		kernel = KernelLoRAFwd
	}
	q := nf4Spec(n, k)
	return newCase(kernel, m, proj, d, fl, by, func(g *engine.Graph, in leafFunc) []*engine.Node {
		p, a := nf4Leaves(in, n, k)
		x, A, B := f32(in, "x", rows, k), f32(in, "A", r, k), f32(in, "B", n, r)
		if fused {
			return g.Apply(engine.LoRA{Scale: loraScale, Quant: &q}, x, p, a, A, B)[:1]
		}
		base := g.QMatMul(x, p, a, q)
		low := g.MatMul(g.MatMul(x, A, false, true), B, false, true)
		return []*engine.Node{g.Add(base, g.Scale(low, loraScale))}
	})
}

// LoRABwdCase is QLoRA's backward: dx = dy·W + s·(dy·B)·A, dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·xa, fused
// in one op or recorded as separate matmuls.
func LoRABwdCase(m ModelShape, proj string, rows, n, k, r int, fused bool) Case {
	d := Dims{M: rows, N: n, K: k, R: r}
	fl := 2 * (float64(rows)*float64(n)*float64(k) + 3*float64(rows*r)*float64(k+n))
	by := nf4Bytes(n*k) + 4*float64(rows*(2*k+n+r)+2*r*(k+n))
	kernel := KernelLoRABwdUnfuse
	if fused {
		kernel = KernelLoRABwd
	}
	q := nf4Spec(n, k)
	return newCase(kernel, m, proj, d, fl, by, func(g *engine.Graph, in leafFunc) []*engine.Node {
		p, a := nf4Leaves(in, n, k)
		dy, x := f32(in, "dy", rows, n), f32(in, "x", rows, k)
		A, B, xa := f32(in, "A", r, k), f32(in, "B", n, r), f32(in, "xa", rows, r)
		if fused {
			return g.Apply(engine.LoRABackward{Scale: loraScale, Quant: &q, NeedX: true, NeedA: true, NeedB: true}, dy, x, p, a, A, B, xa)[:3]
		}
		t := g.MatMul(dy, B, false, false)
		dx := g.Add(g.Apply1(engine.QMatMul{Quant: q, TransW: true}, dy, p, a), g.Scale(g.MatMul(t, A, false, false), loraScale))
		dA := g.Scale(g.MatMul(t, x, true, false), loraScale)
		dB := g.Scale(g.MatMul(dy, xa, true, false), loraScale)
		return []*engine.Node{dx, dA, dB}
	})
}

// IA3Case is IA3's scaling x ⊙ l over [rows, dim] (the MLP's intermediate activations), forward
// or backward (dx and dl).
func IA3Case(m ModelShape, rows, dim int, backward bool) Case {
	d := Dims{M: rows, N: dim}
	md, df := float64(rows*dim), float64(dim)
	if !backward {
		return newCase(KernelIA3Fwd, m, "mlp", d, md, 4*(2*md+df), func(g *engine.Graph, in leafFunc) []*engine.Node {
			return []*engine.Node{g.ScaleCols(f32(in, "x", rows, dim), f32(in, "l", dim))}
		})
	}
	return newCase(KernelIA3Bwd, m, "mlp", d, 3*md, 4*(3*md+2*df), func(g *engine.Graph, in leafFunc) []*engine.Node {
		return g.Apply(engine.ScaleColsBackward{NeedX: true, NeedL: true}, f32(in, "dy", rows, dim), f32(in, "x", rows, dim), f32(in, "l", dim))[:2]
	})
}

// RMSNormCase is RMSNorm over [rows, hidden].
func RMSNormCase(m ModelShape, rows int) Case {
	d := Dims{M: rows, N: m.Hidden}
	md := float64(rows * m.Hidden)
	return newCase(KernelRMSNorm, m, "norm", d, 4*md, 4*(2*md+float64(m.Hidden)), func(g *engine.Graph, in leafFunc) []*engine.Node {
		return []*engine.Node{g.RMSNorm(f32(in, "x", rows, m.Hidden), f32(in, "w", m.Hidden), 1e-5)}
	})
}

// AttentionCase is causal grouped-query attention of qlen queries over kvlen keys (prefill: qlen
// = kvlen; decode: qlen 1), forward or backward.
func AttentionCase(m ModelShape, qlen, kvlen int, backward bool) Case {
	a := engine.Attention{Batch: 1, QLen: qlen, KVLen: kvlen, Heads: m.Heads, KVHeads: m.KVHeads, HeadDim: m.HeadDim, Scale: 0.125}
	// Query i sits at position kvlen−qlen+i and sees that many keys plus itself.
	visible := float64(qlen)*float64(kvlen-qlen) + float64(qlen)*float64(qlen+1)/2
	hd, kvd := float64(m.Heads*m.HeadDim), float64(m.KVHeads*m.HeadDim)
	fwd := 4 * float64(m.Heads*m.HeadDim) * visible // QKᵀ and PV, 2 flops a multiply-add
	d := Dims{M: qlen, N: m.Heads * m.HeadDim, K: kvlen}
	proj := fmt.Sprintf("heads %d/%d×%d", m.Heads, m.KVHeads, m.HeadDim)
	q, kv := float64(qlen), float64(kvlen)
	if !backward {
		kernel := KernelAttnPrefill
		if qlen == 1 {
			kernel = KernelAttnDecode
		}
		by := 4 * (2*q*hd + 2*kv*kvd + float64(m.Heads)*q)
		c := newCase(kernel, m, proj, d, fwd, by, func(g *engine.Graph, in leafFunc) []*engine.Node {
			return g.Apply(a, f32(in, "q", qlen, m.Heads*m.HeadDim), f32(in, "k", kvlen, m.KVHeads*m.HeadDim), f32(in, "v", kvlen, m.KVHeads*m.HeadDim))[:1]
		})
		if qlen == 1 {
			// A decoding step reads every layer's KV cache once, beside the weights: from memory.
			c.cold = []string{"k", "v"}
		}
		return c
	}
	// Backward recomputes the scores and runs four more matmuls: 2.5× the forward's flops.
	by := 4 * (4*q*hd + 4*kv*kvd + float64(m.Heads)*q)
	return newCase(KernelAttnBwd, m, proj, d, 2.5*fwd, by, func(g *engine.Graph, in leafFunc) []*engine.Node {
		ab := engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}
		return g.Apply(ab, f32(in, "dout", qlen, m.Heads*m.HeadDim), f32(in, "q", qlen, m.Heads*m.HeadDim),
			f32(in, "k", kvlen, m.KVHeads*m.HeadDim), f32(in, "v", kvlen, m.KVHeads*m.HeadDim),
			f32(in, "out", qlen, m.Heads*m.HeadDim), f32(in, "lse", 1, m.Heads, qlen))[:3]
	})
}

// Cases lists the kernel cases of one model at the given token count and context, restricted to
// kernels (all when empty). loraProjs names the projections LoRA is measured on.
func Cases(m ModelShape, tokens, context, rank int, kernels []string, loraProjs []string) []Case {
	want := func(k string) bool {
		if len(kernels) == 0 {
			return true
		}
		for _, x := range kernels {
			if x == k {
				return true
			}
		}
		return false
	}
	var cs []Case
	add := func(c Case) {
		if want(c.Kernel) {
			cs = append(cs, c)
		}
	}
	ups := m.UniqueProjections()
	for _, p := range ups {
		add(GEMVCase(m, p.Name, p.Out, p.In))
	}
	for _, p := range ups {
		add(GEMVBF16Case(m, p.Name, p.Out, p.In))
	}
	for _, p := range ups {
		add(GEMVI8Case(m, p.Name, p.Out, p.In))
	}
	for _, p := range ups {
		add(GEMMCase(m, p.Name, tokens, p.Out, p.In))
	}
	for _, p := range ups {
		add(GEMMBF16Case(m, p.Name, tokens, p.Out, p.In))
	}
	for _, p := range ups {
		add(GEMMI8Case(m, p.Name, tokens, p.Out, p.In))
	}
	for _, p := range m.Projections() {
		for _, lp := range loraProjs {
			if p.Name != lp {
				continue
			}
			add(LoRAFwdCase(m, p.Name, tokens, p.Out, p.In, rank, true))
			add(LoRAFwdCase(m, p.Name, tokens, p.Out, p.In, rank, false))
			add(LoRABwdCase(m, p.Name, tokens, p.Out, p.In, rank, true))
			add(LoRABwdCase(m, p.Name, tokens, p.Out, p.In, rank, false))
		}
	}
	add(IA3Case(m, tokens, m.Intermediate, false))
	add(IA3Case(m, tokens, m.Intermediate, true))
	add(AttentionCase(m, tokens, tokens, false))
	add(AttentionCase(m, 1, context, false))
	add(AttentionCase(m, tokens, tokens, true))
	add(RMSNormCase(m, tokens))
	return cs
}
