// Package cpu is lathe's reference backend: plain, exact, parallel Go. Every other backend is
// checked against it, and it runs everything when no GPU is found.
package cpu

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/x448/float16"
	"golang.org/x/sys/cpu"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
	"github.com/lathe-ml/lathe/engine/cpu/kernels"
	"github.com/lathe-ml/lathe/internal/half"
)

// Backend runs graphs on the CPU.
type Backend struct {
	info engine.DeviceInfo
}

// New returns the CPU backend.
func New() *Backend { return &Backend{info: deviceInfo()} }

// Provider discovers the CPU backend: there is always exactly one device.
type Provider struct{}

// Name is "cpu".
func (Provider) Name() string { return "cpu" }

// Devices lists the one CPU device.
func (Provider) Devices() ([]engine.DeviceInfo, error) { return []engine.DeviceInfo{deviceInfo()}, nil }

// Open returns the CPU backend; index must be 0.
func (Provider) Open(index int) (engine.Backend, error) {
	if index != 0 {
		return nil, fmt.Errorf("cpu has one device (index 0), not %d", index)
	}
	return New(), nil
}

func deviceInfo() engine.DeviceInfo {
	info := engine.DeviceInfo{
		Backend: "cpu", Index: 0, Name: cpuModel(), Vendor: cpuVendor(), Type: "cpu", API: "go",
		Cores: runtime.NumCPU(), MemoryBytes: memTotal(),
	}
	for _, f := range []struct {
		name string
		has  bool
	}{{"avx2", cpu.X86.HasAVX2}, {"fma", cpu.X86.HasFMA}, {"avx512f", cpu.X86.HasAVX512F}, {"neon", cpu.ARM64.HasASIMD}} {
		if f.has {
			info.Features = append(info.Features, f.name)
		}
	}
	return info
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func cpuModel() string {
	if m := procField("/proc/cpuinfo", "model name"); m != "" {
		return m
	}
	return runtime.GOARCH + " CPU"
}

func cpuVendor() string {
	switch v := procField("/proc/cpuinfo", "vendor_id"); v {
	case "GenuineIntel":
		return "Intel"
	case "AuthenticAMD":
		return "AMD"
	case "":
		return "unknown"
	default:
		return v
	}
}

func memTotal() int64 {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal"))
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseInt(f[0], 10, 64)
	return kb * 1024
}

// buffer is host memory, kept as []float32 so that every view of it is 4-byte aligned.
type buffer struct{ words []float32 }

func (b *buffer) Bytes() int64 { return int64(len(b.words)) * 4 }

func (b *buffer) bytes() []byte {
	if len(b.words) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b.words[0])), len(b.words)*4)
}

// Device describes the CPU.
func (b *Backend) Device() engine.DeviceInfo { return b.info }

// Caps reports the CPU's capabilities: everything is f32 arithmetic in Go; 16-bit weights are
// widened a tile at a time inside the kernels that read them.
func (b *Backend) Caps() engine.Caps {
	return engine.Caps{Weights16: true, CheapPrograms: true, MaxBufferBytes: math.MaxInt64, Tiles: engine.Tiles{
		MatMul: [3]int{gemm.MR, gemm.NR, gemm.KC()}, Group: 64, Reduce: kernels.ReduceChunk, RowChunk: 1,
		AttentionQ: fastAttentionQueries, AttentionKV: 16, DecodeQueries: fastAttentionQueries - 1,
	}}
}

// Alloc returns a zeroed host buffer of at least n bytes.
func (b *Backend) Alloc(n int64) (engine.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("alloc %d bytes", n)
	}
	return &buffer{words: make([]float32, (n+3)/4)}, nil
}

// Free drops the buffer; the garbage collector reclaims it.
func (b *Backend) Free(engine.Buffer) {}

// Write copies src into dst at byte offset off.
func (b *Backend) Write(dst engine.Buffer, off int64, src []byte) error {
	d := dst.(*buffer).bytes()
	if off < 0 || off+int64(len(src)) > int64(len(d)) {
		return fmt.Errorf("write %d bytes at %d into a %d-byte buffer", len(src), off, len(d))
	}
	copy(d[off:], src)
	return nil
}

