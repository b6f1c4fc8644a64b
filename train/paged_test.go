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

// Every memory mode trains on lavapipe (WebGPU and Vulkan) with the loss falling as the f32 AdamW
// run's does: 8-bit moments, paged state and dynamic loss scaling each stay within 3% of its loss
// at every step (paging and power-of-two loss scales change no arithmetic; 8-bit rounds the
// moments), and the loss falls. bench/curves.sh prints the longer curves.
func TestMemoryModesFollowF32OnGPUs(t *testing.T) {
	for name, open := range map[string]func(testing.TB) engine.Backend{"webgpu": testdevice.WebGPU, "vulkan": testdevice.Vulkan} {
		t.Run(name, func(t *testing.T) {
			gpu := open(t)
			base := fixture(t, "qlora")
			base.Steps, base.EvalFraction = 6, 0
			curve := func(mode string, set func(*Config)) []float64 {
				cfg := base
				cfg.Out = filepath.Join(t.TempDir(), mode)
				set(&cfg)
				res := train(t, cfg, gpu)
				require.Zero(t, res.SkippedSteps, mode)
				return stepLosses(t, cfg.Out)
			}
			f32 := curve("adamw", func(*Config) {})
			require.Len(t, f32, base.Steps)
			require.Less(t, f32[len(f32)-1], 0.8*f32[0], "f32 AdamW's loss falls")
			for mode, set := range map[string]func(*Config){
				"adamw8bit":  func(c *Config) { c.Optim = OptimAdamW8bit },
				"paged":      func(c *Config) { c.PagedOptim = true },
				"loss-scale": func(c *Config) { c.LossScale = 65536 },
			} {
				got := curve(mode, set)
				t.Logf("%s %s: %.4f (f32 AdamW: %.4f)", name, mode, got, f32)
				require.Len(t, got, len(f32), mode)
				for i := range got {
					require.InEpsilon(t, f32[i], got[i], 0.03, "%s: step %d", mode, i+1)
				}
			}
		})
	}
}
