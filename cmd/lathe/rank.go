//go:build !lathe_lite

package main

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/peft"
)

func newRankCmd() *cobra.Command {
	var adapterDir, out string
	var energy float64
	cmd := &cobra.Command{
		Use:   "rank --adapter DIR --energy 0.9 --out DIR",
		Short: "Truncate each module of a LoRA adapter to the rank holding a share of its singular-value energy",
		Long: "Rank takes the SVD of each module's ΔW = s·B·A, keeps the smallest rank whose singular values hold " +
			"--energy of Σσ², and writes the truncated adapter to --out with PEFT's rank_pattern and alpha_pattern, " +
			"so ΔW is kept up to the cut. It prints a table of modules and ranks and writes spectra.png (the " +
			"singular values of every module) to --out.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if adapterDir == "" || out == "" {
				return fmt.Errorf("rank: --adapter and --out are required")
			}
			rep, err := peft.SelectRanks(adapterDir, energy, out)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "module\trank\tkept\tenergy\tσ1\tσ_kept\t")
			for _, m := range rep.Modules {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.4f\t%.4g\t%.4g\t\n", m.Module, m.Rank, m.Kept, m.Energy, m.Sigma[0], m.Sigma[m.Kept-1])
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			png := filepath.Join(out, "spectra.png")
			if err := spectraPNG(rep, png); err != nil {
				return fmt.Errorf("rank: %w", err)
			}
			fmt.Fprintf(w, "kept %d of %d parameters (%.1f%%) in %s; spectra in %s\n", rep.ParamsAfter, rep.ParamsBefore,
				100*float64(rep.ParamsAfter)/float64(rep.ParamsBefore), out, png)
			return printJSON(w, map[string]any{"out": out, "energy": energy, "params_before": rep.ParamsBefore,
				"params_after": rep.ParamsAfter, "spectra": png, "modules": rep.Modules})
		},
	}
	f := cmd.Flags()
	f.StringVar(&adapterDir, "adapter", "", "PEFT LoRA adapter folder")
	f.Float64Var(&energy, "energy", 0.9, "share of Σσ² each module keeps, in (0, 1]")
	f.StringVar(&out, "out", "", "folder to write the truncated adapter to")
	return cmd
}

// spectraPNG plots each module's singular values, divided by its largest, against their index.
func spectraPNG(rep peft.RankReport, path string) error {
	p := plot.New()
	p.Title.Text = "Singular values of ΔW = s·B·A per module"
	p.X.Label.Text, p.Y.Label.Text = "index", "σ / σ1"
	p.Add(plotter.NewGrid())
	for i, m := range rep.Modules {
		pts := make(plotter.XYs, len(m.Sigma))
		for k, s := range m.Sigma {
			pts[k] = plotter.XY{X: float64(k + 1), Y: s / max(m.Sigma[0], 1e-30)}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		p.Add(l)
	}
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}
