package train

import (
	"bytes"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMetricsLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	l, err := OpenMetricsLog(path, 0)
	require.NoError(t, err)
	for s := 1; s <= 4; s++ {
		loss := 3 - 0.1*float64(s)
		if s == 3 {
			loss = math.NaN()
		}
		require.NoError(t, l.LogStep(StepMetrics{Step: s, Loss: loss, LR: 1e-4, GradNorm: 0.5, Tokens: 256,
			TokensPerS: 1000, Elapsed: float64(s), Skipped: s == 3}))
		if s%2 == 0 {
			require.NoError(t, l.LogEval(EvalMetrics{Step: s, Loss: 2.5, Perplexity: Perplexity(2.5)}))
		}
	}
	require.NoError(t, l.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 6)
	require.JSONEq(t, `{"step":1,"loss":2.9,"lr":0.0001,"grad_norm":0.5,"tokens":256,"tokens_per_s":1000,"elapsed":1,"skipped":false}`, lines[0])
	require.Contains(t, lines[3], `"loss":null`)
	require.JSONEq(t, `{"step":2,"eval_loss":2.5,"eval_perplexity":12.182493960703473}`, lines[2])

	steps, evals, err := ReadMetrics(path)
	require.NoError(t, err)
	require.Len(t, steps, 4)
	require.Len(t, evals, 2)
	require.True(t, math.IsNaN(steps[2].Loss))
	require.True(t, steps[2].Skipped)
	require.Equal(t, StepMetrics{Step: 4, Loss: 2.6, LR: 1e-4, GradNorm: 0.5, Tokens: 256, TokensPerS: 1000, Elapsed: 4}, steps[3])
	require.Equal(t, EvalMetrics{Step: 4, Loss: 2.5, Perplexity: math.Exp(2.5)}, evals[1])

	// Resuming from the checkpoint at step 2 drops what the interrupted run logged after it
	// (including a torn last line).
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"step":5,"lo`)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	l, err = OpenMetricsLog(path, 2)
	require.NoError(t, err)
	require.NoError(t, l.LogStep(StepMetrics{Step: 3, Loss: 2.7}))
	require.NoError(t, l.Close())
	steps, evals, err = ReadMetrics(path)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3}, []int{steps[0].Step, steps[1].Step, steps[2].Step})
	require.Equal(t, 2.7, steps[2].Loss)
	require.Len(t, evals, 1)

	require.NoError(t, os.WriteFile(path, []byte("{\"step\":1}\nnot json\n{\"step\":2}\n"), 0o644))
	_, _, err = ReadMetrics(path)
	require.ErrorContains(t, err, "metrics.jsonl:2")
}

func TestLossMeter(t *testing.T) {
	var m LossMeter
	require.True(t, math.IsNaN(m.Mean()))
	m.Add(2, 10)
	m.Add(4, 30)
	m.Add(100, 0) // a batch without targets counts for nothing
	require.InDelta(t, 3.5, m.Mean(), 1e-12)
	require.Equal(t, int64(40), m.Tokens())
	require.InDelta(t, math.Exp(3.5), m.Perplexity(), 1e-9)
}

func TestPlotLoss(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loss.png")
	var steps []StepMetrics
	for s := 1; s <= 50; s++ {
		steps = append(steps, StepMetrics{Step: s, Loss: 3 / math.Sqrt(float64(s))})
	}
	steps = append(steps, StepMetrics{Step: 51, Loss: math.NaN()})
	evals := []EvalMetrics{{Step: 25, Loss: 0.9}, {Step: 50, Loss: 0.6}}
	require.NoError(t, PlotLoss(path, steps, evals))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(data))
	require.NoError(t, err)
	b := img.Bounds()
	require.Greater(t, b.Dx(), b.Dy(), "8×5 inches")
	require.Greater(t, b.Dy(), 300)
	// The train line (blue) falls from left to right, and the eval points (orange) are drawn.
	near := func(c color.Color, r0, g0, b0 int) bool {
		r, g, bl, _ := c.RGBA()
		d := func(x uint32, y int) int { return max(int(x>>8)-y, y-int(x>>8)) }
		return d(r, r0)+d(g, g0)+d(bl, b0) < 40
	}
	var xs, ys []int
	orange := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := img.At(x, y)
			if near(c, 0x1f, 0x77, 0xb4) {
				xs, ys = append(xs, x), append(ys, y)
			}
			if near(c, 0xff, 0x7f, 0x0e) {
				orange++
			}
		}
	}
	require.Greater(t, len(xs), 200, "the train line is drawn")
	require.Greater(t, orange, 20, "the eval points are drawn")
	x0, x1 := slices.Min(xs), slices.Max(xs)
	meanY := func(lo, hi int) float64 {
		sum, n := 0, 0
		for i, x := range xs {
			if x >= lo && x <= hi {
				sum, n = sum+ys[i], n+1
			}
		}
		require.Positive(t, n)
		return float64(sum) / float64(n)
	}
	mid := x0 + 2*(x1-x0)/5 // left of the legend (top right)
	require.Less(t, meanY(x0, x0+3), meanY(mid-2, mid+2)-50, "the line starts high (loss 3) and falls (to 0.67 at step 20)")
	require.Error(t, PlotLoss(path, nil, nil))
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, 10, 20, true)
	require.NotNil(t, p)
	p.Update(15, 1.2345, 5000, "1.5 GiB")
	require.NoError(t, p.Finish())
	out := buf.String()
	require.Contains(t, out, "step 15/20")
	require.Contains(t, out, "loss 1.2345")
	require.Contains(t, out, "5000 tok/s")
	require.Contains(t, out, "mem 1.5 GiB")

	// To a file or pipe: a line per tenth of the run, no carriage returns.
	buf.Reset()
	p = NewProgress(&buf, 0, 200, true)
	for s := 1; s <= 200; s++ {
		p.Update(s, 2, 100, "")
	}
	require.NoError(t, p.Finish())
	require.NotContains(t, buf.String(), "\r")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 10)
	require.True(t, strings.HasPrefix(lines[0], "step 20/200 loss 2.0000 100 tok/s eta "), lines[0])
	require.Equal(t, "step 200/200 loss 2.0000 100 tok/s", lines[9])

	// On a terminal: one line redrawn in place, ending at 100% with a newline.
	buf.Reset()
	p = newBar(&buf, 100, 300)
	for s := 101; s <= 300; s++ {
		p.Update(s, 0.5, 10, "")
	}
	require.NoError(t, p.Finish())
	out = buf.String()
	require.Equal(t, 1, strings.Count(out, "\n"))
	require.True(t, strings.HasSuffix(out, "\n"))
	last := out[strings.LastIndex(out, "\r")+1:]
	require.Contains(t, last, "step 300/300 loss 0.5000 10 tok/s 100% |"+strings.Repeat("█", 24)+"| (200/200)")
	require.True(t, strings.HasPrefix(out, "\rstep 100/300   0% |"+strings.Repeat(" ", 24)+"| (0/200)"), out[:60])

	buf.Reset()
	p = NewProgress(&buf, 0, 20, false)
	require.Nil(t, p)
	p.Update(1, 1, 1, "")
	require.NoError(t, p.Finish())
	require.Zero(t, buf.Len())
}
