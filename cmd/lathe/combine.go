package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

func newCombineCmd() *cobra.Command {
	var (
		dir, out string
		specs    []string
	)
	cmd := &cobra.Command{
		Use:   "combine --model DIR --adapter DIR=WEIGHT --adapter DIR=WEIGHT ... --out DIR",
		Short: "Combine LoRA adapters into one, weighted, as PEFT's add_weighted_adapter (cat)",
		Long: "Combine writes one LoRA adapter equal to the weighted sum of the given ones (their ranks " +
			"concatenated, so the sum is exact), as a PEFT folder to serve, merge or train on.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || out == "" || len(specs) == 0 {
				return fmt.Errorf("combine: --model, --out and at least one --adapter DIR=WEIGHT are required")
			}
			cfg, err := model.LoadConfig(dir)
			if err != nil {
				return err
			}
			b := cpu.New()
			var adapters []*peft.Adapter
			var weights []float64
			defer func() {
				for _, a := range adapters {
					a.Release()
				}
			}()
			for _, spec := range specs {
				i := strings.LastIndex(spec, "=")
				if i < 0 {
					return fmt.Errorf("combine: --adapter %q: want DIR=WEIGHT", spec)
				}
				w, err := strconv.ParseFloat(spec[i+1:], 64)
				if err != nil {
					return fmt.Errorf("combine: --adapter %q: weight: %w", spec, err)
				}
				a, err := peft.Load(spec[:i], cfg, b)
				if err != nil {
					return err
				}
				adapters, weights = append(adapters, a), append(weights, w)
			}
			c, err := peft.Combine(weights, adapters...)
			if err != nil {
				return err
			}
			defer c.Release()
			if err := c.Save(out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "combined %d adapters into rank %d in %s\n", len(adapters), c.Config.R, out)
			return printJSON(w, map[string]any{"out": out, "adapters": len(adapters), "r": c.Config.R, "weights": weights})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "the base model folder the adapters were trained on")
	f.StringArrayVar(&specs, "adapter", nil, "DIR=WEIGHT: a LoRA adapter folder and its weight (repeatable)")
	f.StringVar(&out, "out", "", "folder to write the combined adapter to")
	return cmd
}
