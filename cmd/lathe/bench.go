//go:build !lathe_lite

package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		backend, out, python string
		quick, reference     bool
		compare              bool
		budget               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench [--backend cpu|webgpu|vulkan|all] [--quick] [--out DIR] [--reference] [--budget D] | bench --compare A.json B.json",
		Short: "Measure kernels against the device's roofline and end-to-end generation; write JSON, Markdown and charts",
		Args: func(_ *cobra.Command, args []string) error {
			if compare && len(args) != 2 {
				return fmt.Errorf("bench: --compare takes two reports: --compare A.json B.json")
			}
			if !compare && len(args) > 0 {
				return fmt.Errorf("bench: unexpected arguments %q", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if compare {
				a, err := bench.ReadReport(args[0])
				if err != nil {
					return err
				}
				b, err := bench.ReadReport(args[1])
				if err != nil {
					return err
				}
				c := bench.Compare(a, b)
				c.Print(w)
				return printJSON(w, c)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			rep, err := bench.Run(ctx, bench.Options{
				Backend: backend, Quick: quick, Reference: reference, Python: python, Budget: budget,
				Command: strings.Join(os.Args, " "), Log: cmd.ErrOrStderr(),
				Train: bench.TrainStep,
			})
			if rep == nil {
				return err
			}
			paths, werr := rep.WriteAll(out)
			if werr != nil {
				return werr
			}
			if err != nil {
				return err
			}
			fmt.Fprint(w, rep.Markdown())
			return printJSON(w, map[string]any{"out": out, "files": paths, "wall_seconds": rep.WallSeconds})
		},
	}
	f := cmd.Flags()
	f.StringVar(&backend, "backend", "all", "backend to measure: cpu, webgpu, vulkan or all (every device found)")
	f.BoolVar(&quick, "quick", false, "only the 0.5B and 1B shapes and fewer repeats (about two minutes on a 2-core CPU)")
	f.StringVar(&out, "out", "bench-out", "folder for bench.json, bench.md and the charts")
	f.BoolVar(&reference, "reference", false, "also time the same shapes in PyTorch (bench/reference/torch_ref.py) and report ratios")
	f.StringVar(&python, "python", "", "Python interpreter with torch for --reference (default: LATHE_PYTHON, python3, /usr/bin/python3)")
	f.DurationVar(&budget, "budget", 0, "stop measuring kernels after this long (e.g. 3m) and report what was measured; 0: no limit")
	f.BoolVar(&compare, "compare", false, "compare two bench.json files given as arguments (b/a time ratios) instead of measuring")
	return cmd
}
