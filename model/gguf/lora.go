package gguf

import (
	"fmt"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/lathe-ml/lathe/model/checkpoint"
)

// LoRAModule is one adapted linear layer: transformers' module name, PEFT's A [R, In] and B
// [Out, R], and the scale lathe applies (alpha/r, alpha/sqrt(r) for rsLoRA, or a pattern's).
type LoRAModule struct {
	Name       string
	In, Out, R int
	A, B       []float32
	Scale      float32
	Heads      int // > 0: the layer is a llama q or k projection of this many heads
}

// LoRAResult describes a written GGUF adapter.
type LoRAResult struct {
	Out     string  `json:"out"`
	Arch    string  `json:"architecture"`
	Alpha   float64 `json:"alpha"`
	Tensors int     `json:"tensors"`
	Type    string  `json:"type"`
}

// WriteLoRA writes a LoRA adapter as llama.cpp's convert_lora_to_gguf.py does: general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, general.architecture arch (which llama.cpp
// checks against the base); per module NAME.weight.lora_a (A, [R, In]) and .lora_b (B, [Out, R])
// under llama.cpp's tensor names, with B's rows of a llama q or k projection permuted as the
// base's. llama.cpp scales each module by alpha/R; a module whose scale differs (rsLoRA, alpha or
// rank patterns) has it folded into B.
func WriteLoRA(path, arch string, alpha float64, modules []LoRAModule, typ parser.GGMLType) (LoRAResult, error) {
	if arch != "llama" && arch != "qwen2" {
		return LoRAResult{}, fmt.Errorf("export gguf adapter: architecture %q is not written (llama and qwen2 are)", arch)
	}
	if alpha <= 0 {
		return LoRAResult{}, fmt.Errorf("export gguf adapter: alpha %v must be positive", alpha)
	}
	var w Writer
	w.String("general.architecture", arch)
	w.String("general.type", "adapter")
	w.String("adapter.type", "lora")
	w.Float32("adapter.lora.alpha", float32(alpha))
	w.Uint32("general.alignment", alignment)
	n := 0
	for _, m := range modules {
		g := GGUFName(m.Name + ".weight")
		if g == "" {
			return LoRAResult{}, fmt.Errorf("export gguf adapter: module %s has no llama.cpp tensor name", m.Name)
		}
		if len(m.A) != m.R*m.In || len(m.B) != m.Out*m.R {
			return LoRAResult{}, fmt.Errorf("export gguf adapter: module %s: A has %d values, B %d, for r=%d [%d %d]", m.Name, len(m.A), len(m.B), m.R, m.Out, m.In)
		}
		m := m
		if err := w.Tensor(g+".lora_a", typ, []int{m.R, m.In}, func() ([]float32, error) { return m.A, nil }); err != nil {
			return LoRAResult{}, err
		}
		fold := float64(m.Scale) * float64(m.R) / alpha
		if err := w.Tensor(g+".lora_b", typ, []int{m.Out, m.R}, func() ([]float32, error) {
			b := m.B
			if fold != 1 {
				b = make([]float32, len(m.B))
				for i, x := range m.B {
					b[i] = float32(float64(x) * fold)
				}
			}
			if arch == "llama" && m.Heads > 0 && (strings.HasSuffix(m.Name, "q_proj") || strings.HasSuffix(m.Name, "k_proj")) {
				b = checkpoint.RoPEInterleaved(b, m.Heads, m.Out, m.R)
			}
			return b, nil
		}); err != nil {
			return LoRAResult{}, err
		}
		n += 2
	}
	if err := w.WriteFile(path); err != nil {
		return LoRAResult{}, fmt.Errorf("export gguf adapter: %w", err)
	}
	return LoRAResult{Out: path, Arch: arch, Alpha: alpha, Tensors: n, Type: typ.String()}, nil
}