// Read copies from src at byte offset off into dst.
func (b *Backend) Read(src engine.Buffer, off int64, dst []byte) error {
	s := src.(*buffer).bytes()
	if off < 0 || off+int64(len(dst)) > int64(len(s)) {
		return fmt.Errorf("read %d bytes at %d from a %d-byte buffer", len(dst), off, len(s))
	}
	copy(dst, s[off:])
	return nil
}

// Close does nothing: the CPU needs no teardown.
func (b *Backend) Close() error { return nil }

// Supports accepts every op of the engine package.
func (b *Backend) Supports(op engine.Op, in []engine.Meta) error {
	switch op.(type) {
	case engine.MatMul, engine.QMatMul, engine.MatMul16, engine.Embedding16, engine.LoRA, engine.LoRABackward, engine.ScaleCols, engine.DivSqrt,
		engine.ScaleColsBackward, engine.RMSNorm, engine.RMSNormBackward, engine.RoPE, engine.Attention,
		engine.AttentionBackward, engine.Unary, engine.UnaryBackward, engine.SwiGLU, engine.SwiGLUBackward,
		engine.Softmax, engine.SoftmaxBackward, engine.Embedding, engine.EmbeddingBackward,
		engine.CrossEntropy, engine.CrossEntropyBackward, engine.Binary, engine.Dequantize4, engine.Scale, engine.AddBias,
		engine.SumRows, engine.Sum, engine.Expand, engine.Fill, engine.Cast, engine.Reshape,
		engine.Dropout, engine.CacheWrite, engine.GatherLoRA, engine.GatherScaleCols,
		engine.SumSquaresN, engine.ClipStatus, engine.AdamWStep, engine.AdamW8bitStep, engine.Accumulate, engine.TopK:
		return nil
	}
	return fmt.Errorf("the cpu backend has no kernel for %s", op.Name())
}

// Run executes the launches in order. A launch that breaks a kernel's assumptions (a short
// buffer, operands that do not fit the op) is an error, not a crash: kernels panic on such input,
// and Run recovers the panic.
func (b *Backend) Run(launches []engine.Launch) error {
	for _, l := range launches {
		if err := check(l); err != nil {
			return fmt.Errorf("%s: %w", l.Op.Name(), err)
		}
	}
	return runAll(launches)
}

// Prepare checks every launch once (operands against the op's shape rules, buffers large enough)
// and returns an Executable that runs the kernels with no further checks or allocation of its own.
func (b *Backend) Prepare(launches []engine.Launch) (engine.Executable, error) {
	for _, l := range launches {
		if err := check(l); err != nil {
			return nil, fmt.Errorf("%s: %w", l.Op.Name(), err)
		}
	}
	return prepared(append([]engine.Launch(nil), launches...)), nil
}

type prepared []engine.Launch

func (p prepared) Run() error { return runAll(p) }
func (p prepared) Release()   {}

// runAll runs launches in order; a kernel that panics (an operand out of range that its checks
// missed) becomes an error.
func runAll(launches []engine.Launch) (err error) {
	i := 0
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: kernel failed: %v", launches[i].Op.Name(), r)
		}
	}()
	for ; i < len(launches); i++ {
		if err := run(launches[i]); err != nil {
			return fmt.Errorf("%s: %w", launches[i].Op.Name(), err)
		}
	}
	return nil
}

// check validates a launch: the op accepts its operands, it has the outputs the op infers, and
// every operand fits its buffer.
func check(l engine.Launch) error {
	if err := engine.CheckLaunch(l); err != nil {
		return err
	}
	for _, a := range append(append([]engine.Arg(nil), l.In...), l.Out...) {
		buf, ok := a.Buf.(*buffer)
		if !ok || buf == nil {
			return fmt.Errorf("operand %s: buffer %T is not a cpu buffer", a.Meta, a.Buf)
		}
		if a.Meta.Bytes() > buf.Bytes() {
			return fmt.Errorf("operand %s does not fit its %d-byte buffer", a.Meta, buf.Bytes())
		}
	}
	return nil
}

func f32(a engine.Arg) []float32 {
	return a.Buf.(*buffer).words[:a.Meta.Shape.Numel()]
}

func i32(a engine.Arg) []int32 {
	w := a.Buf.(*buffer).words
	return unsafe.Slice((*int32)(unsafe.Pointer(&w[0])), a.Meta.Shape.Numel())
}

func u8(a engine.Arg) []byte {
	return a.Buf.(*buffer).bytes()[:a.Meta.Shape.Numel()]
}

