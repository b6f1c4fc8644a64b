package train

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func sampleState(step int) (TrainerState, OptimizerState) {
	st := TrainerState{
		Step: step, Data: DataPosition{Epoch: 1, Index: 3, Offset: 17}, RNG: RNG{Seed: 9, State: 1<<63 + 12345},
		Tokens: 4096, Elapsed: 12.5,
		LossHistory: []LossPoint{{1, 2.5}, {2, math.NaN()}, {3, 2.25}},
		EvalHistory: []LossPoint{{2, 2.4}},
		Config:      json.RawMessage(`{"lr":0.0002,"rank":8}`),
	}
	opt := OptimizerState{Step: step, Params: []ParamState{
		{Name: "base_model.model.layers.0.self_attn.q_proj.lora_A.weight", Shape: []int{2, 3},
			M: []float32{1, 2, 3, 4, 5, 6}, V: []float32{.1, .2, .3, .4, .5, float32(step)}},
		{Name: "b", Shape: []int{1}, M: []float32{-1}, V: []float32{7}},
	}}
	return st, opt
}

func writeAdapter(dir string) error {
	return os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), []byte("adapter"), 0o644)
}

func TestCheckpointRoundTrip(t *testing.T) {
	root := t.TempDir()
	st, opt := sampleState(3)
	dir, err := SaveCheckpoint(root, st, opt, writeAdapter, 0)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "checkpoint-3"), dir)
	require.FileExists(t, filepath.Join(dir, "adapter_model.safetensors"))

	ck, err := LoadCheckpoint(dir)
	require.NoError(t, err)
	require.Equal(t, dir, ck.Dir)
	require.Equal(t, st.Step, ck.State.Step)
	require.Equal(t, st.Data, ck.State.Data)
	require.Equal(t, st.RNG, ck.State.RNG, "the RNG state survives exactly (above 2^53 too)")
	require.Equal(t, st.Tokens, ck.State.Tokens)
	require.Equal(t, st.Elapsed, ck.State.Elapsed)
	require.JSONEq(t, string(st.Config), string(ck.State.Config))
	require.Len(t, ck.State.LossHistory, 3)
	require.True(t, math.IsNaN(ck.State.LossHistory[1].Loss), "a NaN loss comes back as NaN")
	require.Equal(t, 2.25, ck.State.LossHistory[2].Loss)
	require.Equal(t, st.EvalHistory, ck.State.EvalHistory)

	require.Equal(t, opt.Step, ck.Optimizer.Step)
	want := map[string]ParamState{}
	for _, p := range opt.Params {
		want[p.Name] = p
	}
	require.Len(t, ck.Optimizer.Params, 2)
	for _, p := range ck.Optimizer.Params {
		require.Equal(t, want[p.Name], p)
	}

	// Saving the same step again replaces it.
	st.Tokens = 9999
	_, err = SaveCheckpoint(root, st, opt, writeAdapter, 0)
	require.NoError(t, err)
	ck, err = LoadCheckpoint(dir)
	require.NoError(t, err)
	require.Equal(t, int64(9999), ck.State.Tokens)
	assertNoTemp(t, root)
}

func assertNoTemp(t *testing.T, root string) {
	t.Helper()
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	for _, e := range ents {
		require.False(t, strings.HasPrefix(e.Name(), "."), "leftover %s", e.Name())
	}
}

func TestCheckpointKeepAndLatest(t *testing.T) {
	root := t.TempDir()
	_, err := LatestCheckpoint(root)
	require.ErrorIs(t, err, ErrNoCheckpoint)
	for _, step := range []int{5, 10, 15, 20} {
		st, opt := sampleState(step)
		_, err := SaveCheckpoint(root, st, opt, writeAdapter, 2)
		require.NoError(t, err)
	}
	cks, err := ListCheckpoints(root)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(root, "checkpoint-15"), filepath.Join(root, "checkpoint-20")}, cks)
	latest, err := LatestCheckpoint(root)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "checkpoint-20"), latest)
}

func TestCheckpointFailedWriteKeepsPrevious(t *testing.T) {
	root := t.TempDir()
	st, opt := sampleState(1)
	prev, err := SaveCheckpoint(root, st, opt, writeAdapter, 1)
	require.NoError(t, err)

	// The adapter writer fails half way: nothing of step 2 appears, step 1 is untouched and kept.
	st2, opt2 := sampleState(2)
	_, err = SaveCheckpoint(root, st2, opt2, func(dir string) error {
		require.NoError(t, writeAdapter(dir))
		return errors.New("disk full")
	}, 1)
	require.ErrorContains(t, err, "disk full")
	require.NoDirExists(t, filepath.Join(root, "checkpoint-2"))
	assertNoTemp(t, root)
	ck, err := LoadCheckpoint(prev)
	require.NoError(t, err)
	require.Equal(t, 1, ck.State.Step)
	require.Equal(t, opt.Params[0].V, ck.Optimizer.Params[1].V) // sorted by name: "b" < "base_model..."

	// Bad optimizer state fails the same way.
	opt2.Params[0].M = opt2.Params[0].M[:2]
	_, err = SaveCheckpoint(root, st2, opt2, writeAdapter, 1)
	require.Error(t, err)
	require.NoDirExists(t, filepath.Join(root, "checkpoint-2"))
	latest, err := LatestCheckpoint(root)
	require.NoError(t, err)
	require.Equal(t, prev, latest)

	// A crashed save's temporary folder is cleaned up by the next save.
	require.NoError(t, os.Mkdir(filepath.Join(root, ".tmp-checkpoint-7-123"), 0o755))
	st3, opt3 := sampleState(3)
	_, err = SaveCheckpoint(root, st3, opt3, nil, 1)
	require.NoError(t, err)
	assertNoTemp(t, root)
	cks, err := ListCheckpoints(root)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(root, "checkpoint-3")}, cks)
}

func TestLoadCheckpointErrors(t *testing.T) {
	_, err := LoadCheckpoint(t.TempDir())
	require.ErrorContains(t, err, TrainerStateFile)
	root := t.TempDir()
	st, opt := sampleState(4)
	dir, err := SaveCheckpoint(root, st, opt, nil, 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, TrainerStateFile), []byte("{"), 0o644))
	_, err = LoadCheckpoint(dir)
	require.ErrorContains(t, err, TrainerStateFile)
	require.NoError(t, os.Remove(filepath.Join(dir, OptimizerFile)))
	_, err = LoadCheckpoint(dir)
	require.Error(t, err)
}
