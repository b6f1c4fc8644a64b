package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// DefaultEvalSeq is the most tokens a row of EvalDataset holds by default.
const DefaultEvalSeq = 512

// EvalDataset is the mean next-token loss of m, with adapter a (nil: none), on the JSONL dataset
// at path (any format LoadDataset reads), one row of seq tokens at a time (0: the model's
// context, at most DefaultEvalSeq), and the number of tokens scored.
func EvalDataset(m *model.Model, a *peft.Adapter, path string, seq int) (loss float64, tokens int64, err error) {
	if seq == 0 {
		seq = DefaultEvalSeq
		if limit := m.Cfg.MaxPositionEmbeddings; limit > 0 && seq > limit {
			seq = limit
		}
	}
	if err := CheckSeq(seq, m.Cfg); err != nil {
		return 0, 0, fmt.Errorf("eval: %w", err)
	}
	examples, err := LoadDataset(path, m.Dir, m.Cfg.VocabSize)
	if err != nil {
		return 0, 0, err
	}
	g, err := NewStepGraph(m, a, 1, seq, false, false)
	if err != nil {
		return 0, 0, err
	}
	defer g.Close()
	return Evaluate(g, examples, 1, seq)
}
