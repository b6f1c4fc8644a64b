package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model/synth"
)

func newInitModelCmd() *cobra.Command {
	var (
		out, preset, dtype string
		seed               uint64
	)
	cmd := &cobra.Command{
		Use:   "init-model --out DIR [--seed N] [--preset tiny|small]",
		Short: "Write a small Llama checkpoint with deterministic random weights (for tests and demos)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("init-model: --out is required")
			}
			p, ok := synth.Presets[preset]
			if !ok {
				names := make([]string, 0, len(synth.Presets))
				for n := range synth.Presets {
					names = append(names, n)
				}
				sort.Strings(names)
				return fmt.Errorf("init-model: unknown preset %q (have %s)", preset, strings.Join(names, ", "))
			}
			res, err := synth.Write(out, synth.Options{Preset: p, Seed: seed, DType: strings.ToUpper(dtype)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a %s Llama (%d parameters, %s) to %s\n", res.Preset, res.Params, res.DType, res.Dir)
			return printJSON(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "folder to write (created if missing)")
	f.StringVar(&preset, "preset", "tiny", "model size: tiny or small")
	f.Uint64Var(&seed, "seed", 1, "random seed of the weights")
	f.StringVar(&dtype, "dtype", "f32", "weight type: f32, f16 or bf16")
	return cmd
}

func newInitDataCmd() *cobra.Command {
	var (
		out, kind string
		n         int
		seed      uint64
	)
	cmd := &cobra.Command{
		Use:   "init-data --out FILE [--kind facts|stories|chat] [--n 200]",
		Short: "Write a small synthetic JSONL dataset that the init-model tokenizer knows (for tests and demos)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("init-data: --out is required")
			}
			if n <= 0 {
				return fmt.Errorf("init-data: --n must be positive")
			}
			if err := synth.WriteDataset(out, kind, seed, n); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d %s examples to %s\n", n, kind, out)
			return printJSON(cmd.OutOrStdout(), map[string]any{"out": out, "kind": kind, "examples": n, "seed": seed})
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "JSONL file to write")
	f.StringVar(&kind, "kind", synth.Facts, "facts (prompt/completion), stories (text) or chat (messages)")
	f.IntVar(&n, "n", 200, "number of examples")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	return cmd
}
