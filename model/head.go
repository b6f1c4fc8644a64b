package model

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
)

// The output projection of generation.
//
// Decoding a token reads every weight once, and the output projection (lm_head, or the embedding
// it is tied to) is the largest matrix of a small model: kept in f32 beside a 4-bit base it is
// most of the bytes a token reads. LoadOptions.Head keeps a second copy of it, in 16 or 4 bits,
// that only generation steps (Cache, ForwardCached) use. Forward, Logits, training and evaluation
// keep the loaded matrix: bitsandbytes never quantizes lm_head, so QLoRA training and its losses
// stay PEFT's.
//
// The default beside a 4-bit base is bf16, not 4 bits: on the real stories260K model an NF4 copy
// moves the logits by 4.8% (relative RMS) and changes the top token at 11% of the positions of a
// story, where bf16 changes none (TestGenerationHeadAccuracyOnStories260K). llama.cpp's
// llama-quantize keeps more bits there too: a Q4_0 file gets a Q6_K output matrix (or tied token
// embedding). "nf4" is there for the bytes of a Q4_0 file whose output is Q4_0 as well (lathe
// export --type Q4_0 writes one).

// Head values (LoadOptions.Head).
const (
	// HeadBase keeps the loaded output projection for generation too (no copy).
	HeadBase = "base"
	// HeadAuto is a bf16 copy when the linear layers are 4-bit (Quantize, or a bitsandbytes
	// 4-bit checkpoint) and the loaded output matrix is f32; otherwise HeadBase (a 16-bit
	// checkpoint's matrix is read as it is).
	HeadAuto = "auto"
)

// headCopy is the module name of the copy; its tensors are headCopy+".weight" (and
// ".weight.absmax" for 4 bits).
const headCopy = "lm_head.generate"

// HeadKinds lists the values LoadOptions.Head takes; the 4-bit copies have the base's blocksize
// (LoadOptions.Blocksize) and plain f32 block scales (the kernels read decoded scales, so double
// quantization would save no memory).
var HeadKinds = []string{HeadAuto, HeadBase, "bf16", "f16", "nf4", "fp4"}

// checkHead says whether s is a LoadOptions.Head value ("" is HeadBase).
func checkHead(s string) error {
	if s == "" {
		return nil
	}
	for _, k := range HeadKinds {
		if s == k {
			return nil
		}
	}
	return fmt.Errorf("head %q is not one of %s", s, strings.Join(HeadKinds, ", "))
}

// headSource is the checkpoint tensor the output projection reads.
func headSource(cfg *Config) string {
	if cfg.TieWordEmbeddings {
		return "model.embed_tokens.weight"
	}
	return "lm_head.weight"
}

