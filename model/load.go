package model

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
)

// Model is a base model loaded onto a backend: its config and its frozen weights, dense f32 or
// 4-bit, keyed by the names its graph parameters carry (the checkpoint's tensor names; 4-bit
// weights as NAME.weight for the packed bytes and NAME.weight.absmax for the decoded block scales).
type Model struct {
	Cfg     *Config
	Dir     string
	Backend engine.Backend
	Tensors map[string]*engine.Tensor
	// Quant holds the 4-bit layout of each quantized linear layer, by module name.
	Quant map[string]*engine.QuantSpec
}

// LoadOptions choose how the weights are stored on the device.
type LoadOptions struct {
	// Quantize stores the linear layers' weights in 4 bits, quantized at load as bitsandbytes does
	// (QLoRA): "nf4" or "fp4"; "" keeps them as the checkpoint has them. A checkpoint that is
	// already in bitsandbytes' 4-bit format is loaded as it is.
	Quantize    string
	Blocksize   int  // default 64
	DoubleQuant bool // quantize the block scales too (the QLoRA paper's double quantization)
}

// Load reads a Hugging Face model folder (config.json, model.safetensors or a sharded index) and
// uploads its weights to b. Errors name the file and the tensor.
//
// A path ending in .gguf loads that GGUF file instead (see package gguf): its weights are
// dequantized to float32 (and, with Quantize, re-quantized to 4 bits as from any checkpoint).
func Load(dir string, b engine.Backend, o LoadOptions) (*Model, error) {
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
		case o.Quantize != "" && l.Name != "lm_head":
			v, err := m.dense(ck, where, name, []int{l.Out, l.In})
			if err != nil {
				return nil, err
			}
			if t4, err = quant.Quantize(v, []int{l.Out, l.In}, qtype, o.Blocksize, o.DoubleQuant); err != nil {
				return nil, fmt.Errorf("load %s: quantize %s: %w", where, name, err)
			}
		default:
			v, err := m.dense(ck, where, name, []int{l.Out, l.In})
			if err != nil {
				return nil, err
			}
			if err := m.upload(name, engine.Shape{l.Out, l.In}, v); err != nil {
				return nil, err
			}
			continue
		}
		if err := m.upload4(where, l, t4); err != nil {
			return nil, err
		}
	}
	// Everything else (embeddings, norms, biases) is dense.
	g := engine.NewGraph()
	NewGraph(cfg, g, m.quantFunc())
	for _, n := range g.Nodes() {
		name := n.Name()
		if _, done := m.Tensors[name]; done || n.DType() != engine.F32 {
			continue
		}
		v, err := m.dense(ck, where, name, n.Shape())
		if err != nil {
			return nil, err
		}
		if err := m.upload(name, n.Shape(), v); err != nil {
			return nil, err
		}
	}
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

// dense reads a float tensor and checks its shape.
func (m *Model) dense(ck tensorSource, where, name string, shape []int) ([]float32, error) {
	t, found := ck.Tensor(name)
	if !found {
		return nil, fmt.Errorf("load %s: missing tensor %s", where, name)
	}
	if !engine.Shape(t.Shape).Equal(shape) {
		return nil, fmt.Errorf("load %s: tensor %s has shape %v, the config needs %v", where, name, t.Shape, shape)
	}
	v, _, err := ck.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("load %s: tensor %s: %w", where, name, err)
	}
	return v, nil
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

// Declare records the model's parameters in g, matching the loaded weights (dense or 4-bit).
func (m *Model) Declare(g *engine.Graph) *Graph { return NewGraph(m.Cfg, g, m.quantFunc()) }

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
