package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model/tokenizer"
)

func newTokenizeCmd() *cobra.Command {
	var dir, text string
	var special bool
	cmd := &cobra.Command{
		Use:   "tokenize --model DIR --text TEXT",
		Short: "Print the token ids of a text under a model's tokenizer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("tokenize: --model is required")
			}
			tok, err := tokenizer.Load(dir)
			if err != nil {
				return err
			}
			ids, err := tok.Encode(text, special)
			if err != nil {
				return fmt.Errorf("tokenize: %w", err)
			}
			tokens := make([]string, len(ids))
			for i, id := range ids {
				tokens[i], _ = tok.IDToToken(id)
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"ids": ids, "tokens": tokens})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "model folder holding tokenizer.json")
	f.StringVar(&text, "text", "", "text to encode")
	f.BoolVar(&special, "special", true, "add the special tokens the tokenizer adds (e.g. BOS)")
	return cmd
}
