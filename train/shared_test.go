package train

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
)

// A trainer on a model already loaded leaves it loaded; a cancelled run checkpoints the steps
// taken since its last checkpoint.
func TestNewWithModelAndCancel(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Steps, cfg.SaveEvery, cfg.KeepCkpts, cfg.Batch = 10, 2, 5, 2
	m, err := model.Load(cfg.Model, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()

	q := cfg
	q.Method = "qlora"
	_, err = NewWithModel(q, m)
	require.ErrorContains(t, err, "qlora needs the model loaded in 4 bits")

	cfg.Model = ""
	tr, err := NewWithModel(cfg, m)
	require.NoError(t, err)
	require.Equal(t, m.Dir, tr.Cfg.Model)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var steps []int
	tr.OnStep = func(s StepMetrics) {
		steps = append(steps, s.Step)
		if s.Step == 3 {
			cancel()
		}
	}
	_, err = tr.Run(ctx, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []int{1, 2, 3}, steps)
	tr.Close()
	cks, err := ListCheckpoints(cfg.Out)
	require.NoError(t, err)
	require.Equal(t, []string{CheckpointDir(cfg.Out, 2), CheckpointDir(cfg.Out, 3)}, cks)

	v, err := m.Tensors["model.norm.weight"].Float32()
	require.NoError(t, err, "the model outlives the trainer")
	require.NotEmpty(t, v)
	cfg.Resume = true
	tr, err = NewWithModel(cfg, m)
	require.NoError(t, err)
	defer tr.Close()
	res, err := tr.Run(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, 3, res.ResumedFrom)
	require.Equal(t, 10, res.Steps)
}
