package webgpu

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// Kernel shape constants. WG is the invocation count of the 1D kernels; the matmul tile is BM×BN
// outputs over BK-deep slices of k, TM×TN per invocation (256 invocations).
const (
	wg       = 256
	maxHead  = 256 // largest head dim of attention (private accumulators) and of RoPE
	tileM    = 64
	tileN    = 64
	tileK    = 16
	threadsM = 4
	threadsN = 4
	// reducePerGroup is the most elements a full reduction sums in one workgroup; beyond it a
	// second pass pays off.
	reducePerGroup = 16 * wg
	// gatherRows is the rows of a batch GatherLoRA handles together.
	gatherRows = 8
	// attentionQueries is the query block of the tiled attention kernels (see attention).
	attentionQueries = 64
)

func c(name string, v any) shaders.Const {
	switch x := v.(type) {
	case bool:
		return shaders.Const{Name: name, Value: fmt.Sprint(x)}
	case int:
		return shaders.Const{Name: name, Value: fmt.Sprintf("%du", x)}
	}
	return shaders.Const{Name: name, Value: fmt.Sprint(v)}
}

// Supports reports whether a kernel exists for op with these operands. It checks what the kernels
// assume (dtypes, head dims, binding sizes) so that a graph fails at compile time, not at run time.
func (b *Backend) Supports(op engine.Op, in []engine.Meta) error {
	outs, err := op.Infer(in)
	if err != nil {
		return fmt.Errorf("webgpu: %s: %w", op.Name(), err)
	}
	maxBind := int64(b.limits.MaxStorageBufferBindingSize)
	for _, m := range append(append([]engine.Meta(nil), in...), outs...) {
		if m.Bytes() > maxBind {
			return fmt.Errorf("webgpu: %s: operand %s is larger than the device's %d-byte storage binding limit", op.Name(), m, maxBind)
		}
		if m.Shape.Numel() >= math.MaxInt32 {
			return fmt.Errorf("webgpu: %s: operand %s has too many elements for 32-bit indexing", op.Name(), m)
		}
	}
	switch o := op.(type) {
	case engine.MatMul, engine.ScaleCols, engine.DivSqrt, engine.ScaleColsBackward, engine.RMSNorm, engine.RMSNormBackward,
		engine.SwiGLU, engine.SwiGLUBackward, engine.Softmax, engine.SoftmaxBackward, engine.Embedding,
		engine.EmbeddingBackward, engine.CrossEntropy, engine.CrossEntropyBackward, engine.Binary,
		engine.Scale, engine.AddBias, engine.SumRows, engine.Sum, engine.Expand, engine.Fill, engine.Reshape,
		engine.AdamW, engine.SumSquares, engine.Cast, engine.Dropout, engine.CacheWrite, engine.GatherLoRA,
		engine.Dequantize4, engine.GatherScaleCols, engine.SumSquaresN, engine.ClipStatus, engine.AdamWStep,
		engine.AdamW8bitStep, engine.Accumulate, engine.TopK:
		return nil
	case engine.Unary:
		if o.Fn != engine.SiLU {
			return fmt.Errorf("webgpu: no kernel for unary function %d", o.Fn)
		}
		return nil
	case engine.UnaryBackward:
		if o.Fn != engine.SiLU {
			return fmt.Errorf("webgpu: no kernel for the backward of unary function %d", o.Fn)
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
		if o.HeadDim/2 > maxHead {
			return fmt.Errorf("webgpu: rope: head dim %d exceeds %d", o.HeadDim, 2*maxHead)
		}
		return nil
	case engine.Attention:
		return checkAttention(o)
	case engine.AttentionBackward:
		return checkAttention(o.Attention)
	}
	return fmt.Errorf("webgpu: no kernel for %s", op.Name())
}

func checkQuant(q *engine.QuantSpec) error {
	if int64(q.N)*int64(q.K) >= math.MaxInt32 {
		return fmt.Errorf("webgpu: quantized weight [%d %d] is too large for 32-bit nibble indexing", q.N, q.K)
	}
	if q.Blocksize%8 != 0 {
		return fmt.Errorf("webgpu: quant blocksize %d must be a multiple of 8", q.Blocksize)
	}
	return nil
}

func checkAttention(a engine.Attention) error {
	if a.HeadDim > maxHead || a.HeadDim <= 0 {
		return fmt.Errorf("webgpu: attention: head dim %d outside 1..%d", a.HeadDim, maxHead)
	}
	return nil
}

// Run executes the launches in order as one command submission.
func (b *Backend) Run(launches []engine.Launch) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	r := &recorder{b: b}
	defer r.release()
	defer func() {
		if p := recover(); p != nil { // the binding panics on some native failures
			err = fmt.Errorf("webgpu: run: %v", p)
		}
	}()
	for _, l := range launches {
		if err := r.launch(l); err != nil {
			return fmt.Errorf("webgpu: %s: %w", l.Op.Name(), err)
		}
	}
	if err := r.submit(); err != nil {
		return fmt.Errorf("webgpu: run: %w", err)
	}
	return nil
}

