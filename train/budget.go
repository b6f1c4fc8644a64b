package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/peft"
)

// The rank budget's schedule (AdaLoRA's, with its proportions): no pruning in the first tenth of
// the steps; then the budget falls on a cubic from the adapter's total rank to RankBudget, pruned
// at eight evenly spaced steps; the last fifth trains with the final budget fixed.
func budgetSchedule(steps, total, budget int) map[int]int {
	tInit, tFinal := steps/10, steps/5
	window := steps - tInit - tFinal
	at := map[int]int{}
	if window <= 0 {
		at[max(1, steps-tFinal)] = budget
		return at
	}
	dt := max(1, window/8)
	for s := tInit + dt; s < steps-tFinal; s += dt {
		f := 1 - float64(s-tInit)/float64(window)
		at[s] = budget + int(float64(total-budget)*f*f*f)
	}
	at[steps-tFinal] = budget
	return at
}

// checkBudget refuses a rank budget the method cannot honour.
func (c *Config) checkBudget() error {
	switch {
	case c.RankBudget < 0:
		return fmt.Errorf("train: rank_budget %d is negative", c.RankBudget)
	case c.RankBudget == 0:
		return nil
	case c.Method != "lora" && c.Method != "qlora":
		return fmt.Errorf("train: rank_budget prunes LoRA directions: method %s has none to prune (use lora or qlora)", c.Method)
	case c.Init == peft.InitPiSSA:
		return fmt.Errorf("train: rank_budget and PiSSA do not combine: PiSSA saves a converted rank-2r adapter")
	}
	return nil
}

// prune runs the budget schedule's pruning due after step (see peft.Adapter.PruneToBudget) and
// zeroes the optimizer's moments of the zeroed entries, so those directions stay at zero (their
// gradients are zero too). The kept entries keep their moments although pruning rotated them into
// the singular basis: AdaLoRA keeps its moments across pruning, and zeroing them would make Adam's
// next steps several times larger.
func (t *Trainer) prune(step int) error {
	if t.Cfg.RankBudget == 0 {
		return nil
	}
	if t.budgets == nil {
		total := 0
		for _, md := range t.Adapter.Modules() {
			total += md.R
		}
		if t.Cfg.RankBudget >= total {
			return fmt.Errorf("train: rank_budget %d is not below the adapter's total rank %d", t.Cfg.RankBudget, total)
		}
		t.budgets = budgetSchedule(t.Cfg.Steps, total, t.Cfg.RankBudget)
	}
	b, due := t.budgets[step]
	if !due {
		return nil
	}
	ranks, err := t.Adapter.PruneToBudget(b)
	if err != nil {
		return fmt.Errorf("train: step %d: %w", step, err)
	}
	t.ranks = ranks
	st, err := t.opt.State()
	if err != nil {
		return err
	}
	for i, ps := range st.Params {
		tt, ok := t.Adapter.Tensor(ps.Name)
		if !ok {
			return fmt.Errorf("train: rank budget: no parameter %s", ps.Name)
		}
		v, err := tt.Float32()
		if err != nil {
			return err
		}
		for j, x := range v {
			if x == 0 {
				st.Params[i].M[j], st.Params[i].V[j] = 0, 0
			}
		}
	}
	return t.opt.SetState(st)
}

// saveRanked rewrites the adapter saved in dir without its zeroed directions: per-module ranks in
// PEFT's rank_pattern (and alpha_pattern), ΔW unchanged.
func saveRanked(dir string) (peft.RankReport, error) {
	return peft.SelectRanks(dir, 1, dir)
}