// loadHead makes the copy LoadOptions.Head asks for from the checkpoint's tensor, a chunk of
// rows at a time (no f32 copy of the whole matrix on the host).
func (m *Model) loadHead(ck tensorSource, where string, o LoadOptions) error {
	kind := o.Head
	if kind == HeadAuto {
		kind = HeadBase
		if t := m.Tensors[headSource(m.Cfg)]; len(m.Quant) > 0 && t != nil && t.DType() == engine.F32 {
			kind = "bf16"
		}
	}
	if kind == "" || kind == HeadBase {
		return nil
	}
	name := headSource(m.Cfg)
	rows, cols := m.Cfg.VocabSize, m.Cfg.HiddenSize
	var (
		qtype  quant.Type
		dt     engine.DType
		packed []byte
		absmax []float32
		x      *engine.Tensor
		err    error
	)
	bs := o.Blocksize
	for _, q := range m.Quant {
		if bs == 0 {
			bs = q.Blocksize // a bitsandbytes checkpoint's
		}
	}
	if bs == 0 {
		bs = quant.DefaultBlocksize
	}
	switch kind {
	case "bf16", "f16":
		dt = map[string]engine.DType{"bf16": engine.BF16, "f16": engine.F16}[kind]
		if x, err = engine.NewTensor(m.Backend, dt, engine.Shape{rows, cols}); err != nil {
			return fmt.Errorf("load %s: head copy: %w", where, err)
		}
	default:
		if qtype, err = quant.ParseType(kind); err != nil {
			return fmt.Errorf("load %s: head: %w", where, err)
		}
		packed = make([]byte, 0, (rows*cols+1)/2)
		absmax = make([]float32, 0, (rows*cols+bs-1)/bs)
	}
	fail := func(err error) error {
		if x != nil {
			x.Release()
		}
		return fmt.Errorf("load %s: head copy of %s: %w", where, name, err)
	}
	// Chunks of a multiple of bs rows: each holds whole quantization blocks (bs is even).
	chunk := max(1, (1<<20)/cols/bs) * bs
	var tmp transient
	var whole []float32 // a source that converts only whole tensors (GGUF block types)
	for r0 := 0; r0 < rows; r0 += chunk {
		n := min(chunk, rows-r0)
		v, err := m.headRows(ck, where, name, rows, cols, r0, n, &whole)
		if err != nil {
			return fail(err)
		}
		if x != nil {
			b := make([]byte, 2*len(v))
			for i, f := range v {
				h := half.BF16(f)
				if dt == engine.F16 {
					h = float16.Fromfloat32(f).Bits()
				}
				binary.LittleEndian.PutUint16(b[2*i:], h)
			}
			if err := m.Backend.Write(x.Buffer(), int64(2*r0*cols), b); err != nil {
				return fail(err)
			}
			tmp.add(int64(len(b) + 4*len(v)))
			continue
		}
		t4, err := quant.Quantize(v, []int{n, cols}, qtype, bs, false)
		if err != nil {
			return fail(err)
		}
		packed = append(packed, t4.Packed...)
		absmax = append(absmax, t4.Absmax...)
		tmp.add(int64(4 * len(v)))
	}
	if x != nil {
		m.Tensors[headCopy+".weight"] = x
		return nil
	}
	t4 := &quant.Tensor4{Type: qtype, Shape: []int{rows, cols}, DType: quant.DTypeFloat32, Blocksize: bs, Code: qtype.Code(), Packed: packed, Absmax: absmax}
	if err := m.upload4(where, &Linear{Name: headCopy, In: cols, Out: rows}, t4); err != nil {
		return err
	}
	// Kept apart from Quant, which lists the base's 4-bit layers.
	m.headQuant = m.Quant[headCopy]
	delete(m.Quant, headCopy)
	return nil
}

// headRows reads rows r0..r0+n-1 of the [rows, cols] matrix name as f32; *whole keeps a source's
// whole conversion when it cannot convert rows alone.
func (m *Model) headRows(ck tensorSource, where, name string, rows, cols, r0, n int, whole *[]float32) ([]float32, error) {
	t, found := ck.Tensor(name)
	if !found {
		return nil, fmt.Errorf("missing tensor %s", name)
	}
	if !engine.Shape(t.Shape).Equal([]int{rows, cols}) {
		return nil, fmt.Errorf("tensor %s has shape %v, the config needs [%d %d]", name, t.Shape, rows, cols)
	}
	size := map[string]int{"F32": 4, "F16": 2, "BF16": 2}[t.DType]
	if !floatBytes(t) {
		// A GGUF block type: the source converts the whole matrix, once.
		if *whole == nil {
			v, err := m.dense(ck, where, name, []int{rows, cols}, nil)
			if err != nil {
				return nil, err
			}
			*whole = v
		}
		return (*whole)[r0*cols : (r0+n)*cols], nil
	}
	v, err := checkpoint.ToFloat32(checkpoint.Tensor{DType: t.DType, Shape: []int{n * cols}, Data: t.Data[size*r0*cols : size*(r0+n)*cols]})
	if d, ok := ck.(interface{ Drop(string) }); ok {
		d.Drop(name)
	}
	return v, err
}

// declareHead adds the copy's parameters to mg as its Out projection, if the model has one.
func (m *Model) declareHead(mg *Graph) {
	name := headCopy + ".weight"
	t, ok := m.Tensors[name]
	if !ok {
		return
	}
	c := mg.Cfg
	l := &Linear{Name: "lm_head", In: c.HiddenSize, Out: c.VocabSize}
	if q := m.headQuant; q != nil {
		qq := *q
		l.Quant = &qq
		l.Packed = mg.G.Param(name, engine.U8, t.Shape(), false)
		l.Absmax = mg.G.Param(name+".absmax", engine.F32, m.Tensors[name+".absmax"].Shape(), false)
	} else {
		l.W = mg.G.Param(name, t.DType(), t.Shape(), false)
	}
	mg.Out = l
}
