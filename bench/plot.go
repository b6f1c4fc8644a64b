package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// palette gives each series its own colour and glyph (plotutil's seven repeat too soon).
var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
	color.RGBA{0xe3, 0x77, 0xc2, 0xff}, color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, color.RGBA{0xbc, 0xbd, 0x22, 0xff},
	color.RGBA{0x17, 0xbe, 0xcf, 0xff}, color.RGBA{0x00, 0x00, 0x80, 0xff}, color.RGBA{0x80, 0x00, 0x00, 0xff},
}

func seriesColor(i int) color.Color { return palette[i%len(palette)] }

func seriesShape(i int) draw.GlyphDrawer { return plotutil.Shape(i % 7) }

// legendWidth is the strip right of the chart that holds the legend.
const legendWidth = 2.6 * vg.Inch

// savePNG draws p with leg in a strip to its right, so that the legend never hides data.
func savePNG(p *plot.Plot, leg plot.Legend, w, h vg.Length, path string) error {
	img := vgimg.New(w+legendWidth, h)
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	p.Draw(draw.Crop(dc, 0, -legendWidth, 0, -vg.Points(4))) // room above the title
	leg.Top, leg.Left = true, true
	leg.Draw(draw.Crop(dc, w+vg.Points(6), 0, 0, -vg.Points(30)))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteCharts draws, for every device with measured kernels, a roofline chart and a chart of
// kernel throughput by model size, as PNGs in dir; it returns the paths written.
func (r *Report) WriteCharts(dir string) ([]string, error) {
	var paths []string
	for _, be := range r.Backends {
		if len(be.Kernels) == 0 {
			continue
		}
		// Named as `lathe devices` names the device ("webgpu:0"), with '_' for ':' so that the name
		// is a valid file name everywhere.
		slug := fmt.Sprintf("%s_%d", be.Device.Backend, be.Device.Index)
		if be.Ceilings.Valid() {
			p := filepath.Join(dir, "roofline-"+slug+".png")
			if err := rooflineChart(be, p); err != nil {
				return paths, err
			}
			paths = append(paths, p)
		}
		p := filepath.Join(dir, "throughput-"+slug+".png")
		ok, err := throughputChart(be, p)
		if err != nil {
			return paths, err
		}
		if ok {
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// kernelOrder sorts chart series in report order.
func kernelOrder(kernel string) int {
	for i, k := range AllKernels {
		if k == kernel {
			return i
		}
	}
	return len(AllKernels)
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text, p.Y.Label.Text = x, y
	p.X.Label.TextStyle.Font.Size = vg.Points(12)
	p.Y.Label.TextStyle.Font.Size = vg.Points(12)
	p.X.Tick.Label.Font.Size = vg.Points(10)
	p.Y.Tick.Label.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	return p
}

func newLegend() plot.Legend {
	l := plot.NewLegend()
	l.TextStyle.Font.Size = vg.Points(11)
	l.Padding = vg.Points(3)
	return l
}

// logTicks labels every power of ten (and 2 and 5 between them when the range is narrow).
func logTicks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	narrow := math.Log10(hi/lo) < 3
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			label := ""
			if m == 1 || narrow {
				label = fmtNum(v)
			}
			ts = append(ts, plot.Tick{Value: v, Label: label})
		}
	}
	return ts
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.0e", v)
	case v >= 1:
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%g", v)
}

func rooflineChart(be BackendReport, path string) error {
	c := be.Ceilings
	// The axes span the kernels and the ridge.
	xlo, xhi := c.Ridge()/8, c.Ridge()*8
	ylo, yhi := c.PeakFLOPS/1e9, c.PeakFLOPS/1e9
	series := map[string]plotter.XYs{}
	for _, k := range be.Kernels {
		if k.Err != "" || k.SameAs != "" || k.Intensity <= 0 || k.GFLOPS <= 0 {
			continue
		}
		series[k.Kernel] = append(series[k.Kernel], plotter.XY{X: k.Intensity, Y: k.GFLOPS})
		xlo, xhi = min(xlo, k.Intensity), max(xhi, k.Intensity)
		ylo, yhi = min(ylo, k.GFLOPS), max(yhi, k.GFLOPS)
	}
	xlo, xhi = xlo/2, xhi*2
	ylo, yhi = ylo/2, yhi*2
	title := fmt.Sprintf("Roofline — %s", be.Label())
	if be.Tiny {
		title += " (tiny shapes: correctness device)"
	}
	p := newPlot(title, "arithmetic intensity (flop/byte)", "GFLOP/s")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = plot.TickerFunc(logTicks)
	p.Y.Tick.Marker = plot.TickerFunc(logTicks)
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = xlo, xhi, ylo, yhi
	// The roofline itself: the bandwidth slope up to the ridge, then the compute ceiling.
	roof := plotter.XYs{{X: xlo, Y: xlo * c.Bandwidth / 1e9}, {X: c.Ridge(), Y: c.PeakFLOPS / 1e9}, {X: xhi, Y: c.PeakFLOPS / 1e9}}
	if roof[0].Y < ylo {
		// Start the slope where it enters the chart.
		x0 := ylo * 1e9 / c.Bandwidth
		roof[0] = plotter.XY{X: x0, Y: ylo}
	}
	line, err := plotter.NewLine(roof)
	if err != nil {
		return fmt.Errorf("roofline chart: %w", err)
	}
	line.LineStyle.Width = vg.Points(2.5)
	line.LineStyle.Color = color.Black
	p.Add(line)
	leg := newLegend()
	leg.Add(fmt.Sprintf("roofline: %.1f GB/s, %.1f GFLOP/s", c.Bandwidth/1e9, c.PeakFLOPS/1e9), line)
	names := make([]string, 0, len(series))
	for n := range series {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return kernelOrder(names[i]) < kernelOrder(names[j]) })
	for i, n := range names {
		s, err := plotter.NewScatter(series[n])
		if err != nil {
			return fmt.Errorf("roofline chart: %w", err)
		}
		s.GlyphStyle.Color = seriesColor(i)
		s.GlyphStyle.Shape = seriesShape(i)
		s.GlyphStyle.Radius = vg.Points(4)
		p.Add(s)
		leg.Add(n, s)
	}
	if err := savePNG(p, leg, 9*vg.Inch, 6.5*vg.Inch, path); err != nil {
		return fmt.Errorf("roofline chart: %w", err)
	}
	return nil
}