// arg turns an operand into a binding of exactly its bytes (whole words).
func (r *recorder) arg(a engine.Arg, rw bool) (bind, error) {
	buf, err := r.b.own(a.Buf, "operand")
	if err != nil {
		return bind{}, err
	}
	n := bindSize(a.Meta.Bytes())
	if n > buf.size {
		return bind{}, fmt.Errorf("operand %s does not fit its %d-byte buffer", a.Meta, buf.size)
	}
	if n > int64(r.b.limits.MaxStorageBufferBindingSize) {
		return bind{}, fmt.Errorf("%w: operand %s exceeds the %d-byte binding limit", ErrTooLarge, a.Meta, r.b.limits.MaxStorageBufferBindingSize)
	}
	return bind{buf: buf.buf, size: uint64(n), rw: rw}, nil
}

// fault is the binding of the device's fault flag (see Backend.fault).
func (r *recorder) fault() bind { return bind{buf: r.b.fault, size: 4, rw: true} }

// dummy is a small read-only binding for kernel inputs a variant does not read.
func (r *recorder) dummy() (bind, error) {
	t, err := r.temp(16)
	t.rw = false
	return t, err
}

func (r *recorder) launch(l engine.Launch) error {
	// Check the launch against the op's own shape rules: kernels index operands by position.
	if err := engine.CheckLaunch(l); err != nil {
		return err
	}
	in := make([]bind, len(l.In))
	for i, a := range l.In {
		x, err := r.arg(a, false)
		if err != nil {
			return err
		}
		in[i] = x
	}
	out := make([]bind, len(l.Out))
	for i, a := range l.Out {
		x, err := r.arg(a, true)
		if err != nil {
			return err
		}
		out[i] = x
	}
	_, adamw := l.Op.(engine.AdamW)
	_, cacheWrite := l.Op.(engine.CacheWrite)
	_, adamwStep := l.Op.(engine.AdamWStep)
	_, accumulate := l.Op.(engine.Accumulate)
	_, adamw8bit := l.Op.(engine.AdamW8bitStep)
	if !adamw && !cacheWrite && !adamwStep && !accumulate && !adamw8bit {
		for _, o := range out {
			for _, x := range in {
				if o.buf == x.buf {
					return fmt.Errorf("an output shares its buffer with an operand")
				}
			}
		}
	}
	wgc := c("WG", wg)
	n := 0
	if len(l.Out) > 0 {
		n = l.Out[0].Meta.Shape.Numel()
	}
	switch op := l.Op.(type) {
	case engine.Unary:
		return r.map1(0, in[0], out[0], n, 0)
	case engine.Scale:
		return r.map1(1, in[0], out[0], n, op.S)
	case engine.CacheWrite:
		// In place: out[0] is in[0]'s buffer, bound once as read_write.
		m := l.In[1].Meta.Shape.Numel()
		g, err := r.items(m, wg)
		if err != nil {
			return err
		}
		cache := l.In[0].Meta.Shape
		r.dispatch("cache_write", []shaders.Const{wgc}, g, new(params).u(m, cache[1], cache[0]), in[1], in[2], out[0], r.fault())
	case engine.GatherScaleCols:
		g, err := r.items(n, wg)
		if err != nil {
			return err
		}
		r.dispatch("gather_scale_cols", []shaders.Const{wgc}, g, new(params).u(n, l.In[0].Meta.Shape[1]).i(int32(l.In[2].Meta.Shape[0])), in[0], in[1], in[2], out[0], r.fault())
	case engine.GatherLoRA:
		return r.gatherLoRA(op, l, in, out)
	case engine.Dropout:
		return r.dropout(in[0], in[1], out[0], n, op.P, op.Salt)
	case engine.Expand:
		return r.map1(2, in[0], out[0], n, 0)
	case engine.Fill:
		g, err := r.items(n, wg)
		if err != nil {
			return err
		}
		r.dispatch("fill", []shaders.Const{wgc}, g, new(params).u(n).f(op.Value), out[0])
	case engine.Binary:
		fn := 0
		if op.Fn == engine.Mul {
			fn = 1
		}
		return r.map2(fn, in[0], in[1], out[0], n, 1)
	case engine.UnaryBackward:
		return r.map2(2, in[0], in[1], out[0], n, 1)
	case engine.SwiGLU:
		return r.map2(3, in[0], in[1], out[0], n, 1)
	case engine.ScaleCols:
		return r.map2(4, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.DivSqrt:
		return r.map2(6, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.AddBias:
		return r.map2(5, in[0], in[1], out[0], n, l.In[0].Meta.Shape.Last())
	case engine.ScaleColsBackward:
		x := l.In[1].Meta.Shape
		k := 0
		if op.NeedX {
			if err := r.map2(4, in[0], in[2], out[k], x.Numel(), x.Last()); err != nil {
				return err
			}
			k++
		}
		if op.NeedL {
			d, err := r.dummy()
			if err != nil {
				return err
			}
			return r.colsum(1, in[0], in[1], d, out[k], x.Rows(), x.Last())
		}
	case engine.SwiGLUBackward:
		n := l.In[0].Meta.Shape.Numel()
		o := [2]bind{}
		k := 0
		for i, need := range []bool{op.NeedGate, op.NeedUp} {
			if need {
				o[i] = out[k]
				k++
			} else {
				t, err := r.temp(int64(4 * n))
				if err != nil {
					return err
				}
				o[i] = t
			}
		}
		g, err := r.items(n, wg)
		if err != nil {
			return err
		}
		r.dispatch("swiglu_bwd", []shaders.Const{wgc}, g, new(params).u(n), in[0], in[1], in[2], o[0], o[1])
	case engine.SumRows:
		x := l.In[0].Meta.Shape
		d, err := r.dummy()
		if err != nil {
			return err
		}
		return r.colsum(0, in[0], d, d, out[0], x.Rows(), x.Last())
	case engine.Sum:
		return r.reduce(0, in[0], out[0], l.In[0].Meta.Shape.Numel())
	case engine.SumSquares:
		return r.reduce(1, in[0], out[0], l.In[0].Meta.Shape.Numel())
	case engine.RMSNorm:
		x := l.In[0].Meta.Shape
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("rmsnorm", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last()).f(op.Eps), in[0], in[1], out[0])
	case engine.RMSNormBackward:
		x := l.In[1].Meta.Shape
		rows, dim := x.Rows(), x.Last()
		k := 0
		dx := bind{}
		if op.NeedX {
			dx = out[0]
			k++
		} else {
			t, err := r.temp(int64(4 * x.Numel()))
			if err != nil {
				return err
			}
			dx = t
		}
		rstd, err := r.temp(int64(4 * rows))
		if err != nil {
			return err
		}
		g, err := r.items(rows, 1)
		if err != nil {
			return err
		}
		r.dispatch("rmsnorm_bwd", []shaders.Const{wgc}, g, new(params).u(rows, dim).f(op.Eps), in[0], in[1], in[2], dx, rstd)
		if op.NeedW {
			rstd.rw = false
			return r.colsum(2, in[0], in[1], rstd, out[k], rows, dim)
		}
	case engine.Softmax:
		x := l.In[0].Meta.Shape
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("softmax", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last()), in[0], out[0])
	case engine.SoftmaxBackward:
		x := l.In[0].Meta.Shape
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("softmax_bwd", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last()), in[0], in[1], out[0])
	case engine.CrossEntropy:
		x := l.In[0].Meta.Shape
		loss, err := r.temp(int64(4 * x.Rows()))
		if err != nil {
			return err
		}
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("xent_rows", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last()).i(op.Ignore), in[0], in[1], loss, r.fault())
		loss.rw = false
		r.dispatch("xent_mean", []shaders.Const{wgc}, [3]uint32{1, 1, 1}, new(params).u(x.Rows(), x.Last()).i(op.Ignore), loss, in[1], out[0])
	case engine.CrossEntropyBackward:
		x := l.In[1].Meta.Shape
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("xent_bwd", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last()).i(op.Ignore), in[0], in[1], in[2], out[0], r.fault())
	case engine.Embedding:
		t := l.In[0].Meta.Shape
		ids := l.In[1].Meta.Shape.Numel()
		g, err := r.items(ids*t[1], wg)
		if err != nil {
			return err
		}
		pad := 0
		if op.Pad {
			pad = 1
		}
		r.dispatch("embedding", []shaders.Const{wgc}, g, new(params).u(ids, t[1], t[0], pad).f(op.PadValue), in[0], in[1], out[0], r.fault())
	case engine.EmbeddingBackward:
		dim := l.In[0].Meta.Shape.Last()
		ids := l.In[1].Meta.Shape.Numel()
		g, err := r.items(op.Vocab, 1)
		if err != nil {
			return err
		}
		r.dispatch("embedding_bwd", []shaders.Const{wgc}, g, new(params).u(ids, dim, op.Vocab), in[0], in[1], out[0], r.fault())
	case engine.RoPE:
		x := l.In[0].Meta.Shape
		half := op.HeadDim / 2
		g, err := r.items(x.Rows()*op.Heads*half, wg)
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
		p := new(params).u(x.Rows(), op.Heads, op.HeadDim, inv).f(scale).vec4s(op.InvFreq, maxHead)
		r.dispatch("rope", []shaders.Const{wgc, c("MAXF", maxHead/4)}, g, p, in[0], in[1], out[0])
	case engine.Cast:
		return r.cast(l.In[0].Meta.DType, op.To, in[0], out[0], n)
	case engine.AdamW:
		return r.adamw(op, l, in, out)
	case engine.SumSquaresN:
		return r.sumSquaresN(l, in, out[0])
	case engine.TopK:
		x := l.In[0].Meta.Shape
		g, err := r.items(x.Rows(), 1)
		if err != nil {
			return err
		}
		r.dispatch("top_k", []shaders.Const{wgc}, g, new(params).u(x.Rows(), x.Last(), op.K), in[0], out[0])
	case engine.ClipStatus:
		r.dispatch("clip_status", []shaders.Const{wgc}, [3]uint32{1, 1, 1}, new(params).f(op.MaxNorm), in[0], in[1], in[2], out[0])
	case engine.AdamWStep:
		return r.adamwStep(op, l, in, out)
	case engine.AdamW8bitStep:
		return r.adamw8bitStep(op, l, in, out)
	case engine.Accumulate:
		// In place: out[0] is in[0]'s buffer, bound once as read_write.
		g, err := r.items(n, wg)
		if err != nil {
			return err
		}
		r.dispatch("accumulate", []shaders.Const{wgc, c("OVERWRITE", op.Overwrite)}, g, new(params).u(n), out[0], in[1])
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
		return r.matmul(mm{transA: op.TransA, transB: op.TransB, m: m, n: nn, k: k, a: in[0], lda: lda, b: in[1], ldb: ldb, c: out[0], ldc: nn, alpha: 1})
	case engine.Dequantize4:
		g, err := r.items(n, wg)
		if err != nil {
			return err
		}
		code := op.Quant.Code()
		r.dispatch("dequantize4", []shaders.Const{wgc}, g, new(params).u(n, op.Quant.Blocksize).vec4s(code[:], 16), in[0], in[1], out[0])
	case engine.QMatMul:
		return r.qmatmul(&op.Quant, op.TransW, l.In[0].Meta.Shape.Rows(), in[0], in[1], in[2], out[0], nil)
	case engine.LoRA:
		return r.lora(op, l, in, out)
	case engine.LoRABackward:
		return r.loraBackward(op, l, in, out)
	case engine.Attention:
		return r.attention(op, l.In[1].Meta.Shape.Rows(), in, out)
	case engine.AttentionBackward:
		return r.attentionBackward(op, in, out)
	case engine.Reshape:
		return fmt.Errorf("reshape is a view and has no kernel")
	default:
		return fmt.Errorf("no webgpu kernel")
	}
	return nil
}

