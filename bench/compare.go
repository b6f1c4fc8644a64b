package bench

import (
	"fmt"
	"io"
	"sort"
)

// Ratio compares one kernel's median time in two reports.
type Ratio struct {
	Backend string  `json:"backend"`
	ID      string  `json:"id"`
	A       float64 `json:"a_seconds"`
	B       float64 `json:"b_seconds"`
	// Ratio is B's time over A's: below 1, B is faster.
	Ratio float64 `json:"ratio"`
}

// Comparison is the result of comparing two reports.
type Comparison struct {
	A      string  `json:"a"`
	B      string  `json:"b"`
	Ratios []Ratio `json:"ratios"`
	// Geomean is the geometric mean of the ratios (0 when there are none).
	Geomean float64 `json:"geomean"`
	// OnlyA and OnlyB count kernels measured in one report only.
	OnlyA int `json:"only_a"`
	OnlyB int `json:"only_b"`
}

// Compare matches the kernels of two reports by backend and case ID and returns b/a time ratios.
// Kernels that failed or that reuse another case's measurement are left out.
func Compare(a, b *Report) Comparison {
	c := Comparison{A: a.Date + " " + a.GitCommit, B: b.Date + " " + b.GitCommit}
	type entry struct {
		backend string
		k       KernelResult
	}
	index := func(r *Report) map[string]entry {
		m := map[string]entry{}
		for _, be := range r.Backends {
			for _, k := range be.Kernels {
				if k.Err == "" && k.SameAs == "" && k.Time.Median > 0 {
					m[be.Device.Backend+"\x00"+k.ID] = entry{be.Device.Backend, k}
				}
			}
		}
		return m
	}
	ia, ib := index(a), index(b)
	logSum := 0.0
	for key, ea := range ia {
		eb, ok := ib[key]
		if !ok {
			c.OnlyA++
			continue
		}
		ka, kb := ea.k, eb.k
		r := Ratio{Backend: ea.backend, ID: ka.ID, A: ka.Time.Median, B: kb.Time.Median, Ratio: kb.Time.Median / ka.Time.Median}
		c.Ratios = append(c.Ratios, r)
		logSum += ln(r.Ratio)
	}
	for key := range ib {
		if _, ok := ia[key]; !ok {
			c.OnlyB++
		}
	}
	sort.Slice(c.Ratios, func(i, j int) bool {
		if c.Ratios[i].Backend != c.Ratios[j].Backend {
			return c.Ratios[i].Backend < c.Ratios[j].Backend
		}
		return c.Ratios[i].ID < c.Ratios[j].ID
	})
	if len(c.Ratios) > 0 {
		c.Geomean = exp(logSum / float64(len(c.Ratios)))
	}
	return c
}

// Print writes the comparison as a table.
func (c Comparison) Print(w io.Writer) {
	fmt.Fprintf(w, "a: %s\nb: %s\n", c.A, c.B)
	fmt.Fprintf(w, "%-8s %-70s %12s %12s %8s\n", "backend", "kernel", "a", "b", "b/a")
	for _, r := range c.Ratios {
		fmt.Fprintf(w, "%-8s %-70s %12s %12s %8.3f\n", r.Backend, r.ID, fmtDur(r.A), fmtDur(r.B), r.Ratio)
	}
	fmt.Fprintf(w, "%d kernels compared, geometric mean b/a %.3f; %d only in a, %d only in b\n", len(c.Ratios), c.Geomean, c.OnlyA, c.OnlyB)
}
