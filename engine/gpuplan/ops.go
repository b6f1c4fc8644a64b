package gpuplan

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// Supports reports whether a kernel exists for op with these operands. It checks what the kernels
// assume (dtypes, head dims, binding sizes) so that a graph fails at compile time, not at run time.
func Supports(d Device, op engine.Op, in []engine.Meta) error {
	outs, err := op.Infer(in)
	if err != nil {
		return fmt.Errorf("%s: %w", op.Name(), err)
	}
	maxBind := d.MaxBinding
	for _, m := range append(append([]engine.Meta(nil), in...), outs...) {
		if m.Bytes() > maxBind {
			return fmt.Errorf("%s: operand %s is larger than the device's %d-byte storage binding limit", op.Name(), m, maxBind)
		}
		if m.Shape.Numel() >= math.MaxInt32 {
			return fmt.Errorf("%s: operand %s has too many elements for 32-bit indexing", op.Name(), m)
		}
	}
	if err := checkHalf(op, in); err != nil {
		return fmt.Errorf("%s: %w", op.Name(), err)
	}
	switch o := op.(type) {
	case engine.MatMul16, engine.Embedding16:
		return nil
	case engine.MatMul, engine.ScaleCols, engine.DivSqrt, engine.ScaleColsBackward, engine.RMSNorm, engine.RMSNormBackward,
		engine.SwiGLU, engine.SwiGLUBackward, engine.Softmax, engine.SoftmaxBackward, engine.Embedding,
		engine.EmbeddingBackward, engine.CrossEntropy, engine.CrossEntropyBackward, engine.Binary,
		engine.Scale, engine.AddBias, engine.SumRows, engine.Sum, engine.Expand, engine.Fill, engine.Reshape,
		engine.Cast, engine.Dropout, engine.CacheWrite, engine.GatherLoRA,
		engine.Dequantize4, engine.GatherScaleCols, engine.SumSquaresN, engine.ClipStatus, engine.AdamWStep, engine.AdamW8bitStep,
		engine.Accumulate, engine.TopK:
		return nil
	case engine.Unary:
		if o.Fn != engine.SiLU {
			return fmt.Errorf("no kernel for unary function %d", o.Fn)
		}
		return nil
	case engine.UnaryBackward:
		if o.Fn != engine.SiLU {
			return fmt.Errorf("no kernel for the backward of unary function %d", o.Fn)
		}
		return nil
	case engine.QMatMul:
		return checkQuant(&o.Quant)
	case engine.LoRA:
		if o.Quant != nil {
			return checkQuant(o.Quant)
		}
		return nil
	case engine.LoRABackward:
		if o.Quant != nil {
			return checkQuant(o.Quant)
		}
		return nil
	case engine.RoPE:
		if o.HeadDim/2 > MaxHead {
			return fmt.Errorf("rope: head dim %d exceeds %d", o.HeadDim, 2*MaxHead)
		}
		return nil
	case engine.Attention:
		return checkAttention(o)
	case engine.AttentionBackward:
		return checkAttention(o.Attention)
	}
	return fmt.Errorf("no kernel for %s", op.Name())
}

// checkHalf refuses 16-bit float operands where no kernel reads them: the kernels of MatMul16,
// Embedding16 and the dense LoRA ops read a frozen 16-bit weight (operand 1 of LoRA, 2 of
// LoRABackward) and Cast converts; any other op with one is decomposed by Compile.
func checkHalf(op engine.Op, in []engine.Meta) error {
	at := -1
	switch o := op.(type) {
	case engine.Cast, engine.MatMul16, engine.Embedding16:
		return nil
	case engine.LoRA:
		if o.Quant == nil {
			at = 1
		}
	case engine.LoRABackward:
		if o.Quant == nil {
			at = 2
		}
	}
	for i, m := range in {
		if engine.IsHalf(m.DType) && i != at {
			return fmt.Errorf("no kernel reads the 16-bit operand %d (%s)", i, m)
		}
	}
	return nil
}

