package train

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/peft"
)

func TestBudgetSchedule(t *testing.T) {
	at := budgetSchedule(100, 64, 16)
	require.Equal(t, 16, at[80], "the final budget from steps-tFinal on")
	prev := 64
	for s := 0; s <= 100; s++ {
		if b, ok := at[s]; ok {
			require.Greater(t, s, 10, "no pruning in the first tenth")
			require.LessOrEqual(t, b, prev)
			require.GreaterOrEqual(t, b, 16)
			prev = b
		}
	}
	require.GreaterOrEqual(t, len(at), 8)
	require.Equal(t, map[int]int{1: 4}, budgetSchedule(1, 8, 4))
}

// --rank-budget: the saved adapter's ranks (PEFT's rank_pattern) sum to the budget, its ΔW is the
// trained adapter's (the kept directions), and the loss still falls.
func TestRankBudgetSavesRankPattern(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Targets, cfg.Rank, cfg.Alpha, cfg.RankBudget, cfg.Steps = []string{"q_proj", "v_proj"}, 8, 16, 12, 40
	tr, err := New(cfg, cpu.New())
	require.NoError(t, err)
	defer tr.Close()
	res, err := tr.Run(t.Context(), nil)
	require.NoError(t, err)
	require.Less(t, res.LossEnd, res.LossStart)
	sum := 0
	for _, r := range res.Ranks {
		sum += r
	}
	require.Equal(t, 12, sum)
	pc, err := peft.LoadConfig(cfg.Out)
	require.NoError(t, err)
	require.Len(t, pc.RankPattern, 4)
	total := 0
	for name, r := range pc.RankPattern {
		require.Equal(t, float64(res.Ranks[name]), r, name)
		total += int(r.(float64))
	}
	require.LessOrEqual(t, total, cfg.RankBudget)
	saved, err := peft.Load(cfg.Out, tr.Model.Cfg, tr.Backend)
	require.NoError(t, err)
	defer saved.Release()
	trained := map[string]peft.Module{}
	for _, md := range tr.Adapter.Modules() {
		trained[md.Name] = md
	}
	for _, md := range saved.Modules() {
		tm := trained[md.Name]
		require.Less(t, md.R, tm.R)
		got, want := dense(t, saved, md), dense(t, tr.Adapter, tm)
		var num, den float64
		for i := range want {
			num += (got[i] - want[i]) * (got[i] - want[i])
			den += want[i] * want[i]
		}
		require.Greater(t, den, 0.0)
		require.Less(t, math.Sqrt(num/den), 1e-5, "%s: the saved ΔW is the trained one", md.Name)
	}
	bad := fixture(t, "ia3")
	bad.RankBudget = 4
	require.ErrorContains(t, bad.Validate(), "rank_budget")
}

// dense is s·B·A of a module.
func dense(t *testing.T, a *peft.Adapter, md peft.Module) []float64 {
	t.Helper()
	ta, _ := a.Tensor("base_model.model." + md.Name + ".lora_A.weight")
	tb, _ := a.Tensor("base_model.model." + md.Name + ".lora_B.weight")
	A, err := ta.Float32()
	require.NoError(t, err)
	B, err := tb.Float32()
	require.NoError(t, err)
	d := make([]float64, md.Out*md.In)
	for o := range md.Out {
		for k := range md.R {
			for i := range md.In {
				d[o*md.In+i] += float64(md.Scale) * float64(B[o*md.R+k]) * float64(A[k*md.In+i])
			}
		}
	}
	return d
}