// throughputChart plots, per kernel, the GFLOP/s over all of a model's cases (total flops over
// total time) against the model's size. It draws nothing (false) with fewer than two models.
func throughputChart(be BackendReport, path string) (bool, error) {
	type acc struct{ flops, sec float64 }
	byKernel := map[string]map[string]*acc{}
	billions := map[string]float64{}
	for _, m := range append(append([]ModelShape(nil), Models...), Tiny) {
		billions[m.Name] = m.Billions
	}
	models := map[string]bool{}
	for _, k := range be.Kernels {
		if k.Err != "" || k.Time.Median <= 0 {
			continue
		}
		if byKernel[k.Kernel] == nil {
			byKernel[k.Kernel] = map[string]*acc{}
		}
		a := byKernel[k.Kernel][k.Model]
		if a == nil {
			a = &acc{}
			byKernel[k.Kernel][k.Model] = a
		}
		a.flops += k.Flops
		a.sec += k.Time.Median
		models[k.Model] = true
	}
	if len(models) < 2 {
		return false, nil
	}
	title := "Kernel throughput by model size — " + be.Label()
	p := newPlot(title, "model size (billions of parameters; layer shapes of the published configs)", "GFLOP/s (all shapes of the model)")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	var ticks []plot.Tick
	var names []string
	for m := range models {
		names = append(names, m)
	}
	sort.Slice(names, func(i, j int) bool { return billions[names[i]] < billions[names[j]] })
	xlo, xhi := math.Inf(1), 0.0
	for i, m := range names {
		b := billions[m]
		label := strings.Replace(m, "-", "-\n", 1)
		if i > 0 && b/billions[names[i-1]] < 1.2 {
			// Close neighbours (Mistral-7B, Llama-3-8B) share one label, a name a line.
			ticks[len(ticks)-1].Label = names[i-1] + "\n" + m
			continue
		}
		ticks = append(ticks, plot.Tick{Value: b, Label: label})
		xlo, xhi = min(xlo, b), max(xhi, b)
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Marker = plot.TickerFunc(logTicks)
	p.X.Min, p.X.Max = xlo/1.5, xhi*1.5
	kernels := make([]string, 0, len(byKernel))
	for k := range byKernel {
		kernels = append(kernels, k)
	}
	sort.Slice(kernels, func(i, j int) bool { return kernelOrder(kernels[i]) < kernelOrder(kernels[j]) })
	leg := newLegend()
	for i, k := range kernels {
		var xys plotter.XYs
		for _, m := range names {
			if a := byKernel[k][m]; a != nil && a.sec > 0 {
				xys = append(xys, plotter.XY{X: billions[m], Y: a.flops / a.sec / 1e9})
			}
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return false, fmt.Errorf("throughput chart: %w", err)
		}
		l.Color = seriesColor(i)
		l.Width = vg.Points(1.5)
		if i >= 7 {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		s.GlyphStyle = draw.GlyphStyle{Color: seriesColor(i), Shape: seriesShape(i), Radius: vg.Points(3.5)}
		p.Add(l, s)
		leg.Add(k, l, s)
	}
	if err := savePNG(p, leg, 9*vg.Inch, 6.5*vg.Inch, path); err != nil {
		return false, fmt.Errorf("throughput chart: %w", err)
	}
	return true, nil
}