func u16(a engine.Arg) []uint16 {
	w := a.Buf.(*buffer).words
	return unsafe.Slice((*uint16)(unsafe.Pointer(&w[0])), a.Meta.Shape.Numel())
}

func run(l engine.Launch) error {
	in, out := l.In, l.Out
	switch op := l.Op.(type) {
	case engine.MatMul:
		m, n, k := op.Dims(in[0].Meta.Shape, in[1].Meta.Shape)
		lda, ldb := k, n
		if op.TransA {
			lda = m
		}
		if op.TransB {
			ldb = k
		}
		gemm.Sgemm(op.TransA, op.TransB, m, n, k, 1, f32(in[0]), lda, f32(in[1]), ldb, 0, f32(out[0]), n)
	case engine.QMatMul:
		matMul4(&op.Quant, op.TransW, in[0].Meta.Shape.Rows(), f32(in[0]), u8(in[1]), f32(in[2]), f32(out[0]))
	case engine.MatMul16:
		w := in[1].Meta.Shape
		matMul16(op.Compute, op.TransW, in[0].Meta.Shape.Rows(), w[0], w[1], f32(in[0]), in[1], f32(out[0]))
	case engine.Embedding16:
		return embedding16(f32(out[0]), u16(in[0]), in[0].Meta, i32(in[1]))
	case engine.Dequantize4:
		dequantize4(f32(out[0]), u8(in[0]), f32(in[1]), &op.Quant)
	case engine.LoRA:
		loraForward(op, in, out)
	case engine.LoRABackward:
		loraBackward(op, in, out)
	case engine.ScaleCols:
		x := in[0].Meta.Shape
		kernels.ScaleCols(f32(out[0]), f32(in[0]), f32(in[1]), x.Rows(), x.Last())
	case engine.DivSqrt:
		x := in[0].Meta.Shape
		kernels.DivSqrt(f32(out[0]), f32(in[0]), f32(in[1]), x.Rows(), x.Last())
	case engine.ScaleColsBackward:
		x := in[1].Meta.Shape
		o := outputs(out, op.NeedX, op.NeedL)
		kernels.ScaleColsBackward(o[0], o[1], f32(in[0]), f32(in[1]), f32(in[2]), x.Rows(), x.Last())
	case engine.RMSNorm:
		x := in[0].Meta.Shape
		gemm.RMSNorm(f32(out[0]), f32(in[0]), f32(in[1]), x.Rows(), x.Last(), op.Eps)
	case engine.RMSNormBackward:
		x := in[1].Meta.Shape
		o := outputs(out, op.NeedX, op.NeedW)
		dx := o[0]
		if dx == nil { // the kernel always produces dx
			dx = make([]float32, x.Numel())
		}
		kernels.RMSNormBackward(dx, o[1], f32(in[0]), f32(in[1]), f32(in[2]), x.Rows(), x.Last(), op.Eps)
	case engine.RoPE:
		x := in[0].Meta.Shape
		scale := op.AttnScale
		if scale == 0 {
			scale = 1
		}
		if op.Inverse {
			kernels.RoPEBackward(f32(out[0]), f32(in[0]), x.Rows(), op.Heads, op.HeadDim, i32(in[1]), op.InvFreq, scale)
		} else {
			kernels.RoPE(f32(out[0]), f32(in[0]), x.Rows(), op.Heads, op.HeadDim, i32(in[1]), op.InvFreq, scale)
		}
	case engine.Attention:
		if op.KVStride > 0 {
			return attentionRows(op, f32(out[0]), f32(out[1]), f32(in[0]), f32(in[1]), f32(in[2]), i32(in[3]))
		}
		var starts []int32
		if op.Docs {
			if starts = i32(in[3]); !validStarts(starts, op) {
				return fmt.Errorf("attention: a document start is outside its query's keys")
			}
		}
		attentionForward(op, f32(out[0]), f32(out[1]), f32(in[0]), f32(in[1]), f32(in[2]), starts)
	case engine.AttentionBackward:
		a := op.Attention
		o := outputs(out, op.NeedQ, op.NeedK, op.NeedV)
		for i, m := range []engine.Meta{in[1].Meta, in[2].Meta, in[3].Meta} {
			if o[i] == nil { // the kernel produces all three
				o[i] = make([]float32, m.Shape.Numel())
			}
		}
		var starts []int32
		if a.Docs {
			if starts = i32(in[6]); !validStarts(starts, a) {
				return fmt.Errorf("attention backward: a document start is outside its query's keys")
			}
		}
		attentionBackward(a, o[0], o[1], o[2], f32(in[0]), f32(in[1]), f32(in[2]), f32(in[3]), f32(in[4]), f32(in[5]), starts)
	case engine.Unary:
		kernels.SiLU(f32(out[0]), f32(in[0]))
	case engine.UnaryBackward:
		kernels.SiLUBackward(f32(out[0]), f32(in[0]), f32(in[1]))
	case engine.SwiGLU:
		gemm.SwiGLU(f32(out[0]), f32(in[0]), f32(in[1]))
	case engine.SwiGLUBackward:
		o := outputs(out, op.NeedGate, op.NeedUp)
		for i := range o {
			if o[i] == nil {
				o[i] = make([]float32, in[0].Meta.Shape.Numel())
			}
		}
		gemm.SwiGLUBackward(o[0], o[1], f32(in[0]), f32(in[1]), f32(in[2]))
	case engine.Softmax:
		x := in[0].Meta.Shape
		kernels.Softmax(f32(out[0]), f32(in[0]), x.Rows(), x.Last())
	case engine.SoftmaxBackward:
		x := in[0].Meta.Shape
		kernels.SoftmaxBackward(f32(out[0]), f32(in[0]), f32(in[1]), x.Rows(), x.Last())
	case engine.Embedding:
		t := in[0].Meta.Shape
		if op.Pad {
			return gather(f32(out[0]), f32(in[0]), i32(in[1]), t[0], t[1], op.PadValue)
		}
		return kernels.Embedding(f32(out[0]), f32(in[0]), i32(in[1]), t[0], t[1])
	case engine.EmbeddingBackward:
		return kernels.EmbeddingBackward(f32(out[0]), f32(in[0]), i32(in[1]), op.Vocab, in[0].Meta.Shape.Last())
	case engine.CrossEntropy:
		x := in[0].Meta.Shape
		loss, _, err := gemm.CrossEntropy(f32(in[0]), i32(in[1]), x.Rows(), x.Last(), op.Ignore)
		if err != nil {
			return err
		}
		f32(out[0])[0] = loss
	case engine.CrossEntropyBackward:
		x := in[1].Meta.Shape
		targets := i32(in[2])
		count := 0
		for _, t := range targets {
			if t != op.Ignore {
				count++
			}
		}
		return gemm.CrossEntropyBackward(f32(out[0]), f32(in[1]), targets, x.Rows(), x.Last(), op.Ignore, f32(in[0])[0], count)
	case engine.Binary:
		if op.Fn == engine.Add {
			kernels.Add(f32(out[0]), f32(in[0]), f32(in[1]))
		} else {
			kernels.Mul(f32(out[0]), f32(in[0]), f32(in[1]))
		}
	case engine.Scale:
		kernels.Scale(f32(out[0]), f32(in[0]), op.S)
	case engine.AddBias:
		x := in[0].Meta.Shape
		y := f32(out[0])
		copy(y, f32(in[0]))
		kernels.AddBias(y, f32(in[1]), x.Rows(), x.Last())
	case engine.SumRows:
		x := in[0].Meta.Shape
		kernels.SumRows(f32(out[0]), f32(in[0]), x.Rows(), x.Last())
	case engine.Sum:
		f32(out[0])[0] = float32(kernels.Sum(f32(in[0])))
	case engine.Expand:
		v := f32(in[0])[0]
		y := f32(out[0])
		for i := range y {
			y[i] = v
		}
	case engine.Fill:
		y := f32(out[0])
		for i := range y {
			y[i] = op.Value
		}
	case engine.Cast:
		cast(in[0], out[0])
	case engine.CacheWrite:
		d, n := in[0].Meta.Shape[1], in[0].Meta.Shape[0]
		cache, src := f32(out[0]), f32(in[1])
		for t, r := range i32(in[2]) {
			if r < 0 || int(r) >= n {
				return fmt.Errorf("row %d of %d is outside the cache's %d", r, t, n)
			}
			copy(cache[int(r)*d:(int(r)+1)*d], src[t*d:(t+1)*d])
		}
	case engine.GatherLoRA:
		return gatherLoRA(op, in, out)
	case engine.GatherScaleCols:
		x, sel, l, y := f32(in[0]), i32(in[1]), f32(in[2]), f32(out[0])
		d, slots := in[0].Meta.Shape[1], in[2].Meta.Shape[0]
		copy(y, x)
		for n, s := range sel {
			if s >= int32(slots) {
				return fmt.Errorf("row %d picks slot %d of %d", n, s, slots)
			}
			if s >= 0 {
				kernels.ScaleCols(y[n*d:(n+1)*d], x[n*d:(n+1)*d], l[int(s)*d:(int(s)+1)*d], 1, d)
			}
		}
	case engine.Dropout:
		dropoutInto(f32(out[0]), f32(in[0]), i32(in[1])[0], op.Salt, op.P)
	case engine.SumSquaresN:
		// As the per-tensor reductions it replaces: each sum rounded to f32, added in order in f32.
		var acc float32
		for i, x := range in {
			ss := float32(kernels.SumSquares(f32(x)))
			if i == 0 {
				acc = ss
			} else {
				acc = float32(acc + ss)
			}
		}
		f32(out[0])[0] = acc
	case engine.ClipStatus:
		st := engine.ClipStatusRef(op.MaxNorm, f32(in[0])[0], f32(in[1])[0], f32(in[2]))
		copy(f32(out[0]), st[:])
	case engine.AdamWStep:
		st, ctl := f32(in[4]), f32(in[5])
		if st[engine.StatusSkip] != 0 {
			return nil // outputs are the operands' buffers: nothing changes
		}
		step := int(ctl[engine.CtlStep])
		if step < 1 {
			return fmt.Errorf("step %v does not count from 1", ctl[engine.CtlStep])
		}
		kernels.AdamWScaled(f32(out[0]), f32(in[1]), st[engine.StatusCoef], f32(out[1]), f32(out[2]), step,
			ctl[engine.CtlLR], op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	case engine.AdamW8bitStep:
		st, ctl := f32(in[5]), f32(in[6])
		if st[engine.StatusSkip] != 0 {
			return nil
		}
		step := int(ctl[engine.CtlStep])
		if step < 1 {
			return fmt.Errorf("step %v does not count from 1", ctl[engine.CtlStep])
		}
		var c1, c2 [256]float32
		qmap := f32(in[4])
		copy(c1[:], qmap[:256])
		copy(c2[:], qmap[256:])
		kernels.AdamW8bit(f32(out[0]), f32(in[1]), st[engine.StatusCoef], u8(out[1]), f32(out[2]), &c1, &c2,
			engine.Optim8Block, step, ctl[engine.CtlLR], op.Beta1, op.Beta2, op.Eps, op.WeightDecay)
	case engine.TopK:
		x := in[0].Meta.Shape
		var ctl []int32
		if op.Sample {
			ctl = i32(in[1])
		}
		topK(f32(out[0]), f32(in[0]), ctl, x.Rows(), x.Last(), op.K)
	case engine.Accumulate:
		d, s, n := op.Span(out[0].Meta)
		if op.Overwrite {
			copy(f32(out[0])[d:d+n], f32(in[1])[s:s+n])
		} else {
			kernels.AddScaled(f32(out[0])[d:d+n], f32(in[1])[s:s+n], 1)
		}
	default:
		return fmt.Errorf("no cpu kernel")
	}
	return nil
}

// dequantize4 decodes a 4-bit weight in bitsandbytes' layout (first element in the high nibble).
func dequantize4(w []float32, packed []byte, absmax []float32, q *engine.QuantSpec) {
	code := q.Code()
	for e := range w {
		b := packed[e/2]
		nib := b & 15
		if e%2 == 0 {
			nib = b >> 4
		}
		w[e] = code[nib] * absmax[e/q.Blocksize]
	}
}

// embedding16 gathers rows of a 16-bit table, widened; an id outside [0, vocab) is an error.
func embedding16(y []float32, table []uint16, m engine.Meta, ids []int32) error {
	vocab, dim := m.Shape[0], m.Shape[1]
	for t, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("embedding: token id %d at position %d is out of range [0, %d)", id, t, vocab)
		}
	}
	for t, id := range ids {
		gemm.Widen(y[t*dim:(t+1)*dim], table[int(id)*dim:(int(id)+1)*dim], m.DType == engine.BF16)
	}
	return nil
}

