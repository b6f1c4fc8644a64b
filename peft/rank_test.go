package peft

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// SelectRanks against a float64 reference: at energy 1 the adapter computes the same ΔW (same
// logits); at a lower energy each module keeps the smallest rank holding that share of Σσ² (σ from
// gonum's SVD of the dense ΔW), and its ΔW is the best approximation of that rank (the Frobenius
// error is the energy of the dropped singular values).
func TestSelectRanks(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	c := loraConfig("q_proj", "v_proj", "down_proj")
	c.R, c.LoraAlpha, c.UseRSLoRA = 6, 10, true
	c.AlphaPattern = map[string]any{"v_proj": 3.0}
	a, err := New(c, m.Cfg, m.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 6)
	// Make the spectra uneven: scale B's columns by decaying factors.
	for _, md := range a.modules {
		tb := a.tensors[md.keys(TypeLoRA)[1]]
		v, err := tb.Float32()
		require.NoError(t, err)
		for o := 0; o < md.Out; o++ {
			for k := 0; k < md.R; k++ {
				v[o*md.R+k] *= float32(math.Pow(0.4, float64(k)))
			}
		}
		require.NoError(t, tb.SetFloat32(v))
	}
	dir := filepath.Join(t.TempDir(), "a")
	require.NoError(t, a.Save(dir))
	want := logits(t, m, a, nil)

	full := filepath.Join(t.TempDir(), "full")
	rep, err := SelectRanks(dir, 1, full)
	require.NoError(t, err)
	b, err := Load(full, m.Cfg, m.Backend)
	require.NoError(t, err)
	requireClose(t, want, logits(t, m, b, nil), 1e-4, "energy 1")
	b.Release()

	cut := filepath.Join(t.TempDir(), "cut")
	rep, err = SelectRanks(dir, 0.9, cut)
	require.NoError(t, err)
	require.Less(t, rep.ParamsAfter, rep.ParamsBefore)
	b, err = Load(cut, m.Cfg, m.Backend)
	require.NoError(t, err)
	defer b.Release()
	byName := map[string]RankedModule{}
	for _, rm := range rep.Modules {
		byName[rm.Module] = rm
	}
	require.Len(t, byName, len(a.modules))
	for _, md := range a.modules {
		keys := md.keys(TypeLoRA)
		A, B := f64s(tensor(t, a, keys[0])), f64s(tensor(t, a, keys[1]))
		dw := mat.NewDense(md.Out, md.In, nil)
		for o := 0; o < md.Out; o++ {
			for j := 0; j < md.In; j++ {
				var d float64
				for k := 0; k < md.R; k++ {
					d += B[o*md.R+k] * A[k*md.In+j]
				}
				dw.Set(o, j, float64(md.Scale)*d)
			}
		}
		var svd mat.SVD
		require.True(t, svd.Factorize(dw, mat.SVDNone))
		S := svd.Values(nil)
		var total, acc float64
		for _, x := range S {
			total += x * x
		}
		kept := 0
		for k, x := range S {
			acc += x * x
			if acc >= 0.9*total {
				kept = k + 1
				break
			}
		}
		rm := byName[md.Name]
		require.Equal(t, kept, rm.Kept, md.Name)
		for k := 0; k < md.R; k++ {
			require.InDelta(t, S[k], rm.Sigma[k], 1e-6*S[0], "%s σ%d", md.Name, k)
		}
		nm := b.byName[md.Name]
		require.Equal(t, kept, nm.R)
		nA, nB := f64s(tensor(t, b, keys[0])), f64s(tensor(t, b, keys[1]))
		var errF, dropped float64
		for o := 0; o < md.Out; o++ {
			for j := 0; j < md.In; j++ {
				var d float64
				for k := 0; k < kept; k++ {
					d += nB[o*kept+k] * nA[k*md.In+j]
				}
				e := float64(nm.Scale)*d - dw.At(o, j)
				errF += e * e
			}
		}
		for _, x := range S[kept:] {
			dropped += x * x
		}
		require.InDelta(t, dropped, errF, 1e-4*total, "%s: the error is the dropped energy", md.Name)
	}
}
