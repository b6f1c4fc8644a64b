package peft

import (
	"math"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// moduleDelta is s·B·A of a module in float64.
func moduleDelta(t *testing.T, a *Adapter, md *Module) *mat.Dense {
	t.Helper()
	keys := md.keys(TypeLoRA)
	A, err := a.tensors[keys[0]].Float32()
	require.NoError(t, err)
	B, err := a.tensors[keys[1]].Float32()
	require.NoError(t, err)
	d := mat.NewDense(md.Out, md.In, nil)
	for o := range md.Out {
		for i := range md.In {
			s := 0.0
			for k := range md.R {
				s += float64(B[o*md.R+k]) * float64(A[k*md.In+i])
			}
			d.Set(o, i, float64(md.Scale)*s)
		}
	}
	return d
}

// PruneToBudget against a float64 reference: gonum's SVD of each dense ΔW, the budget largest
// singular values of the whole adapter kept (at least one a module), and each module's ΔW after
// pruning equal to the sum of its kept σ·u·vᵀ; the kept ranks sum to the budget.
func TestPruneToBudgetKeepsTheStrongestDirections(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	c := loraConfig("q_proj", "v_proj")
	c.R, c.LoraAlpha = 6, 12
	a, err := New(c, m.Cfg, m.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 8)
	type sv struct {
		mod   int
		sigma float64
	}
	var all []sv
	svds := make([]mat.SVD, len(a.modules))
	for mi, md := range a.modules {
		require.True(t, svds[mi].Factorize(moduleDelta(t, a, md), mat.SVDThin))
		for k, s := range svds[mi].Values(nil)[:md.R] {
			if k > 0 { // each module's first is kept whatever its size
				all = append(all, sv{mi, s})
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].sigma > all[j].sigma })
	budget := 9
	want := make([]int, len(a.modules))
	for mi := range want {
		want[mi] = 1
	}
	for _, x := range all[:budget-len(a.modules)] {
		want[x.mod]++
	}
	kept, err := a.PruneToBudget(budget)
	require.NoError(t, err)
	sum := 0
	for mi, md := range a.modules {
		require.Equal(t, want[mi], kept[md.Name], md.Name)
		sum += kept[md.Name]
		var u, v mat.Dense
		svds[mi].UTo(&u)
		svds[mi].VTo(&v)
		sig := svds[mi].Values(nil)
		ref := mat.NewDense(md.Out, md.In, nil)
		for k := range want[mi] {
			for o := range md.Out {
				for i := range md.In {
					ref.Set(o, i, ref.At(o, i)+sig[k]*u.At(o, k)*v.At(i, k))
				}
			}
		}
		got := moduleDelta(t, a, md)
		var diff mat.Dense
		diff.Sub(got, ref)
		require.Less(t, mat.Norm(&diff, 2), 1e-5*mat.Norm(ref, 2)+1e-7, "%s: ΔW after pruning is its kept directions", md.Name)
		require.Greater(t, mat.Norm(ref, 2), 0.0)
	}
	require.Equal(t, budget, sum)
	// Pruning again at the same budget changes nothing.
	before := moduleDelta(t, a, a.modules[0])
	_, err = a.PruneToBudget(budget)
	require.NoError(t, err)
	var diff mat.Dense
	diff.Sub(moduleDelta(t, a, a.modules[0]), before)
	require.Less(t, mat.Norm(&diff, 2), 1e-5*math.Max(mat.Norm(before, 2), 1e-30))
	_, err = a.PruneToBudget(1)
	require.ErrorContains(t, err, "below the")
}