// gather is Embedding with Pad: rows of pad for negative ids; an id ≥ vocab is an error.
func gather(y, table []float32, ids []int32, vocab, dim int, pad float32) error {
	for t, id := range ids {
		if int(id) >= vocab {
			return fmt.Errorf("gather: id %d at position %d is out of range [0, %d)", id, t, vocab)
		}
	}
	for t, id := range ids {
		row := y[t*dim : (t+1)*dim]
		if id < 0 {
			for i := range row {
				row[i] = pad
			}
			continue
		}
		copy(row, table[int(id)*dim:(int(id)+1)*dim])
	}
	return nil
}

// outputs maps the outputs of a backward op that computes only the needed gradients onto
// positions, nil where not needed.
func outputs(out []engine.Arg, need ...bool) [][]float32 {
	res := make([][]float32, len(need))
	k := 0
	for i, n := range need {
		if n {
			res[i] = f32(out[k])
			k++
		}
	}
	return res
}

func cast(in, out engine.Arg) {
	n := in.Meta.Shape.Numel()
	var x []float32
	switch in.Meta.DType {
	case engine.F32:
		x = f32(in)
	case engine.F16:
		x = make([]float32, n)
		for i, h := range u16(in) {
			x[i] = float16.Frombits(h).Float32()
		}
	case engine.BF16:
		x = make([]float32, n)
		for i, h := range u16(in) {
			x[i] = half.BF16ToFloat32(h)
		}
	}
	switch out.Meta.DType {
	case engine.F32:
		copy(f32(out), x)
	case engine.F16:
		y := u16(out)
		for i, v := range x {
			y[i] = float16.Fromfloat32(v).Bits()
		}
	case engine.BF16:
		y := u16(out)
		for i, v := range x {
			y[i] = half.BF16(v)
		}
	}
}

