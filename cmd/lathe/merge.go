package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/memwatch"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/peft"
)

func newMergeCmd() *cobra.Command {
	var dir, adapterDir, out, requantize string
	cmd := &cobra.Command{
		Use:   "merge --model DIR --adapter DIR --out DIR",
		Short: "Merge an adapter into its base model's weights and write the merged model folder",
		Long: "Merge folds a LoRA or IA3 adapter into the base model's weights (PEFT's merge_and_unload) " +
			"and writes a Hugging Face folder, in the base's dtypes, that any runtime serves without the adapter. " +
			"Over a bitsandbytes 4-bit base (QLoRA), each weight is dequantized, merged and written in bf16, one tensor " +
			"at a time (--requantize nf4 writes 4 bits again). The JSON line reports the peak memory (Go heap and " +
			"resident set, which counts the pages of the mapped base that were read).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || adapterDir == "" || out == "" {
				return fmt.Errorf("merge: --model, --adapter and --out are required")
			}
			cfg, err := model.LoadConfig(dir)
			if err != nil {
				return err
			}
			a, err := peft.Load(adapterDir, cfg, cpu.New())
			if err != nil {
				return err
			}
			defer a.Release()
			is4, err := peft.Is4bitFolder(dir)
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			if requantize != "" && !is4 {
				return fmt.Errorf("merge: --requantize needs a 4-bit (bitsandbytes) base; %s is not one", dir)
			}
			w := cmd.OutOrStdout()
			stop := memwatch.Start()
			if is4 {
				rep, err := peft.MergeFolder4bit(dir, out, a, requantize)
				peak := stop()
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "merged %s over the 4-bit %s: %d tensors changed, %d dequantized, written as %s in %s (peak heap %d bytes, model file %d bytes)\n",
					a.Config.PeftType, dir, rep.Changed, rep.Dequantized, rep.DType, rep.Out, peak.HeapBytes, rep.BytesIn)
				return printJSON(w, struct {
					checkpoint.Rewrite4Report
					memwatch.Peak
				}{rep, peak})
			}
			rep, err := peft.MergeFolder(dir, out, a)
			peak := stop()
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "merged %s into %d tensors of %s (%d kept) in %s\n", a.Config.PeftType, rep.Changed, dir, rep.Kept, rep.Out)
			return printJSON(w, struct {
				checkpoint.RewriteReport
				memwatch.Peak
			}{rep, peak})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "base model folder")
	f.StringVar(&adapterDir, "adapter", "", "PEFT adapter folder")
	f.StringVar(&out, "out", "", "folder to write the merged model to")
	f.StringVar(&requantize, "requantize", "", "over a 4-bit base, write the merged weights in 4 bits again: nf4 or fp4 (default: bf16)")
	return cmd
}
