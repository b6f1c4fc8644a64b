package peft

import (
	"fmt"
	"math"
	"sort"
)

// PruneToBudget keeps the budget strongest directions of a LoRA adapter, AdaLoRA-style. Importance
// is the singular value: every module's ΔW = s·B·A is factored (its SVD, through QR factors of B
// and Aᵀ), the adapter's singular values are ranked together, and the budget largest are kept, at
// least one per module. Each module is rewritten in its singular basis,
// A = diag(√(σ/s))·Vᵀ and B = U·diag(√(σ/s)), with the rows of A and columns of B of dropped
// directions zero: ΔW becomes exactly the sum of its kept σ·u·vᵀ, and a zeroed direction gets no
// gradient (both its factors are zero), so training cannot regrow it. Shapes do not change; Save
// writes zeroed directions, and SelectRanks with energy 1 drops them. It returns each module's
// kept rank.
func (a *Adapter) PruneToBudget(budget int) (map[string]int, error) {
	if a.Config.PeftType != TypeLoRA || a.Config.UseDoRA {
		return nil, fmt.Errorf("rank budget: only a plain LoRA adapter can be pruned (DoRA's norms and IA3 have no rank)")
	}
	if budget < len(a.modules) {
		return nil, fmt.Errorf("rank budget %d is below the %d modules (each keeps at least one direction)", budget, len(a.modules))
	}
	type dir struct {
		mod, k int
		sigma  float64
	}
	type factored struct {
		sigma []float64
		u, v  func(i, k int) float64
	}
	fs := make([]factored, len(a.modules))
	var dirs []dir
	for mi, md := range a.modules {
		keys := md.keys(TypeLoRA)
		A, err := a.tensors[keys[0]].Float32()
		if err != nil {
			return nil, fmt.Errorf("rank budget: read %s: %w", keys[0], err)
		}
		B, err := a.tensors[keys[1]].Float32()
		if err != nil {
			return nil, fmt.Errorf("rank budget: read %s: %w", keys[1], err)
		}
		U, sigma, V, err := lowRankSVD(B, A, md.Out, md.In, md.R, float64(md.Scale))
		if err != nil {
			return nil, fmt.Errorf("rank budget: %s: %w", md.Name, err)
		}
		fs[mi] = factored{sigma: sigma, u: U.At, v: V.At}
		for k, s := range sigma {
			dirs = append(dirs, dir{mi, k, s})
		}
	}
	keep := make([][]bool, len(a.modules))
	for mi := range keep {
		keep[mi] = make([]bool, a.modules[mi].R)
		keep[mi][0] = true // each module's strongest direction
	}
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].sigma > dirs[j].sigma })
	left := budget - len(a.modules)
	for _, d := range dirs {
		if left == 0 {
			break
		}
		if !keep[d.mod][d.k] && d.sigma > 0 {
			keep[d.mod][d.k] = true
			left--
		}
	}
	kept := map[string]int{}
	for mi, md := range a.modules {
		f, s := fs[mi], float64(md.Scale)
		na, nb := make([]float32, md.R*md.In), make([]float32, md.Out*md.R)
		for k := range md.R {
			if !keep[mi][k] {
				continue
			}
			kept[md.Name]++
			c := math.Sqrt(f.sigma[k] / s)
			for i := range md.In {
				na[k*md.In+i] = float32(c * f.v(i, k))
			}
			for o := range md.Out {
				nb[o*md.R+k] = float32(f.u(o, k) * c)
			}
		}
		keys := md.keys(TypeLoRA)
		if err := a.tensors[keys[0]].SetFloat32(na); err != nil {
			return nil, fmt.Errorf("rank budget: %w", err)
		}
		if err := a.tensors[keys[1]].SetFloat32(nb); err != nil {
			return nil, fmt.Errorf("rank budget: %w", err)
		}
	}
	return kept, nil
}
