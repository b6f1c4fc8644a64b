package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
)

func newQuantizeCmd() *cobra.Command {
	var (
		typ         string
		blocksize   int
		doubleQuant bool
		compute     string
	)
	cmd := &cobra.Command{
		Use:   "quantize IN_DIR OUT_DIR",
		Short: "Quantize a Hugging Face model's linear weights to 4 bits, as bitsandbytes and transformers store them",
		Long: "Quantize writes to OUT_DIR the model in IN_DIR with the weights of its linear layers in " +
			"bitsandbytes' 4-bit format (what transformers saves for load_in_4bit), loadable by transformers, " +
			"and by lathe for QLoRA. Embeddings, norms, biases and lm_head are kept as they are.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := quant.ParseType(typ)
			if err != nil {
				return err
			}
			rep, err := checkpoint.QuantizeFolder(args[0], args[1], checkpoint.QuantizeOptions{
				Type: t, Blocksize: blocksize, DoubleQuant: doubleQuant, ComputeDType: compute,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			dq := ""
			if rep.DoubleQuant {
				dq = " + double quant"
			}
			fmt.Fprintf(w, "quantized %d tensors (%d params) to %s%s, blocksize %d: %.3f bits/param\n",
				rep.QuantizedTensors, rep.QuantizedParams, rep.QuantType, dq, rep.Blocksize, rep.BitsPerParam)
			fmt.Fprintf(w, "kept %d tensors (%d params); %s -> %s in %s\n",
				rep.KeptTensors, rep.KeptParams, byteSize(rep.BytesIn), byteSize(rep.BytesOut), rep.Out)
			return printJSON(w, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "nf4", "4-bit data type: nf4 or fp4")
	f.IntVar(&blocksize, "blocksize", quant.DefaultBlocksize, "elements per absmax block: a power of two from 32 to 4096")
	f.BoolVar(&doubleQuant, "double-quant", false, "also quantize the absmax values to 8 bits (bnb_4bit_use_double_quant)")
	f.StringVar(&compute, "compute-dtype", "", "bnb_4bit_compute_dtype to record: float32, bfloat16 or float16 (default: the model's torch_dtype)")
	return cmd
}

func newDequantizeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dequantize IN_DIR OUT_DIR",
		Short: "Expand a bitsandbytes 4-bit model back to float32 weights",
		Long: "Dequantize writes to OUT_DIR the bitsandbytes 4-bit model in IN_DIR with every floating-point " +
			"tensor in float32 and config.json without its quantization_config.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := checkpoint.DequantizeFolder(args[0], args[1])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "dequantized %d tensors (%d params) to float32, %d other tensors; %s -> %s in %s\n",
				rep.DequantizedTensors, rep.DequantizedParams, rep.OtherTensors,
				byteSize(rep.BytesIn), byteSize(rep.BytesOut), rep.Out)
			return printJSON(w, rep)
		},
	}
}

// byteSize formats a byte count for people: 1.5 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i-1])
}
