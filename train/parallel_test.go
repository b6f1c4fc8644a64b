package train

import (
	"context"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// runRanks trains cfg as a job of n ranks, each a goroutine with its own CPU backend, summing
// over dist.Local. It returns rank 0's result.
func runRanks(t *testing.T, cfg Config, n int) Result {
	comms := dist.Local(n)
	res := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := NewParallel(cfg, cpu.New(), comms[r])
			if err != nil {
				errs[r] = err
				return
			}
			defer tr.Close()
			res[r], errs[r] = tr.Run(context.Background(), nil)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	return res[0]
}

// adapterValues loads the adapter saved in dir.
func adapterValues(t *testing.T, dir string, mc *model.Config) map[string][]float32 {
	a, err := peft.Load(dir, mc, cpu.New())
	require.NoError(t, err)
	defer a.Release()
	out := map[string][]float32{}
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		out[p.Key] = v
	}
	return out
}

func stepLosses(t *testing.T, out string) []float64 {
	steps, _, err := ReadMetrics(filepath.Join(out, "metrics.jsonl"))
	require.NoError(t, err)
	var l []float64
	for _, s := range steps {
		l = append(l, s.Loss)
	}
	return l
}

// TestDataParallelMatchesOneProcess trains the same global batches on one process and as 2 and 3
// ranks (an uneven split of the rows, with and without gradient accumulation): the losses of every
// step and the saved adapter agree to float tolerance, and only rank 0 wrote files.
func TestDataParallelMatchesOneProcess(t *testing.T) {
	for _, c := range []struct {
		name                string
		ranks, batch, accum int
	}{{"2 ranks", 2, 4, 1}, {"3 ranks uneven, accumulating", 3, 4, 2}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := fixture(t, "lora")
			cfg.Steps, cfg.Batch, cfg.GradAccum, cfg.Seq, cfg.Warmup = 5, c.batch, c.accum, 32, 1
			one := cfg
			one.Out = filepath.Join(t.TempDir(), "one")
			ref := train(t, one, cpu.New())

			many := cfg
			many.Out = filepath.Join(t.TempDir(), "many")
			got := runRanks(t, many, c.ranks)
			require.Equal(t, c.ranks, got.Communication.Ranks)
			require.Greater(t, got.Communication.CommSecondsPerStep, 0.0)
			require.Equal(t, 4*(got.Params+int64(c.accum)), got.Communication.AllReduceBytes)

			lr, lg := stepLosses(t, one.Out), stepLosses(t, many.Out)
			require.Len(t, lg, cfg.Steps, "rank 0 alone logged each step once")
			for i := range lr {
				require.InDelta(t, lr[i], lg[i], 1e-4*math.Abs(lr[i]), "step %d loss", i+1)
			}
			require.InDelta(t, ref.LossEnd, got.LossEnd, 1e-4*ref.LossEnd)
			require.NotEqual(t, lr[0], lr[len(lr)-1], "the adapter trained")

			mc, err := model.LoadConfig(cfg.Model)
			require.NoError(t, err)
			want, have := adapterValues(t, one.Out, mc), adapterValues(t, many.Out, mc)
			require.Equal(t, len(want), len(have))
			for k, w := range want {
				h := have[k]
				require.Len(t, h, len(w), k)
				var maxAbs, maxDiff float64
				for i := range w {
					maxAbs = math.Max(maxAbs, math.Abs(float64(w[i])))
					maxDiff = math.Max(maxDiff, math.Abs(float64(w[i]-h[i])))
				}
				require.Greater(t, maxAbs, 0.0, k)
				// AdamW divides by √v: where a coordinate's gradient is tiny, float32 sums taken in
				// another order (uneven shards) move its update by up to a fraction of lr, so the
				// weights agree less tightly than the losses.
				require.LessOrEqual(t, maxDiff, 1e-3*maxAbs+1e-6, "%s differs by %g", k, maxDiff)
			}
		})
	}
}

// TestDataParallelResumesWithOtherRankCount checkpoints a 2-rank job, resumes it with 3 ranks and
// with 1, and ends where an uninterrupted single process ends.
func TestDataParallelResumesWithOtherRankCount(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Steps, cfg.Batch, cfg.Seq, cfg.Warmup, cfg.SaveEvery = 6, 4, 32, 1, 3
	// The interrupted run is told fewer steps: a constant rate keeps its schedule the full run's.
	cfg.Schedule = string(Constant)
	ref := cfg
	ref.Out = filepath.Join(t.TempDir(), "ref")
	want := train(t, ref, cpu.New())

	for _, resumeRanks := range []int{3, 1} {
		part := cfg
		part.Out = filepath.Join(t.TempDir(), "job")
		part.Steps = 4 // stops after the checkpoint at step 3; the resumed run replays step 4
		runRanks(t, part, 2)
		require.DirExists(t, filepath.Join(part.Out, "checkpoint-3"))
		res := cfg
		res.Out, res.Resume = part.Out, true
		got := runRanks(t, res, resumeRanks)
		require.Equal(t, 3, got.ResumedFrom)
		require.InDelta(t, want.LossEnd, got.LossEnd, 1e-4*want.LossEnd, "resumed with %d ranks", resumeRanks)
	}
}

