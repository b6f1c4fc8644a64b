package train

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// stepOn runs one training step of a on the examples packed into one row of seq tokens and
// returns the loss, the counted tokens and every gradient.
func stepOn(t *testing.T, m *model.Model, a *peft.Adapter, exs []Example, seq int) (float64, int, [][]float32) {
	t.Helper()
	s, err := NewStepGraph(m, a, 1, seq, true, false)
	require.NoError(t, err)
	defer s.Close()
	bs, err := EvalBatches(exs, 1, seq)
	require.NoError(t, err)
	require.Len(t, bs, 1)
	loss, err := s.Run(bs[0], 0)
	require.NoError(t, err)
	var grads [][]float32
	for _, g := range s.Grads {
		v, err := s.Program.Float32(g)
		require.NoError(t, err)
		grads = append(grads, v)
	}
	return loss, bs[0].Tokens, grads
}

// Training isolates packed documents as eval does: the loss and gradients of one row holding
// three documents are the token-weighted means of each document's step alone.
func TestTrainingStepIsolatesPackedDocuments(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 9})
	require.NoError(t, err)
	var exs []Example
	for k, n := range []int{5, 9, 4} {
		ex := Example{IDs: make([]int32, n), Labels: make([]int32, n)}
		for i := range n {
			ex.IDs[i] = int32((k*37 + i*11 + 3) % 64)
			ex.Labels[i] = ex.IDs[i]
		}
		ex.Labels[0] = IgnoreIndex
		exs = append(exs, ex)
	}
	for _, c := range []struct {
		name string
		b    func(t testing.TB) engine.Backend
		tol  float64
	}{{"cpu", func(testing.TB) engine.Backend { return cpu.New() }, 1e-5}, {"webgpu", testdevice.WebGPU, 1e-4}} {
		t.Run(c.name, func(t *testing.T) {
			b := c.b(t)
			m, err := model.Load(dir, b, model.LoadOptions{})
			require.NoError(t, err)
			defer m.Release()
			pc := peft.LoRAConfig()
			pc.R, pc.LoraDropout = 4, 0
			pc.TargetModules = peft.Modules{Pattern: peft.AllLinear}
			a, err := peft.New(pc, m.Cfg, b, 5)
			require.NoError(t, err)
			defer a.Release()
			packed, n, grads := stepOn(t, m, a, exs, 18)
			var want float64
			wantG := make([][]float64, len(grads))
			total := 0
			for _, ex := range exs {
				l, k, g := stepOn(t, m, a, []Example{ex}, len(ex.IDs))
				want += l * float64(k)
				total += k
				for i := range g {
					if wantG[i] == nil {
						wantG[i] = make([]float64, len(g[i]))
					}
					for j, v := range g[i] {
						wantG[i][j] += float64(v) * float64(k)
					}
				}
			}
			require.Equal(t, total, n)
			require.InDelta(t, want/float64(n), packed, c.tol)
			nonzero := 0
			for i := range grads {
				scale := 1e-6
				for _, v := range wantG[i] {
					scale = max(scale, math.Abs(v/float64(n)))
				}
				for j, v := range grads[i] {
					require.InDelta(t, wantG[i][j]/float64(n), float64(v), c.tol*scale*10, "gradient %d[%d]", i, j)
					if v != 0 {
						nonzero++
					}
				}
			}
			require.Greater(t, nonzero, 100, "the gradients are not zero")
		})
	}
}
