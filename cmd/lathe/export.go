package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model/gguf"
)

func newExportCmd() *cobra.Command {
	var dir, format, typ, out string
	cmd := &cobra.Command{
		Use:   "export --model DIR --format gguf [--type F16] --out FILE.gguf",
		Short: "Write a model folder (a merged model, say) in another runtime's format",
		Long: "Export writes a Hugging Face model folder as a GGUF file for llama.cpp, Ollama and LM Studio, " +
			"laid out as llama.cpp's convert_hf_to_gguf.py writes it (llama or qwen2 architecture, tokenizer and chat " +
			"template in the metadata). --type is the matrices' type: F32, F16 (default), BF16, Q8_0, Q4_0, Q4_K or " +
			"Q6_K; a matrix whose rows are not whole blocks of it falls back to Q8_0 or F16, vectors stay F32.",
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
	f.StringVar(&dir, "model", "", "model folder to export")
	f.StringVar(&format, "format", "gguf", "output format: gguf")
	f.StringVar(&typ, "type", "F16", "GGUF type of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K")
	f.StringVar(&out, "out", "", "file to write")
	return cmd
}
