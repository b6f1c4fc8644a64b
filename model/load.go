package model

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
)

// Model is a base model loaded onto a backend: its config and its frozen weights, dense (f32, or
// f16/bf16 matrices as the checkpoint stores them) or 4-bit, keyed by the names its graph parameters carry (the checkpoint's tensor names; 4-bit
// weights as NAME.weight for the packed bytes and NAME.weight.absmax for the decoded block scales).
type Model struct {
	Cfg     *Config
	Dir     string
	Backend engine.Backend
	Tensors map[string]*engine.Tensor
	// Quant holds the 4-bit layout of each quantized linear layer, by module name.
	Quant map[string]*engine.QuantSpec
	// headQuant is the 4-bit layout of the generation head's copy (LoadOptions.Head), if any.
	headQuant *engine.QuantSpec
	// compute is LoadOptions.Compute: Declare gives it to the bf16 layers (Linear.Compute).
	compute engine.DType
}

// LoadOptions choose how the weights are stored on the device.
type LoadOptions struct {
	// Quantize stores the linear layers' weights in 4 bits, quantized at load as bitsandbytes does
	// (QLoRA): "nf4" or "fp4"; "" keeps them as the checkpoint has them. A checkpoint that is
	// already in bitsandbytes' 4-bit format is loaded as it is.
	Quantize    string
	Blocksize   int  // default 64
	DoubleQuant bool // quantize the block scales too (the QLoRA paper's double quantization)
	// Widen stores a checkpoint's f16 and bf16 matrices (linear weights, embedding, lm_head) as
	// f32. By default they stay 16-bit as stored, and the kernels that read them widen a tile at a
	// time (engine.MatMul16, engine.Embedding16); vectors (norms, biases) are always f32.
	Widen bool
	// Head chooses the output projection of generation steps (see HeadAuto, HeadBase; "bf16",
	// "f16", "nf4" or "fp4" force a copy in that type); "" is HeadBase. Other graphs always
	// use the loaded matrix.
	Head string
	// Compute is the precision the products of the 4-bit and bf16 layers may take
	// (engine.QuantSpec.Compute, engine.MatMul16.Compute): "" or "f32" exact in float32, "bf16"
	// with x rounded to bfloat16, and a 4-bit layer's codebook too, as bitsandbytes computes with
	// bnb_4bit_compute_dtype=bfloat16 (on a CPU with AVX512_BF16, decoding and prompts run
	// faster so); "i8" as "bf16", and a 4-bit layer's decoding GEMV may also take 8-bit integer
	// products, llama.cpp's route (x in signed bytes a block of 64, the codebook as code·127; on
	// a CPU with AVX512_VNNI). float32 and f16 layers are not affected.
	Compute string
}

// computeDType is the engine.QuantSpec.Compute a LoadOptions.Compute value names.
func computeDType(s string) (engine.DType, error) {
	switch s {
	case "", "f32":
		return engine.F32, nil
	case "bf16":
		return engine.BF16, nil
	case "i8":
		return engine.I8, nil
	}
	return engine.F32, fmt.Errorf("compute %q: want f32, bf16 or i8", s)
}

