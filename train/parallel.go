package train

import (
	"fmt"
	"math"
	"time"

	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
)

// dataParallel is a trainer's part in a job of several ranks. Every rank packs the same global
// batch (the data position is global, so a job resumes with any number of ranks) and trains on its
// own rows of it; the step program stops at the gradients, which are read into one fused vector
// weighted by the rank's share of the global batch's tokens, summed over the ranks in one
// all-reduce, written back, and applied by the same optimizer program on every rank.
type dataParallel struct {
	comm dist.Comm
	// lo, hi are this rank's rows of every global batch.
	lo, hi int
	// fused holds every adapter gradient, in Params order, then the loss: the all-reduce's buffer.
	fused []float32
	offs  []int
	// grads receive the summed gradients for the optimizer.
	grads []*engine.Tensor
	// commSeconds is the time spent in all-reduces so far this run, over commSteps steps.
	commSeconds float64
	commSteps   int
}

// shardRows returns the rows [lo, hi) of a batch of rows that rank of size trains on: the rows
// split as evenly as they go, the first ranks taking one more.
func shardRows(rows, rank, size int) (lo, hi int) {
	per, extra := rows/size, rows%size
	lo = rank*per + min(rank, extra)
	hi = lo + per
	if rank < extra {
		hi++
	}
	return lo, hi
}

// Shard returns rows [lo, hi) of b as a batch of their own, with their token count.
func (b Batch) Shard(lo, hi int) Batch {
	starts := b.Starts
	if starts == nil {
		starts = docStarts(b.Pos, b.Seq)
	}
	i, j := lo*b.Seq, hi*b.Seq
	s := Batch{Rows: hi - lo, Seq: b.Seq, IDs: b.IDs[i:j], Targets: b.Targets[i:j], Pos: b.Pos[i:j], Starts: starts[i:j], Start: b.Start}
	for _, t := range s.Targets {
		if t != IgnoreIndex {
			s.Tokens++
		}
	}
	return s
}

func newDataParallel(comm dist.Comm, rows int, params []Param, b engine.Backend) (*dataParallel, error) {
	d := &dataParallel{comm: comm}
	if rows < comm.Size() {
		return nil, fmt.Errorf("train: batch %d has fewer rows than the job's %d ranks: each rank needs a row of every batch", rows, comm.Size())
	}
	d.lo, d.hi = shardRows(rows, comm.Rank(), comm.Size())
	n := 0
	for _, p := range params {
		d.offs = append(d.offs, n)
		n += p.Tensor.Shape().Numel()
		t, err := engine.NewTensor(b, engine.F32, p.Tensor.Shape())
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("train: %w", err)
		}
		d.grads = append(d.grads, t)
	}
	d.fused = make([]float32, n+1)
	return d, nil
}

// Close frees the gradient tensors.
func (d *dataParallel) Close() {
	for _, t := range d.grads {
		t.Release()
	}
	d.grads = nil
}

// parallelStep takes one optimizer step as one rank of several: the result equals one process's
// step on the global batch (GradAccum micro-batches of Batch rows each). Each micro-batch's mean
// gradient is Σ_ranks tokens_rank·g_rank / tokens, so a rank adds its gradients weighted by its
// share of the micro-batch's tokens (known to every rank: each packs the whole batch); micro-batches
// are then averaged, and the loss is token-weighted, as on one process. A non-finite loss or
// gradient on any rank makes the sum non-finite, and the step is skipped on every rank alike.
func (t *Trainer) parallelStep() (StepMetrics, error) {
	d := t.dp
	clear(d.fused)
	batches := make([]Batch, t.Cfg.GradAccum)
	seeds := make([]int32, len(batches))
	tokens, counted := 0, 0
	for i := range batches {
		batches[i] = t.batcher.Next()
		seeds[i] = int32(t.state.RNG.Uint64())
		tokens += batches[i].Tokens
		if batches[i].Tokens > 0 {
			counted++
		}
	}
	last := len(d.fused) - 1
	for i, b := range batches {
		if b.Tokens == 0 {
			continue
		}
		s := b.Shard(d.lo, d.hi)
		if s.Tokens == 0 {
			continue
		}
		loss, err := t.step.Run(s, seeds[i])
		if err != nil {
			return StepMetrics{}, err
		}
		w := float32(s.Tokens) / float32(b.Tokens) / float32(counted)
		for j, node := range t.step.Grads {
			g, err := t.step.Program.Float32(node)
			if err != nil {
				return StepMetrics{}, err
			}
			dst := d.fused[d.offs[j] : d.offs[j]+len(g)]
			for k, v := range g {
				dst[k] += w * v
			}
		}
		d.fused[last] += float32(loss * float64(s.Tokens) / float64(tokens))
	}
	start := time.Now()
	if err := d.comm.AllReduceSum(d.fused); err != nil {
		return StepMetrics{}, err
	}
	comm := time.Since(start).Seconds()
	d.commSeconds += comm
	d.commSteps++
	m := t.beginStep(tokens, t.sched.LR(t.opt.StepCount(), t.Cfg.LR))
	m.CommSeconds = comm
	loss := float64(d.fused[last])
	if tokens == 0 || math.IsNaN(loss) || math.IsInf(loss, 0) {
		m.Loss, m.Skipped = math.NaN(), true
		return m, nil
	}
	m.Loss = loss
	args := make([]engine.Arg, len(d.grads))
	for j, g := range d.grads {
		if err := g.SetFloat32(d.fused[d.offs[j] : d.offs[j]+g.Shape().Numel()]); err != nil {
			return m, err
		}
		args[j] = engine.Arg{Buf: g.Buffer(), Meta: g.Meta()}
	}
	info, err := t.opt.Step(args, float32(m.LR), 1)
	if err != nil {
		return m, err
	}
	m.GradNorm, m.Skipped = info.GradNorm, info.Skipped
	return m, nil
}

