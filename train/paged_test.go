package train

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
)

// On WebGPU (lavapipe), training with the optimizer state paged from host memory gives the
// unpaged run's adapter bit for bit, f32 and 8-bit, with and without gradient accumulation; the
// state leaves the device (two layers' staging buffers stay: the next layer's state is written
// while one layer's update runs) and the whole state moves twice a step.
func TestPagedTrainingEqualsUnpaged(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	for _, c := range []struct {
		optim string
		accum int
	}{{OptimAdamW, 1}, {OptimAdamW8bit, 1}, {OptimAdamW8bit, 2}} {
		t.Run(c.optim+map[bool]string{true: "/accum", false: ""}[c.accum > 1], func(t *testing.T) {
			cfg := fixture(t, "qlora")
			cfg.Steps, cfg.Optim, cfg.GradAccum, cfg.Dropout, cfg.EvalFraction = 3, c.optim, c.accum, 0.1, 0
			var adapters []map[string][]float32
			var mems []Memory
			layers := 0
			for _, paged := range []bool{false, true} {
				cc := cfg
				cc.PagedOptim, cc.Out = paged, filepath.Join(t.TempDir(), "out")
				tr, err := New(cc, gpu)
				require.NoError(t, err)
				res, err := tr.Run(context.Background(), nil)
				require.NoError(t, err)
				require.Zero(t, res.SkippedSteps)
				mems = append(mems, res.Memory)
				adapters = append(adapters, adapterValues(t, cc.Out, tr.Model.Cfg))
				layers = tr.Model.Cfg.NumLayers
				tr.Close()
			}
			t.Logf("unpaged: %s", mems[0])
			t.Logf("paged: %s", mems[1])
			require.Equal(t, adapters[0], adapters[1], "paged and unpaged adapters")
			require.Equal(t, mems[0].Optimizer, mems[1].HostOptimizer+qmapBytes(c.optim), "the whole state is in host memory")
			require.GreaterOrEqual(t, layers, 2)
			require.Equal(t, 2*mems[1].HostOptimizer/int64(layers), mems[1].Optimizer-qmapBytes(c.optim), "the device holds two layers' state")
			require.Equal(t, 2*mems[1].HostOptimizer, mems[1].PagedBytesPerStep, "the state moves down and back up")
		})
	}
}

func qmapBytes(optim string) int64 {
	if optim == OptimAdamW8bit {
		return 512 * 4
	}
	return 0
}

// On the CPU backend --paged-optim is accepted and changes nothing: the state is already in host
// memory.
func TestPagedOnCPUIsUnpaged(t *testing.T) {
	b := cpu.New()
	cfg := DefaultAdamW()
	cfg.Paged = true
	p := []Param{{Name: "x", Tensor: tensor(t, b, engine.Shape{3}, []float32{1, 2, 3})}}
	o, err := NewAdamW(b, p, cfg)
	require.NoError(t, err)
	defer o.Close()
	require.Nil(t, o.pager)
	require.Equal(t, int64(24), o.StateBytes())
}

// A paged run on WebGPU (lavapipe) resumed from a checkpoint reaches the uninterrupted run's
// weights bit for bit, f32 and 8-bit, with and without gradient accumulation: the host state is
// what the checkpoint saves.
func TestPagedResumeIsExact(t *testing.T) {
	gpu := testdevice.WebGPU(t)
	for _, c := range []struct {
		optim string
		accum int
	}{{OptimAdamW, 2}, {OptimAdamW8bit, 1}} {
		t.Run(fmt.Sprintf("%s/accum%d", c.optim, c.accum), func(t *testing.T) {
			cfg := fixture(t, "qlora")
			cfg.Optim, cfg.GradAccum, cfg.PagedOptim = c.optim, c.accum, true
			testResumeOn(t, cfg, gpu)
		})
	}
}
