//go:build !lathe_lite

package train

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// PlotLoss draws train loss against step as a line and eval losses as points, and writes the
// chart as a PNG to path (atomically). Non-finite losses are left out.
func PlotLoss(path string, steps []StepMetrics, evals []EvalMetrics) error {
	p := plot.New()
	p.Title.Text = "loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	p.Add(plotter.NewGrid())
	var train plotter.XYs
	for _, s := range steps {
		if !math.IsNaN(s.Loss) && !math.IsInf(s.Loss, 0) {
			train = append(train, plotter.XY{X: float64(s.Step), Y: s.Loss})
		}
	}
	var eval plotter.XYs
	for _, e := range evals {
		if !math.IsNaN(e.Loss) && !math.IsInf(e.Loss, 0) {
			eval = append(eval, plotter.XY{X: float64(e.Step), Y: e.Loss})
		}
	}
	if len(train) == 0 && len(eval) == 0 {
		return fmt.Errorf("plot loss %s: no finite losses to plot", path)
	}
	if len(train) > 0 {
		l, err := plotter.NewLine(train)
		if err != nil {
			return fmt.Errorf("plot loss %s: %w", path, err)
		}
		l.Color = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add("train", l)
	}
	if len(eval) > 0 {
		sc, err := plotter.NewScatter(eval)
		if err != nil {
			return fmt.Errorf("plot loss %s: %w", path, err)
		}
		sc.GlyphStyle.Color = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		sc.GlyphStyle.Radius = vg.Points(3.5)
		p.Add(sc)
		p.Legend.Add("eval", sc)
	}
	p.Legend.Top = true
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("plot loss %s: %w", path, err)
	}
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	}); err != nil {
		return fmt.Errorf("plot loss: %w", err)
	}
	return nil
}
