// Package bench measures lathe's kernels and end-to-end paths on every backend it was built with,
// places each kernel on the device's measured roofline, compares it with a PyTorch reference run
// in the same process tree, and writes the figures as JSON, Markdown and charts.
//
// Timing is by wall clock around Program.Run and a 4-byte read of one output (which waits for the
// submission): the wgpu binding lathe uses exposes no timestamp period, so GPU timestamps cannot
// be converted to seconds. On GPUs each measured program repeats the kernel several times in one
// submission so that the submit-and-wait overhead is spread over the repeats.
package bench

import (
	"fmt"
	"math"
	"sort"
)

// Stats summarises repeated timings, in seconds.
type Stats struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Q1 and Q3 are the quartiles (linear interpolation between order statistics, as numpy's
	// default); Q3−Q1 is the IQR.
	Q1 float64 `json:"q1"`
	Q3 float64 `json:"q3"`
}

// Summarize computes the median, quartiles and extremes of samples; it fails on an empty or
// non-finite sample.
func Summarize(samples []float64) (Stats, error) {
	if len(samples) == 0 {
		return Stats{}, fmt.Errorf("summarize: no samples")
	}
	s := append([]float64(nil), samples...)
	for _, x := range s {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return Stats{}, fmt.Errorf("summarize: sample %v is not finite", x)
		}
	}
	sort.Float64s(s)
	return Stats{N: len(s), Median: quantile(s, 0.5), Min: s[0], Max: s[len(s)-1],
		Q1: quantile(s, 0.25), Q3: quantile(s, 0.75)}, nil
}

// IQR is the interquartile range Q3−Q1.
func (s Stats) IQR() float64 { return s.Q3 - s.Q1 }

// quantile of sorted s at p in [0, 1], interpolating linearly between order statistics.
func quantile(s []float64, p float64) float64 {
	pos := p * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func ln(x float64) float64  { return math.Log(x) }
func exp(x float64) float64 { return math.Exp(x) }