// Load reads a Hugging Face model folder (config.json, model.safetensors or a sharded index) and
// uploads its weights to b. Errors name the file and the tensor.
//
// It streams: one tensor at a time is read from the memory-mapped files, converted or quantized
// into its final buffer, and its pages dropped from the resident set, so that the peak host
// memory while loading is the weights kept plus about one tensor, whatever the checkpoint's size.
//
// A path ending in .gguf loads that GGUF file instead (see package gguf): its weights are
// dequantized to float32 (and, with Quantize, re-quantized to 4 bits as from any checkpoint).
func Load(dir string, b engine.Backend, o LoadOptions) (*Model, error) {
	if err := checkHead(o.Head); err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	compute, err := computeDType(o.Compute)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	var ck tensorSource
	var where string
	var hfConfig map[string]any
	if isGGUF(dir) {
		gf, err := openGGUF(dir)
		if err != nil {
			return nil, fmt.Errorf("load model: %w", err)
		}
		ck, where = gf, dir
	} else {
		hf, err := checkpoint.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("load model: %w", err)
		}
		ck, hfConfig = hf, hf.Config
		where = filepath.Join(dir, checkpoint.WeightsFile)
		if hf.Sharded {
			where = filepath.Join(dir, checkpoint.IndexFile)
		}
	}
	defer ck.Close()
	if err := checkCounts(cfg, ck, where); err != nil {
		return nil, err
	}
	m := &Model{Cfg: cfg, Dir: dir, Backend: b, Tensors: map[string]*engine.Tensor{}, Quant: map[string]*engine.QuantSpec{}}
	ok := false
	defer func() {
		if !ok {
			m.Release()
		}
	}()
	prequant := isBnb4bit(hfConfig)
	drop := func(name string) {
		if d, ok := ck.(interface{ Drop(string) }); ok {
			d.Drop(name)
		}
	}
	var tmp transient
	var widened []float32 // the f32 copy of the weight being quantized, reused for the next
	var qtype quant.Type
	if o.Quantize != "" && !prequant {
		if qtype, err = quant.ParseType(o.Quantize); err != nil {
			return nil, fmt.Errorf("load model: %w", err)
		}
		if o.Blocksize == 0 {
			o.Blocksize = quant.DefaultBlocksize
		}
	}
	// The graph says which tensors the model needs and their shapes.
	decl := NewGraph(cfg, engine.NewGraph(), nil)
	for _, l := range append(decl.Linears(), decl.LMHead) {
		if l == nil {
			continue
		}
		name := l.Name + ".weight"
		t, found := ck.Tensor(name)
		if !found {
			return nil, fmt.Errorf("load %s: missing tensor %s", where, name)
		}
		var t4 *quant.Tensor4
		switch {
		case prequant && t.DType == "U8":
			raw := map[string]quant.RawTensor{}
			for _, n := range ck.Names() {
				if strings.HasPrefix(n, name) {
					tt, _ := ck.Tensor(n)
					raw[n] = quant.RawTensor(tt)
				}
			}
			if t4, err = quant.FromBnb(name, raw); err != nil {
				return nil, fmt.Errorf("load %s: %w", where, err)
			}
			for n := range raw {
				drop(n)
			}
		case o.Quantize != "" && l.Name != "lm_head":
			v, err := m.dense(ck, where, name, []int{l.Out, l.In}, &widened)
			if err != nil {
				return nil, err
			}
			if t4, err = quant.Quantize(v, []int{l.Out, l.In}, qtype, o.Blocksize, o.DoubleQuant); err != nil {
				return nil, fmt.Errorf("load %s: quantize %s: %w", where, name, err)
			}
			drop(name)
			if len(v) > 0 && (len(widened) == 0 || &v[0] != &widened[0]) {
				tmp.add(4 * int64(len(v))) // the source's own copy: garbage now
			}
		default:
			if err := m.uploadDense(ck, where, name, engine.Shape{l.Out, l.In}, !o.Widen); err != nil {
				return nil, err
			}
			drop(name)
			continue
		}
		if err := m.upload4(where, l, t4); err != nil {
			return nil, err
		}
		tmp.add(2 * int64(len(t4.Packed)))
	}
	widened = nil // garbage from here: the embedding and head may need the room
	// Everything else (embeddings, norms, biases) is dense.
	g := engine.NewGraph()
	NewGraph(cfg, g, m.quantFunc())
	for _, n := range g.Nodes() {
		name := n.Name()
		if _, done := m.Tensors[name]; done || n.DType() != engine.F32 {
			continue
		}
		if err := m.uploadDense(ck, where, name, n.Shape(), !o.Widen && len(n.Shape()) == 2); err != nil {
			return nil, err
		}
		drop(name)
	}
	if err := m.loadHead(ck, where, o); err != nil {
		return nil, err
	}
	for _, q := range m.Quant {
		q.Compute = compute
	}
	m.compute = compute
	ok = true
	return m, nil
}