// checkSameStep fails unless every rank starts at the same step (they resumed from the same
// checkpoint): one all-reduce of the step and its square.
func checkSameStep(c dist.Comm, step int) error {
	v := []float32{float32(step), float32(step) * float32(step), 1}
	if err := c.AllReduceSum(v); err != nil {
		return err
	}
	n := float32(c.Size())
	if v[2] != n || v[0] != n*float32(step) || v[1] != n*float32(step)*float32(step) {
		return fmt.Errorf("train: the ranks start at different steps (this rank, %d of %d, at %d): they did not resume from the same checkpoint", c.Rank(), c.Size(), step)
	}
	return nil
}

// Communication is what data parallelism sends per optimizer step.
type Communication struct {
	// Ranks is the job's number of processes.
	Ranks int `json:"ranks"`
	// AllReduceBytes is the size of the buffer all-reduced each step: the adapter's gradients in
	// f32 and the loss. A ring all-reduce sends 2(Ranks-1)/Ranks times this from every rank.
	AllReduceBytes int64 `json:"allreduce_bytes_per_step"`
	// FullFineTuneBytes is what the same all-reduce would be for every weight of the base model
	// (full fine-tuning, f32 gradients).
	FullFineTuneBytes int64 `json:"full_finetune_bytes_per_step"`
	// Saving is FullFineTuneBytes / AllReduceBytes.
	Saving float64 `json:"allreduce_saving"`
	// CommSecondsPerStep is the mean time a step spent in its all-reduce (0 with one rank).
	CommSecondsPerStep float64 `json:"comm_s_per_step"`
}

// BaseParams counts the weights of a Llama-shaped model: embeddings, each layer's attention and
// MLP projections (with biases where the config has them) and norms, the final norm and the
// output head unless it is tied to the embeddings.
func BaseParams(c *model.Config) int64 {
	h, inter, v := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	hd := int64(c.HeadDim)
	if hd == 0 && c.NumHeads > 0 {
		hd = h / int64(c.NumHeads)
	}
	kvHeads := int64(c.NumKVHeads)
	if kvHeads == 0 {
		kvHeads = int64(c.NumHeads)
	}
	q, kv := int64(c.NumHeads)*hd, kvHeads*hd
	layer := h*q + 2*h*kv + q*h + 3*h*inter + 2*h
	if c.AttentionBias {
		layer += q + 2*kv + h
	}
	if c.MLPBias {
		layer += 2*inter + h
	}
	n := v*h + int64(c.NumLayers)*layer + h
	if !c.TieWordEmbeddings {
		n += v * h
	}
	return n
}

// communication reports this run's data-parallel traffic.
func (t *Trainer) communication() Communication {
	c := Communication{Ranks: 1, AllReduceBytes: 4 * (t.Adapter.NumParams() + 1), FullFineTuneBytes: 4 * BaseParams(t.Model.Cfg)}
	c.Saving = float64(c.FullFineTuneBytes) / float64(c.AllReduceBytes)
	if t.dp != nil {
		c.Ranks = t.dp.comm.Size()
		if t.dp.commSteps > 0 {
			c.CommSecondsPerStep = t.dp.commSeconds / float64(t.dp.commSteps)
		}
	}
	return c
}
