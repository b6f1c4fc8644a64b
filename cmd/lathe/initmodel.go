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