func TestShardRowsCoverTheBatch(t *testing.T) {
	for rows := 1; rows <= 9; rows++ {
		for size := 1; size <= rows; size++ {
			next := 0
			for r := range size {
				lo, hi := shardRows(rows, r, size)
				require.Equal(t, next, lo)
				require.Greater(t, hi, lo, "every rank gets a row")
				require.LessOrEqual(t, hi-lo, rows/size+1)
				next = hi
			}
			require.Equal(t, rows, next)
		}
	}
	_, err := newDataParallel(dist.Local(3)[0], 2, 1, nil, cpu.New())
	require.ErrorContains(t, err, "fewer rows than the job's 3 ranks")
}

// TestBaseParamsCountsTheLoadedWeights: the full fine-tuning count is the number of f32 weights a
// model loads, for a model with and without tied embeddings.
func TestBaseParamsCountsTheLoadedWeights(t *testing.T) {
	for _, tied := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "model")
		opt := synth.Options{Preset: synth.Presets["tiny"], Seed: 5, Bias: !tied}
		opt.Preset.Tied = tied
		_, err := synth.Write(dir, opt)
		require.NoError(t, err)
		m, err := model.Load(dir, cpu.New(), model.LoadOptions{})
		require.NoError(t, err)
		require.Equal(t, m.Cfg.TieWordEmbeddings, tied)
		require.Equal(t, m.WeightBytes(), 4*BaseParams(m.Cfg), "tied %v", tied)
		m.Release()
	}
}

// TestDataParallelOneTransferEachWay counts what crosses between host and device in a step of a
// 2-rank job accumulating 2 micro-batches, on the CPU and on WebGPU (lavapipe in CI): the
// gradients of every adapter tensor and the losses come back in one read of the fused buffer and
// go back in one write (unpacked on the device), whatever the number of tensors. The rest is the
// batches' uploads (ids, positions, document starts, targets, dropout seed and the rank's loss
// weight: 6 per micro-batch) and the optimizer's own control write and status read. WebGPU's and
// Vulkan's losses are the CPU's; on Vulkan the two ranks' devices build their pipelines at the
// same time in one process.
func TestDataParallelOneTransferEachWay(t *testing.T) {
	cfg := fixture(t, "lora")
	cfg.Steps, cfg.Batch, cfg.GradAccum, cfg.Seq, cfg.Warmup = 3, 4, 2, 32, 1
	var want []float64
	for _, dev := range []string{"cpu", "webgpu", "vulkan"} {
		t.Run(dev, func(t *testing.T) {
			open := map[string]func(testing.TB) engine.Backend{
				"cpu": func(testing.TB) engine.Backend { return cpu.New() }, "webgpu": testdevice.WebGPU, "vulkan": testdevice.Vulkan,
			}[dev]
			backends := []engine.Backend{open(t), open(t)}
			comms := dist.Local(2)
			counts := make([]engine.Counts, 2)
			fused, tensors := make([]int, 2), make([]int, 2)
			losses := make([][]float64, 2)
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for r := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b := engine.NewCounting(backends[r])
					c := cfg
					c.Out = filepath.Join(t.TempDir(), "out")
					tr, err := NewParallel(c, b, comms[r])
					if err != nil {
						errs[r] = err
						return
					}
					defer tr.Close()
					for step := range 3 {
						before := b.Counts()
						m, err := tr.Step() // the first compiles the pack programs
						if err != nil {
							errs[r] = err
							return
						}
						losses[r] = append(losses[r], m.Loss)
						if step == 2 {
							counts[r], fused[r], tensors[r] = b.Counts().Sub(before), len(tr.dp.fused), len(tr.dp.grads)
						}
					}
				}()
			}
			wg.Wait()
			for r := range 2 {
				require.NoError(t, errs[r], "rank %d", r)
				c := counts[r]
				require.Greater(t, tensors[r], 4, "several adapter tensors")
				require.Equal(t, int64(2), c.Reads, "rank %d: the fused buffer and the optimizer's status", r)
				require.Equal(t, int64(4*fused[r]+4*engine.StatusLen), c.ReadBytes, "rank %d", r)
				require.Equal(t, int64(2*6+2), c.Writes, "rank %d: the batches, the fused buffer, the optimizer's control", r)
				require.Equal(t, losses[0], losses[r], "every rank logs the same loss")
			}
			if want == nil {
				want = losses[0]
				require.NotEqual(t, want[0], want[2], "the adapter trained")
				return
			}
			for i := range want {
				require.InDelta(t, want[i], losses[0][i], 1e-3*math.Abs(want[i]), "step %d: %s against the CPU", i+1, dev)
			}
		})
	}
}