// dropout returns x with dropout applied (the mask of engine.DropoutKeep) in a scratch buffer,
// or x itself when p is 0; done gives the scratch back.
func dropout(x []float32, seed int32, salt uint32, p float32) (y []float32, done func()) {
	if p == 0 {
		return x, func() {}
	}
	buf := gemm.Scratch(len(x))
	dropoutInto(*buf, x, seed, salt, p)
	return *buf, func() { gemm.Recycle(buf) }
}

func dropoutInto(y, x []float32, seed int32, salt uint32, p float32) {
	scale := 1 / (1 - p)
	for i := range y {
		if engine.DropoutKeep(seed, salt, uint32(i), p) {
			y[i] = x[i] * scale
		} else {
			y[i] = 0
		}
	}
}

// loraSeed returns the dropout seed operand of a LoRA op's forward operands (0 without dropout).
func loraSeed(op engine.LoRA, fwd []engine.Arg) int32 {
	nw, ns := op.Operands()
	if ns == 0 {
		return 0
	}
	return i32(fwd[3+nw])[0]
}

// matMul4 is gemm.MatMul4 for the 4-bit weight q, in bfloat16 or 8-bit integers where q.Compute
// allows it (gemm.MatMul4BF16, gemm.MatMul4I8: the forward product and the backward pass's dx).
func matMul4(q *engine.QuantSpec, transW bool, rows int, x []float32, packed []byte, absmax, y []float32) {
	code := q.Code()
	switch q.Compute {
	case engine.I8:
		gemm.MatMul4I8(transW, rows, q.N, q.K, x, packed, absmax, q.Blocksize, &code, 0, y)
	case engine.BF16:
		gemm.MatMul4BF16(transW, rows, q.N, q.K, x, packed, absmax, q.Blocksize, &code, 0, y)
	default:
		gemm.MatMul4(transW, rows, q.N, q.K, x, packed, absmax, q.Blocksize, &code, 0, y)
	}
}

