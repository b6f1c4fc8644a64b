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
		dir, out, method, sign string
		specs                  []string
		density                float64
		svdRank                int
		seed                   uint64
	)
	cmd := &cobra.Command{
		Use:   "combine --model DIR --adapter DIR=WEIGHT --adapter DIR=WEIGHT ... [--method cat] [--density D] --out DIR",
		Short: "Combine LoRA adapters into one, weighted, as PEFT's add_weighted_adapter",
		Long: "Combine writes one LoRA adapter from the given ones, as PEFT's add_weighted_adapter with the same " +
			"combination_type: cat (default: ranks concatenated, the weighted sum is exact), linear, svd, ties, " +
			"dare_linear, dare_ties, magnitude_prune (and ties_svd, dare_linear_svd, dare_ties_svd, " +
			"magnitude_prune_svd). linear, ties, dare_* and magnitude_prune need adapters of one rank and keep it; " +
			"cat's rank is the sum, the svd methods' --svd-rank (default the largest). --density is the fraction " +
			"the pruning methods keep; DARE draws the masks PEFT draws after torch.manual_seed(--seed).",
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
			c, err := peft.CombineWith(weights, peft.CombineOptions{Method: method, Density: density, MajoritySign: sign, SVDRank: svdRank, Seed: seed}, adapters...)
			if err != nil {
				return err
			}
			defer c.Release()
			if err := c.Save(out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "combined %d adapters (%s) into rank %d in %s\n", len(adapters), method, c.Config.R, out)
			return printJSON(w, map[string]any{"out": out, "adapters": len(adapters), "r": c.Config.R, "weights": weights,
				"method": method, "density": density, "rank_kept": peft.RankKeeping(method)})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "the base model folder the adapters were trained on")
	f.StringArrayVar(&specs, "adapter", nil, "DIR=WEIGHT: a LoRA adapter folder and its weight (repeatable)")
	f.StringVar(&out, "out", "", "folder to write the combined adapter to")
	f.StringVar(&method, "method", "cat", "combination type: "+strings.Join(peft.Methods, ", "))
	f.Float64Var(&density, "density", 1, "fraction of values the pruning methods keep (ties, dare_*, magnitude_prune)")
	f.StringVar(&sign, "majority-sign", "total", "ties' sign election: total or frequency")
	f.IntVar(&svdRank, "svd-rank", 0, "rank of the svd methods' result (default: the largest rank combined)")
	f.Uint64Var(&seed, "seed", 0, "seed of DARE's random pruning: torch.manual_seed's, for PEFT's masks")
	return cmd
}