func checkQuant(q *engine.QuantSpec) error {
	if int64(q.N)*int64(q.K) >= math.MaxInt32 {
		return fmt.Errorf("quantized weight [%d %d] is too large for 32-bit nibble indexing", q.N, q.K)
	}
	if q.Blocksize%8 != 0 {
		return fmt.Errorf("quant blocksize %d must be a multiple of 8", q.Blocksize)
	}
	return nil
}

func checkAttention(a engine.Attention) error {
	if a.HeadDim > MaxHead || a.HeadDim <= 0 {
		return fmt.Errorf("attention: head dim %d outside 1..%d", a.HeadDim, MaxHead)
	}
	return nil
}

// Launch plans one launch on d: it checks the launch against the op's shape rules (kernels index
// operands by position) and returns the dispatches and copies that run it, in order.
func Launch(d Device, l engine.Launch) (*Plan, error) {
	if err := engine.CheckLaunch(l); err != nil {
		return nil, err
	}
	q := &planner{d: d, l: l, p: &Plan{}}
	if err := q.launch(); err != nil {
		return nil, err
	}
	return q.p, nil
}

// fault is the binding of the backend's fault flag.
func (q *planner) fault() Ref { return Ref{Kind: Fault, RW: true} }

func (q *planner) launch() error {
	l := q.l
	in := make([]Ref, len(l.In))
	for i := range l.In {
		in[i] = Ref{Kind: In, Index: i}
	}
	out := make([]Ref, len(l.Out))
	for i := range l.Out {
		out[i] = Ref{Kind: Out, Index: i, RW: true}
	}
	_, cacheWrite := l.Op.(engine.CacheWrite)
	_, adamwStep := l.Op.(engine.AdamWStep)
	_, accumulate := l.Op.(engine.Accumulate)
	_, adamw8bit := l.Op.(engine.AdamW8bitStep)
	if !cacheWrite && !adamwStep && !accumulate && !adamw8bit {
		for _, o := range l.Out {
			for _, x := range l.In {
				if o.Buf == x.Buf {
					return fmt.Errorf("an output shares its buffer with an operand")
				}
			}
		}
	}
	wgc := c("WG", WG)
	n := 0
	if len(l.Out) > 0 {
		n = l.Out[0].Meta.Shape.Numel()
	}
	switch op := l.Op.(type) {
	case engine.Unary:
		return q.map1(0, in[0], out[0], n, 0)
	case engine.Scale:
		return q.map1(1, in[0], out[0], n, op.S)
	case engine.CacheWrite:
		// In place: out[0] is in[0]'s buffer, bound once as read_write.
		m := l.In[1].Meta.Shape.Numel()
		g, err := q.items(m, WG)
		if err != nil {
			return err
		}
		cache := l.In[0].Meta.Shape
		q.dispatch("cache_write", []shaders.Const{wgc}, g, new(Params).U(m, cache[1], cache[0]), in[1], in[2], out[0], q.fault())
	case engine.GatherScaleCols:
		g, err := q.items(n, WG)
		if err != nil {
			return err
		}
		q.dispatch("gather_scale_cols", []shaders.Const{wgc}, g, new(Params).U(n, l.In[0].Meta.Shape[1]).I(int32(l.In[2].Meta.Shape[0])), in[0], in[1], in[2], out[0], q.fault())
	case engine.GatherLoRA:
		return q.gatherLoRA(op, l, in, out)
	case engine.Dropout:
		return q.dropout(in[0], in[1], out[0], n, op.P, op.Salt)
	case engine.Expand:
		return q.map1(2, in[0], out[0], n, 0)
	case engine.Fill:
		g, err := q.items(n, WG)
		if err != nil {
			return err
		}
		q.dispatch("fill", []shaders.Const{wgc}, g, new(Params).U(n).F(op.Value), out[0])
	case engine.Binary:
		fn := 0
		if op.Fn == engine.Mul {
			fn = 1
		}
		return q.map2(fn, in[0], in[1], out[0], n, 1)
	case engine.UnaryBackward:
		return q.map2(2, in[0], in[1], out[0], n, 1)
	case engine.SwiGLU:
		return q.map2(3, in[0], in[1], out[0], n, 1)
	case engine.ScaleCols:
		return q.map2(4, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.DivSqrt:
		return q.map2(6, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.AddBias:
		return q.map2(5, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.ScaleColsBackward:
		x := l.In[1].Meta.Shape
		k := 0
		if op.NeedX {
			if err := q.map2(4, in[0], in[2], out[k], x.Numel(), x.Last()); err != nil {
				return err
			}
			k++
		}
		if op.NeedL {
			d := q.dummy()
			return q.colsum(1, in[0], in[1], d, out[k], x.Rows(), x.Last())
		}
	case engine.SwiGLUBackward:
		n := l.In[0].Meta.Shape.Numel()
		o := [2]Ref{}
		k := 0
		for i, need := range []bool{op.NeedGate, op.NeedUp} {
			if need {
				o[i] = out[k]
				k++
			} else {
				t := q.temp(int64(4 * n))
				o[i] = t
			}
		}
		g, err := q.items(n, WG)
		if err != nil {
			return err
		}
		q.dispatch("swiglu_bwd", []shaders.Const{wgc}, g, new(Params).U(n), in[0], in[1], in[2], o[0], o[1])
	case engine.SumRows:
		x := l.In[0].Meta.Shape
		d := q.dummy()
		return q.colsum(0, in[0], d, d, out[0], x.Rows(), x.Last())
	case engine.Sum:
		return q.reduce(in[0], out[0], l.In[0].Meta.Shape.Numel())
	case engine.RMSNorm:
		x := l.In[0].Meta.Shape
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		q.dispatch("rmsnorm", []shaders.Const{wgc}, g, new(Params).U(x.Rows(), x.Last()).F(op.Eps), in[0], in[1], out[0])
	case engine.RMSNormBackward:
		x := l.In[1].Meta.Shape
		rows, dim := x.Rows(), x.Last()
		k := 0
		dx := Ref{}
		if op.NeedX {
			dx = out[0]
			k++
		} else {
			t := q.temp(int64(4 * x.Numel()))
			dx = t
		}
		rstd := q.temp(int64(4 * rows))
		g, err := q.items(rows, 1)
		if err != nil {
			return err
		}
		q.dispatch("rmsnorm_bwd", []shaders.Const{wgc}, g, new(Params).U(rows, dim).F(op.Eps), in[0], in[1], in[2], dx, rstd)
		if op.NeedW {
			rstd.RW = false
			return q.colsum(2, in[0], in[1], rstd, out[k], rows, dim)
		}
	case engine.Softmax:
		x := l.In[0].Meta.Shape
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		q.dispatch("softmax", []shaders.Const{wgc}, g, new(Params).U(x.Rows(), x.Last()), in[0], out[0])
	case engine.SoftmaxBackward:
		x := l.In[0].Meta.Shape
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		q.dispatch("softmax_bwd", []shaders.Const{wgc}, g, new(Params).U(x.Rows(), x.Last()), in[0], in[1], out[0])
	case engine.CrossEntropy:
		x := l.In[0].Meta.Shape
		loss := q.temp(int64(4 * x.Rows()))
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		q.dispatch("xent_rows", []shaders.Const{wgc}, g, new(Params).U(x.Rows(), x.Last()).I(op.Ignore), in[0], in[1], loss, q.fault())
		loss.RW = false
		q.dispatch("xent_mean", []shaders.Const{wgc}, [3]uint32{1, 1, 1}, new(Params).U(x.Rows(), x.Last()).I(op.Ignore), loss, in[1], out[0])
	case engine.CrossEntropyBackward:
		x := l.In[1].Meta.Shape
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		q.dispatch("xent_bwd", []shaders.Const{wgc}, g, new(Params).U(x.Rows(), x.Last()).I(op.Ignore), in[0], in[1], in[2], out[0], q.fault())
	case engine.Embedding:
		t := l.In[0].Meta.Shape
		ids := l.In[1].Meta.Shape.Numel()
		g, err := q.items(ids*t[1], WG)
		if err != nil {
			return err
		}
		pad := 0
		if op.Pad {
			pad = 1
		}
		q.dispatch("embedding", []shaders.Const{wgc, c("TH", 0)}, g, new(Params).U(ids, t[1], t[0], pad).F(op.PadValue), in[0], in[1], out[0], q.fault())
	case engine.Embedding16:
		t := l.In[0].Meta.Shape
		ids := l.In[1].Meta.Shape.Numel()
		g, err := q.items(ids*t[1], WG)
		if err != nil {
			return err
		}
		q.dispatch("embedding", []shaders.Const{wgc, c("TH", dtypeCode(l.In[0].Meta.DType))}, g, new(Params).U(ids, t[1], t[0], 0).F(0), in[0], in[1], out[0], q.fault())
	case engine.MatMul16:
		return q.matmul16(op.TransW, l.In[0].Meta.Shape.Rows(), l.In[1].Meta, in[0], in[1], out[0])
	case engine.EmbeddingBackward:
		dim := l.In[0].Meta.Shape.Last()
		ids := l.In[1].Meta.Shape.Numel()
		g, err := q.items(op.Vocab, 1)
		if err != nil {
			return err
		}
		q.dispatch("embedding_bwd", []shaders.Const{wgc}, g, new(Params).U(ids, dim, op.Vocab), in[0], in[1], out[0], q.fault())
	case engine.RoPE:
		x := l.In[0].Meta.Shape
		half := op.HeadDim / 2
		g, err := q.items(x.Rows()*op.Heads*half, WG)
		if err != nil {
			return err
		}
		scale := op.AttnScale
		if scale == 0 {
			scale = 1
		}
		inv := 0
		if op.Inverse {
			inv = 1
		}
		p := new(Params).U(x.Rows(), op.Heads, op.HeadDim, inv).F(scale).Vec4s(op.InvFreq, MaxHead)
		q.dispatch("rope", []shaders.Const{wgc, c("MAXF", MaxHead/4)}, g, p, in[0], in[1], out[0])
	case engine.Cast:
		return q.cast(l.In[0].Meta.DType, op.To, in[0], out[0], n)
	case engine.SumSquaresN:
		return q.sumSquaresN(l, in, out[0])
	case engine.TopK:
		x := l.In[0].Meta.Shape
		g, err := q.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		// Without Sample the kernel reads neither ctl nor its score scratch: small stand-ins.
		ctl, score := q.dummy(), q.temp(16)
		if op.Sample {
			ctl, score = in[1], q.temp(int64(x.Numel())*4)
		}
		q.dispatch("top_k", []shaders.Const{wgc, c("SAMPLE", op.Sample)}, g, new(Params).U(x.Rows(), x.Last(), op.K), in[0], ctl, score, out[0])
	case engine.ClipStatus:
		q.dispatch("clip_status", []shaders.Const{wgc}, [3]uint32{1, 1, 1}, new(Params).F(op.MaxNorm), in[0], in[1], in[2], out[0])
	case engine.AdamWStep:
		return q.adamwStep(op, l, in, out)
	case engine.AdamW8bitStep:
		return q.adamw8bitStep(op, l, in, out)
	case engine.Accumulate:
		// In place: out[0] is in[0]'s buffer, bound once as read_write.
		d, s, n := op.Span(l.Out[0].Meta)
		g, err := q.items(n, WG)
		if err != nil {
			return err
		}
		q.dispatch("accumulate", []shaders.Const{wgc, c("OVERWRITE", op.Overwrite)}, g, new(Params).U(n, d, s), out[0], in[1])
	case engine.MatMul:
		a, bm := l.In[0].Meta.Shape, l.In[1].Meta.Shape
		m, nn, k := op.Dims(a, bm)
		lda, ldb := k, nn
		if op.TransA {
			lda = m
		}
		if op.TransB {
			ldb = k
		}
		return q.matmul(mm{transA: op.TransA, transB: op.TransB, m: m, n: nn, k: k, a: in[0], lda: lda, b: in[1], ldb: ldb, c: out[0], ldc: nn, alpha: 1})
	case engine.Dequantize4:
		g, err := q.items(n, WG)
		if err != nil {
			return err
		}
		code := op.Quant.Code()
		q.dispatch("dequantize4", []shaders.Const{wgc}, g, new(Params).U(n, op.Quant.Blocksize).Vec4s(code[:], 16), in[0], in[1], out[0])
	case engine.QMatMul:
		return q.qmatmul(&op.Quant, op.TransW, l.In[0].Meta.Shape.Rows(), in[0], in[1], in[2], out[0], nil)
	case engine.LoRA:
		return q.lora(op, l, in, out)
	case engine.LoRABackward:
		return q.loraBackward(op, l, in, out)
	case engine.Attention:
		return q.attention(op, l.In[1].Meta.Shape.Rows(), in, out)
	case engine.AttentionBackward:
		return q.attentionBackward(op, in, out)
	case engine.Reshape:
		return fmt.Errorf("reshape is a view and has no kernel")
	default:
		return fmt.Errorf("no webgpu kernel")
	}
	return nil
}

// map1: y = f(x) elementwise; fn 0 silu, 1 scale by s, 2 broadcast x[0], 3 copy.
func (q *planner) map1(fn int, x, y Ref, n int, s float32) error {
	g, err := q.items(n, WG)
	if err != nil {
		return err
	}
	q.dispatch("map1", []shaders.Const{c("WG", WG), c("OP", fn)}, g, new(Params).U(n).F(s), x, y)
	return nil
}

// map2: y = f(a, b) elementwise; fn 0 add, 1 mul, 2 silu backward (dy, x), 3 swiglu (gate, up),
// 4 a·b[i mod dim], 5 a + b[i mod dim].
func (q *planner) map2(fn int, a, b, y Ref, n, dim int) error {
	g, err := q.items(n, WG)
	if err != nil {
		return err
	}
	q.dispatch("map2", []shaders.Const{c("WG", WG), c("OP", fn)}, g, new(Params).U(n, dim), a, b, y)
	return nil
}

// colsum: y[j] = Σ_i f(a, b, c)[i, j] as a fixed-order workgroup reduction (deterministic); fn 0 a,
// 1 a·b, 2 a·b·c[i].
func (q *planner) colsum(fn int, a, b, cc, y Ref, rows, dim int) error {
	const cols = 16
	g, err := q.items(dim, cols)
	if err != nil {
		return err
	}
	q.dispatch("colsum", []shaders.Const{c("WG", WG), c("OP", fn), c("CW", cols)}, g, new(Params).U(rows, dim), a, b, cc, y)
	return nil
}

func dtypeCode(d engine.DType) int {
	switch d {
	case engine.F16:
		return 1
	case engine.BF16:
		return 2
	}
	return 0
}

// cast converts between f32, f16 and bf16; half types are read and written as packed u32 words.
func (q *planner) cast(from, to engine.DType, x, y Ref, n int) error {
	if from == to && from == engine.F32 {
		return q.map1(3, x, y, n, 0)
	}
	units := n
	if to != engine.F32 {
		units = CeilDiv(n, 2) // one invocation per output word
	}
	g, err := q.items(units, WG)
	if err != nil {
		return err
	}
	q.dispatch("cast", []shaders.Const{c("WG", WG), c("SRC", dtypeCode(from)), c("DST", dtypeCode(to))}, g, new(Params).U(n), x, y)
	return nil
}

// reduce sums f(x) (fn 0 x, 1 x²) into y[0]: one workgroup when x is small, else partial sums of
// fixed chunks (at most 1024 of them) and a second pass over the partials.
func (q *planner) reduce(x, y Ref, n int) error {
	perGroup := ReducePerGroup
	if n <= perGroup {
		q.dispatch("reduce", []shaders.Const{c("WG", WG)}, [3]uint32{1, 1, 1}, new(Params).U(n, n), x, y)
		return nil
	}
	chunk := CeilDiv(n, 1024)
	if chunk < perGroup {
		chunk = perGroup
	}
	groups := CeilDiv(n, chunk)
	part := q.temp(int64(4 * groups))
	g, err := GroupsFor(groups, q.d.maxGroups())
	if err != nil {
		return err
	}
	q.dispatch("reduce", []shaders.Const{c("WG", WG)}, g, new(Params).U(n, chunk), x, part)
	part.RW = false
	q.dispatch("reduce", []shaders.Const{c("WG", WG)}, [3]uint32{1, 1, 1}, new(Params).U(groups, groups), part, y)
	return nil
}