// matMul16 is gemm.MatMul16 for the 16-bit weight w, its forward product in bfloat16 where compute
// allows it and w is bf16 (gemm.MatMul16BF16).
func matMul16(compute engine.DType, transW bool, rows, n, k int, x []float32, w engine.Arg, y []float32) {
	bf := w.Meta.DType == engine.BF16
	if compute == engine.BF16 && bf {
		gemm.MatMul16BF16(transW, rows, n, k, x, u16(w), 0, y)
		return
	}
	gemm.MatMul16(transW, rows, n, k, x, u16(w), bf, 0, y)
}

// loraForward: y = x·Wᵀ + s·(d(x)·Aᵀ)·Bᵀ, writing xa = d(x)·Aᵀ for the backward pass.
func loraForward(op engine.LoRA, in, out []engine.Arg) {
	rows, din, dout, r := op.Dims(metas(in))
	nw, _ := op.Operands()
	x, y, xa := f32(in[0]), f32(out[0]), f32(out[1])
	a, b := f32(in[1+nw]), f32(in[2+nw])
	if op.Quant != nil {
		matMul4(op.Quant, false, rows, x, u8(in[1]), f32(in[2]), y)
	} else if w := in[1]; engine.IsHalf(w.Meta.DType) {
		matMul16(op.Compute, false, rows, dout, din, x, w, y)
	} else {
		gemm.Sgemm(false, true, rows, dout, din, 1, x, din, f32(in[1]), din, 0, y, dout)
	}
	xd, done := dropout(x, loraSeed(op, in), op.Salt, op.Dropout)
	gemm.Sgemm(false, true, rows, r, din, 1, xd, din, a, din, 0, xa, r)
	done()
	gemm.Sgemm(false, true, rows, dout, r, op.Scale, xa, r, b, r, 1, y, dout)
}