// map1: y = f(x) elementwise; fn 0 silu, 1 scale by s, 2 broadcast x[0], 3 copy.
func (r *recorder) map1(fn int, x, y bind, n int, s float32) error {
	g, err := r.items(n, wg)
	if err != nil {
		return err
	}
	r.dispatch("map1", []shaders.Const{c("WG", wg), c("OP", fn)}, g, new(params).u(n).f(s), x, y)
	return nil
}

// map2: y = f(a, b) elementwise; fn 0 add, 1 mul, 2 silu backward (dy, x), 3 swiglu (gate, up),
// 4 a·b[i mod dim], 5 a + b[i mod dim].
func (r *recorder) map2(fn int, a, b, y bind, n, dim int) error {
	g, err := r.items(n, wg)
	if err != nil {
		return err
	}
	r.dispatch("map2", []shaders.Const{c("WG", wg), c("OP", fn)}, g, new(params).u(n, dim), a, b, y)
	return nil
}

// colsum: y[j] = Σ_i f(a, b, c)[i, j] as a fixed-order workgroup reduction (deterministic); fn 0 a,
// 1 a·b, 2 a·b·c[i].
func (r *recorder) colsum(fn int, a, b, cc, y bind, rows, dim int) error {
	const cols = 16
	g, err := r.items(dim, cols)
	if err != nil {
		return err
	}
	r.dispatch("colsum", []shaders.Const{c("WG", wg), c("OP", fn), c("CW", cols)}, g, new(params).u(rows, dim), a, b, cc, y)
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
func (r *recorder) cast(from, to engine.DType, x, y bind, n int) error {
	if from == to && from == engine.F32 {
		return r.map1(3, x, y, n, 0)
	}
	units := n
	if to != engine.F32 {
		units = ceilDiv(n, 2) // one invocation per output word
	}
	g, err := r.items(units, wg)
	if err != nil {
		return err
	}
	r.dispatch("cast", []shaders.Const{c("WG", wg), c("SRC", dtypeCode(from)), c("DST", dtypeCode(to))}, g, new(params).u(n), x, y)
	return nil
}

// adamw updates in place on the output buffers: outputs that are not their operand's buffer are
// first filled with a copy of it, so one kernel (bound once per buffer) serves both cases.
func (r *recorder) adamw(op engine.AdamW, l engine.Launch, in, out []bind) error {
	n := l.In[0].Meta.Shape.Numel()
	bytes := l.In[0].Meta.Bytes()
	for i, src := range []int{0, 2, 3} {
		if out[i].buf == in[1].buf {
			return fmt.Errorf("the gradient shares its buffer with an output")
		}
		for j := 0; j < i; j++ {
			if out[i].buf == out[j].buf {
				return fmt.Errorf("outputs %d and %d share a buffer", j, i)
			}
		}
		if out[i].buf != in[src].buf {
			r.copy(out[i], in[src], bytes)
		}
	}
	g, err := r.items(n, wg)
	if err != nil {
		return err
	}
	t := float64(op.Step)
	bc1 := 1 - math.Pow(float64(op.Beta1), t)
	bc2 := 1 - math.Pow(float64(op.Beta2), t)
	p := new(params).u(n).f(op.LR, op.Beta1, op.Beta2, op.Eps, op.WeightDecay, float32(bc1), float32(math.Sqrt(bc2)))
	r.dispatch("adamw", []shaders.Const{c("WG", wg)}, g, p, out[0], in[1], out[1], out[2])
	return nil
}

// reduce sums f(x) (fn 0 x, 1 x²) into y[0]: one workgroup when x is small, else partial sums of
// fixed chunks (at most 1024 of them) and a second pass over the partials.
func (r *recorder) reduce(fn int, x, y bind, n int) error {
	perGroup := r.b.caps.Tiles.Reduce
	if n <= perGroup {
		r.dispatch("reduce", []shaders.Const{c("WG", wg), c("OP", fn)}, [3]uint32{1, 1, 1}, new(params).u(n, n), x, y)
		return nil
	}
	chunk := ceilDiv(n, 1024)
	if chunk < perGroup {
		chunk = perGroup
	}
	groups := ceilDiv(n, chunk)
	part, err := r.temp(int64(4 * groups))
	if err != nil {
		return err
	}
	g, err := groupsFor(groups, r.b.maxGroups())
	if err != nil {
		return err
	}
	r.dispatch("reduce", []shaders.Const{c("WG", wg), c("OP", fn)}, g, new(params).u(n, chunk), x, part)
	part.rw = false
	r.dispatch("reduce", []shaders.Const{c("WG", wg), c("OP", 0)}, [3]uint32{1, 1, 1}, new(params).u(groups, groups), part, y)
	return nil
}
