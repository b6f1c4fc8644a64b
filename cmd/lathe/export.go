//go:build !lathe_lite

package main

import (
	"fmt"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/gguf"
	"github.com/lathe-ml/lathe/peft"
)

func newExportCmd() *cobra.Command {
	var dir, adapterDir, format, typ, out string
	cmd := &cobra.Command{
		Use:   "export --model DIR [--adapter DIR] --format gguf [--type F16] --out FILE.gguf",
		Short: "Write a model folder (a merged model, say) in another runtime's format",
		Long: "Export writes a Hugging Face model folder as a GGUF file for llama.cpp, Ollama and LM Studio, " +
			"laid out as llama.cpp's convert_hf_to_gguf.py writes it (llama or qwen2 architecture, tokenizer and chat " +
			"template in the metadata). --type is the matrices' type: F32, F16 (default), BF16, Q8_0, Q4_0, Q4_K or " +
			"Q6_K; a matrix whose rows are not whole blocks of it falls back to Q8_0 or F16, vectors stay F32. " +
			"With --adapter, the LoRA adapter (trained on --model, a folder or a GGUF) is written as llama.cpp's " +
			"convert_lora_to_gguf.py writes one (general.type adapter, adapter.lora.alpha, *.lora_a/*.lora_b; " +
			"rsLoRA's scale folded in); IA3 and DoRA have no GGUF adapter format and are refused: merge them instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || out == "" {
				return fmt.Errorf("export: --model and --out are required")
			}
			if format != "gguf" {
				return fmt.Errorf("export: --format %q is not supported (have: gguf)", format)
			}
			t, err := gguf.ParseType(typ)
			if err != nil {
				return fmt.Errorf("export: --type: %w", err)
			}
			if adapterDir != "" {
				return exportAdapter(cmd, dir, adapterDir, out, t)
			}
			res, err := gguf.WriteModel(dir, out, t)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "exported %s as %s (%d tensors, %d bytes) to %s\n", dir, res.Type, res.Tensors, res.Bytes, res.Out)
			return printJSON(w, res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "model folder to export (with --adapter: the base the adapter was trained on)")
	f.StringVar(&adapterDir, "adapter", "", "export this PEFT LoRA adapter instead of the model")
	f.StringVar(&format, "format", "gguf", "output format: gguf")
	f.StringVar(&typ, "type", "F16", "GGUF type of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K")
	f.StringVar(&out, "out", "", "file to write")
	return cmd
}

// exportAdapter writes the PEFT LoRA adapter in adapterDir, trained on the model at dir, as a
// GGUF adapter.
func exportAdapter(cmd *cobra.Command, dir, adapterDir, out string, t parser.GGMLType) error {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return err
	}
	pc, err := peft.LoadConfig(adapterDir)
	if err != nil {
		return err
	}
	switch {
	case pc.PeftType == peft.TypeIA3:
		return fmt.Errorf("export: %s is an IA3 adapter: GGUF has no IA3 adapter format; merge it (lathe merge) and export the model", adapterDir)
	case pc.UseDoRA:
		return fmt.Errorf("export: %s is a DoRA adapter: GGUF has no DoRA adapter format; merge it (lathe merge) and export the model", adapterDir)
	}
	a, err := peft.Load(adapterDir, cfg, cpu.New())
	if err != nil {
		return err
	}
	defer a.Release()
	arch := "llama"
	if cfg.IsQwen2() {
		arch = "qwen2"
	}
	var mods []gguf.LoRAModule
	for _, md := range a.Modules() {
		get := func(suffix string) ([]float32, error) {
			key := "base_model.model." + md.Name + suffix
			tt, ok := a.Tensor(key)
			if !ok {
				return nil, fmt.Errorf("export: adapter has no %s", key)
			}
			return tt.Float32()
		}
		A, err := get(".lora_A.weight")
		if err != nil {
			return err
		}
		B, err := get(".lora_B.weight")
		if err != nil {
			return err
		}
		heads := 0
		switch {
		case strings.HasSuffix(md.Name, "q_proj"):
			heads = cfg.NumHeads
		case strings.HasSuffix(md.Name, "k_proj"):
			heads = cfg.NumKVHeads
		}
		mods = append(mods, gguf.LoRAModule{Name: md.Name, In: md.In, Out: md.Out, R: md.R, A: A, B: B, Scale: md.Scale, Heads: heads})
	}
	res, err := gguf.WriteLoRA(out, arch, a.Config.LoraAlpha, mods, t)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "exported the LoRA adapter %s (%d tensors, alpha %g) for %s to %s\n", adapterDir, res.Tensors, res.Alpha, arch, res.Out)
	return printJSON(w, res)
}