// checkCounts compares config.json's counts with the tensors the checkpoint holds before the graph
// is built, so that a count no checkpoint backs (a million layers) is refused at once: the layers
// present, and the embedding's vocabulary and width.
func checkCounts(cfg *Config, ck tensorSource, where string) error {
	layers := 0
	for _, n := range ck.Names() {
		rest, ok := strings.CutPrefix(n, "model.layers.")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(rest[:max(0, strings.IndexByte(rest, '.'))])
		if err != nil || i < 0 {
			continue
		}
		layers = max(layers, i+1)
	}
	if layers != cfg.NumLayers {
		return fmt.Errorf("load %s: config.json's num_hidden_layers is %d, the checkpoint has %d layers", where, cfg.NumLayers, layers)
	}
	const embed = "model.embed_tokens.weight"
	t, found := ck.Tensor(embed)
	if !found {
		return fmt.Errorf("load %s: missing tensor %s", where, embed)
	}
	if len(t.Shape) != 2 || t.Shape[0] != cfg.VocabSize || t.Shape[1] != cfg.HiddenSize {
		return fmt.Errorf("load %s: tensor %s has shape %v, config.json's vocab_size %d and hidden_size %d need [%d %d]",
			where, embed, t.Shape, cfg.VocabSize, cfg.HiddenSize, cfg.VocabSize, cfg.HiddenSize)
	}
	return nil
}

func isBnb4bit(cfg map[string]any) bool {
	qc, _ := cfg["quantization_config"].(map[string]any)
	if qc == nil {
		return false
	}
	method, _ := qc["quant_method"].(string)
	in4, _ := qc["load_in_4bit"].(bool)
	return method == "bitsandbytes" && in4
}

// dense reads a float tensor and checks its shape; given scratch, a folder's float tensor is
// converted into *scratch's memory (grown as needed), which the caller must be done with before
// the next call.
func (m *Model) dense(ck tensorSource, where, name string, shape []int, scratch *[]float32) ([]float32, error) {
	t, found := ck.Tensor(name)
	if !found {
		return nil, fmt.Errorf("load %s: missing tensor %s", where, name)
	}
	if !engine.Shape(t.Shape).Equal(shape) {
		return nil, fmt.Errorf("load %s: tensor %s has shape %v, the config needs %v", where, name, t.Shape, shape)
	}
	if scratch != nil && floatBytes(t) {
		v, err := checkpoint.ToFloat32Into(t, *scratch)
		if err != nil {
			return nil, fmt.Errorf("load %s: tensor %s: %w", where, name, err)
		}
		*scratch = v
		return v, nil
	}
	v, _, err := ck.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("load %s: tensor %s: %w", where, name, err)
	}
	return v, nil
}

// floatBytes reports whether t holds its elements' bytes in a float type ToFloat32 reads (a
// folder's F32, F16 or BF16 tensor; not a GGUF block type, which its source converts).
func floatBytes(t checkpoint.Tensor) bool {
	size := map[string]int64{"F32": 4, "F16": 2, "BF16": 2}[t.DType]
	return size != 0 && int64(len(t.Data)) == size*t.Numel()
}

// uploadDense uploads a float tensor as keep16 and its stored type allow: an f16 or bf16 one as
// it is (no conversion, no copy but the upload's), else as f32, widened a chunk at a time into the
// device tensor so that no full-size float copy exists on the host.
func (m *Model) uploadDense(ck tensorSource, where, name string, shape engine.Shape, keep16 bool) error {
	t, found := ck.Tensor(name)
	if !found {
		return fmt.Errorf("load %s: missing tensor %s", where, name)
	}
	if !shape.Equal(t.Shape) {
		return fmt.Errorf("load %s: tensor %s has shape %v, the config needs %v", where, name, t.Shape, shape)
	}
	numel := int64(shape.Numel())
	size := map[string]int64{"F32": 4, "F16": 2, "BF16": 2}[t.DType]
	if !floatBytes(t) {
		// Not bytes of a float type we read directly (a GGUF block type): the source converts.
		v, err := m.dense(ck, where, name, shape, nil)
		if err != nil {
			return err
		}
		return m.upload(name, shape, v)
	}
	dt := engine.F32
	if keep16 && size == 2 {
		dt = map[string]engine.DType{"F16": engine.F16, "BF16": engine.BF16}[t.DType]
	}
	x, err := engine.NewTensor(m.Backend, dt, shape)
	if err != nil {
		return fmt.Errorf("load %s: upload %s: %w", where, name, err)
	}
	// A chunk at a time, each chunk's mapped pages dropped once written: a large tensor (the
	// embedding) never has its source resident whole beside its destination.
	const chunk = 1 << 22
	for off := int64(0); off < numel; off += chunk {
		n := min(chunk, numel-off)
		src := t.Data[off*size : (off+n)*size]
		if dt != engine.F32 || size == 4 {
			err = m.Backend.Write(x.Buffer(), off*size, src)
		} else {
			var v []float32
			if v, err = checkpoint.ToFloat32(checkpoint.Tensor{DType: t.DType, Shape: []int{int(n)}, Data: src}); err == nil {
				err = x.SetFloat32At(int(off), v)
			}
		}
		if err != nil {
			x.Release()
			return fmt.Errorf("load %s: tensor %s: %w", where, name, err)
		}
		if d, ok := ck.(interface{ Drop(string) }); ok {
			d.Drop(name)
		}
	}
	m.Tensors[name] = x
	return nil
}

