package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

func newMergeCmd() *cobra.Command {
	var dir, adapterDir, out string
	cmd := &cobra.Command{
		Use:   "merge --model DIR --adapter DIR --out DIR",
		Short: "Merge an adapter into its base model's weights and write the merged model folder",
		Long: "Merge folds a LoRA or IA3 adapter into the base model's weights (PEFT's merge_and_unload) " +
			"and writes a Hugging Face folder, in the base's dtypes, that any runtime serves without the adapter. " +
			"A 4-bit base is refused: dequantize it first.",
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
			rep, err := peft.MergeFolder(dir, out, a)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "merged %s into %d tensors of %s (%d kept) in %s\n", a.Config.PeftType, rep.Changed, dir, rep.Kept, rep.Out)
			return printJSON(w, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "base model folder")
	f.StringVar(&adapterDir, "adapter", "", "PEFT adapter folder")
	f.StringVar(&out, "out", "", "folder to write the merged model to")
	return cmd
}