// loraBackward: with t = dy·B, dx = dy·W + s·d(t·A), dA = s·tᵀ·d(x), dB = s·dyᵀ·xa.
func loraBackward(op engine.LoRABackward, in, out []engine.Arg) {
	fwd := in[1 : len(in)-1]
	fop := op.Forward()
	rows, din, dout, r := fop.Dims(metas(fwd))
	nw, _ := fop.Operands()
	seed := loraSeed(fop, fwd)
	dy, x, xa := f32(in[0]), f32(fwd[0]), f32(in[len(in)-1])
	a, b := f32(fwd[1+nw]), f32(fwd[2+nw])
	o := outputs(out, op.NeedX, op.NeedA, op.NeedB)
	s := op.Scale
	if o[0] != nil || o[1] != nil {
		tb := gemm.Scratch(rows * r)
		defer gemm.Recycle(tb)
		t := *tb
		gemm.Sgemm(false, false, rows, r, dout, 1, dy, dout, b, r, 0, t, r)
		if dx := o[0]; dx != nil {
			if op.Quant != nil {
				matMul4(op.Quant, true, rows, dy, u8(fwd[1]), f32(fwd[2]), dx)
			} else if w := fwd[1]; engine.IsHalf(w.Meta.DType) {
				matMul16(fop.Compute, true, rows, dout, din, dy, w, dx)
			} else {
				gemm.Sgemm(false, false, rows, din, dout, 1, dy, dout, f32(fwd[1]), din, 0, dx, din)
			}
			if op.Dropout == 0 {
				gemm.Sgemm(false, false, rows, din, r, s, t, r, a, din, 1, dx, din)
			} else {
				ub := gemm.Scratch(rows * din)
				u := *ub
				gemm.Sgemm(false, false, rows, din, r, s, t, r, a, din, 0, u, din)
				dropoutInto(u, u, seed, op.Salt, op.Dropout)
				kernels.Add(dx, dx, u)
				gemm.Recycle(ub)
			}
		}
		if dA := o[1]; dA != nil {
			xd, done := dropout(x, seed, op.Salt, op.Dropout)
			gemm.Sgemm(true, false, r, din, rows, s, t, r, xd, din, 0, dA, din)
			done()
		}
	}
	if dB := o[2]; dB != nil {
		gemm.Sgemm(true, false, dout, r, rows, s, dy, dout, xa, r, 0, dB, r)
	}
}

func metas(args []engine.Arg) []engine.Meta {
	m := make([]engine.Meta, len(args))
	for i, a := range args {
		m[i] = a.Meta
	}
	return m
}