// transient counts the bytes of host garbage a load has made (a tensor widened for quantization,
// its packed copy) and collects it every transientLimit bytes: the weights kept are Go memory on
// the CPU backend, and the collector's default pacing would let the garbage grow as large as them
// before collecting, doubling the peak.
type transient struct{ n int64 }

const transientLimit = 64 << 20

func (t *transient) add(n int64) {
	if t.n += n; t.n >= transientLimit {
		runtime.GC()
		t.n = 0
	}
}

// tensorSource is where Load reads weights: a Hugging Face folder or a GGUF file, both in
// transformers' names and layout.
type tensorSource interface {
	Names() []string
	// Tensor gives the dtype and shape (and, for a folder, the bytes).
	Tensor(name string) (checkpoint.Tensor, bool)
	Float32(name string) ([]float32, []int, error)
	Close() error
}

func (m *Model) upload(name string, shape engine.Shape, v []float32) error {
	t, err := engine.FromFloat32(m.Backend, shape, v)
	if err != nil {
		return fmt.Errorf("load %s: upload %s: %w", m.Dir, name, err)
	}
	m.Tensors[name] = t
	return nil
}

func (m *Model) upload4(where string, l *Linear, t4 *quant.Tensor4) error {
	name := l.Name + ".weight"
	if len(t4.Shape) != 2 || t4.Shape[0] != l.Out || t4.Shape[1] != l.In {
		return fmt.Errorf("load %s: tensor %s has shape %v, the config needs [%d %d]", where, name, t4.Shape, l.Out, l.In)
	}
	absmax, err := t4.BlockAbsmax()
	if err != nil {
		return fmt.Errorf("load %s: %s: %w", where, name, err)
	}
	packed, err := engine.FromBytes(m.Backend, engine.U8, engine.Shape{len(t4.Packed)}, t4.Packed)
	if err != nil {
		return fmt.Errorf("load %s: upload %s: %w", where, name, err)
	}
	m.Tensors[name] = packed
	if err := m.upload(name+".absmax", engine.Shape{len(absmax)}, absmax); err != nil {
		return err
	}
	m.Quant[l.Name] = &engine.QuantSpec{Type: t4.Type, Blocksize: t4.Blocksize, N: l.Out, K: l.In}
	return nil
}

func (m *Model) quantFunc() QuantFunc {
	return func(name string, out, in int) *engine.QuantSpec { return m.Quant[name] }
}

// Declare records the model's parameters in g, matching the loaded weights (dense f32 or 16-bit,
// or 4-bit).
func (m *Model) Declare(g *engine.Graph) *Graph {
	mg := newGraph(m.Cfg, g, m.quantFunc(), func(name string) engine.DType {
		if t, ok := m.Tensors[name]; ok && engine.IsHalf(t.DType()) {
			return t.DType()
		}
		return engine.F32
	})
	m.declareHead(mg)
	for _, l := range mg.linears() {
		if l.W != nil && engine.IsHalf(l.W.DType()) {
			l.Compute = m.compute
			if l.Compute == engine.I8 {
				l.Compute = engine.BF16 // a 16-bit W's products take no 8-bit path
			}
		}
	}
	return mg
}

// Bind binds every leaf of p that is one of the model's weights; other leaves (inputs, adapter
// parameters) are left to the caller.
func (m *Model) Bind(p *engine.Program) error {
	for _, n := range p.Leaves() {
		if t, ok := m.Tensors[n.Name()]; ok {
			if err := p.Bind(n, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// WeightBytes is the device memory the weights take.
func (m *Model) WeightBytes() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.Meta().Bytes()
	}
	return n
}

// Release frees the weights on the device.
func (m *Model) Release() {
	for _, t := range m.Tensors {
		t.Release()
	}
	m.Tensors = map[string]*engine.Tensor{}
}
