package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model/llama2c"
)

func newConvertCmd() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "convert --from llama2c MODEL.bin TOKENIZER.bin OUT_DIR",
		Short: "Convert a checkpoint of another format into a Hugging Face model folder",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from != "llama2c" {
				return fmt.Errorf("convert: --from %q is not supported (have: llama2c)", from)
			}
			res, err := llama2c.Convert(args[0], args[1], args[2])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "converted %s (%d parameters, %d layers, vocab %d) to %s\n", args[0], res.Params, res.Layers, res.Vocab, res.Out)
			return printJSON(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().StringVar(&from, "from", "llama2c", "source format: llama2c")
	return cmd
}