// gatherLoRA: out = y plus, for each slot, B_s·(A_s·x) on the rows that pick it (gathered, so
// that the two small products run as matrices).
func gatherLoRA(op engine.GatherLoRA, in, out []engine.Arg) error {
	n, din, dout, slots := op.Dims(metas(in))
	y, x, sel, a, b, o := f32(in[0]), f32(in[1]), i32(in[2]), f32(in[3]), f32(in[4]), f32(out[0])
	copy(o, y)
	rows := make([][]int, slots)
	for i, s := range sel[:n] {
		switch {
		case s >= int32(slots):
			return fmt.Errorf("row %d picks slot %d of %d", i, s, slots)
		case s >= 0:
			rows[s] = append(rows[s], i)
		}
	}
	r := op.R
	for s, idx := range rows {
		if len(idx) == 0 {
			continue
		}
		m := len(idx)
		xg := make([]float32, m*din)
		for i, row := range idx {
			copy(xg[i*din:(i+1)*din], x[row*din:(row+1)*din])
		}
		xa := make([]float32, m*r)
		gemm.Sgemm(false, true, m, r, din, 1, xg, din, a[s*r*din:(s+1)*r*din], din, 0, xa, r)
		d := make([]float32, m*dout)
		gemm.Sgemm(false, true, m, dout, r, 1, xa, r, b[s*dout*r:(s+1)*dout*r], r, 0, d, dout)
		for i, row := range idx {
			dst := o[row*dout : (row+1)*dout]
			for j, v := range d[i*dout : (i+1)*dout] {
				dst[j] += v
			}
		}
	}
	return nil
}

// topK writes each row's k best (value, index) pairs, best first, ties by the lower index, NaNs
// skipped: a selection through a min-heap of k (O(V log k) a row, no sort of the row). With ctl
// (engine.TopK's Sample), a Gumbel row ranks by its float64 Gumbel score, and every row ends with
// its mass.
func topK(out, x []float32, ctl []int32, rows, v, k int) {
	type cand struct {
		s float64 // the rank score: the value, or the Gumbel score
		i int32
	}
	// better: a before b in the output order.
	better := func(a, b cand) bool { return a.s > b.s || (a.s == b.s && a.i < b.i) }
	heap := make([]cand, 0, k) // the worst kept on top
	stride := 2 * k
	if ctl != nil {
		stride += 2
	}
	for r := range rows {
		row := x[r*v : (r+1)*v]
		var invT float64
		var gumbel bool
		var k0, k1 uint32
		if ctl != nil {
			c := ctl[r*engine.SampleCtlWords : (r+1)*engine.SampleCtlWords]
			invT = float64(math.Float32frombits(uint32(c[engine.SampleInvTemp])))
			gumbel = c[engine.SampleGumbel] != 0
			k0, k1 = uint32(c[engine.SampleKey0]), uint32(c[engine.SampleKey1])
		}
		heap = heap[:0]
		down := func(i int) {
			for {
				w, l, rr := i, 2*i+1, 2*i+2
				if l < len(heap) && better(heap[w], heap[l]) {
					w = l
				}
				if rr < len(heap) && better(heap[w], heap[rr]) {
					w = rr
				}
				if w == i {
					return
				}
				heap[i], heap[w] = heap[w], heap[i]
				i = w
			}
		}
		mx := math.Inf(-1)
		for i := range int32(v) {
			xv := row[i]
			if xv != xv { // NaN
				continue
			}
			mx = max(mx, float64(xv))
			c := cand{float64(xv), i}
			if gumbel {
				c.s = float64(xv)*invT + engine.GumbelNoise(k0, k1, uint32(i))
			}
			if len(heap) < k {
				heap = append(heap, c)
				for j := len(heap) - 1; j > 0; {
					p := (j - 1) / 2
					if !better(heap[p], heap[j]) {
						break
					}
					heap[p], heap[j] = heap[j], heap[p]
					j = p
				}
			} else if better(c, heap[0]) {
				heap[0] = c
				down(0)
			}
		}
		o := out[r*stride : (r+1)*stride]
		for j := k - 1; j >= 0; j-- {
			if j >= len(heap) {
				o[2*j], o[2*j+1] = float32(math.Inf(-1)), -1
				continue
			}
			// Pop the worst into the last free place.
			top := heap[0]
			last := len(heap) - 1
			heap[0] = heap[last]
			heap = heap[:last]
			down(0)
			o[2*j], o[2*j+1] = row[top.i], float32(top.i)
		}
		if ctl != nil {
			mass := 0.0
			for _, xv := range row {
				if xv == xv && !math.IsInf(float64(xv), -1) { // −inf adds nothing, even at 1/T = 0
					mass += math.Exp((float64(xv) - mx) * invT)
				}
			}
			o[2*k], o[2*k+1] = float32(mass), 0
		}
	}
}
