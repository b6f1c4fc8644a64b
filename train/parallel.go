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
// own rows of it; the step program stops at the gradients of the loss weighted by the rank's share
// of the global batch's tokens. On the device they are packed (engine.Accumulate on spans) into one
// fused buffer, summed over micro-batches there, read back in one transfer, summed over the ranks
// in one all-reduce, written back in one transfer, unpacked on the device, and applied by the same
// optimizer program on every rank.
type dataParallel struct {
	comm dist.Comm
	b    engine.Backend
	// lo, hi are this rank's rows of every global batch.
	lo, hi int
	// fused holds every adapter gradient, in Params order (n values), then one weighted loss per
	// micro-batch: the all-reduce's buffer. fusedT is its copy on the device.
	fused  []float32
	fusedT *engine.Tensor
	offs   []int
	n      int
	// grads receive the summed gradients for the optimizer.
	grads []*engine.Tensor
	// pack[k] packs a micro-batch's gradients and loss into fusedT; k = 2·slot + (1 for the
	// first micro-batch of the step, which overwrites the gradients). unpack copies them out.
	pack   map[int]*packProgram
	unpack *engine.Program
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

// packProgram is a compiled pack: its inputs are the step's gradients and weighted loss.
type packProgram struct {
	p     *engine.Program
	grads []*engine.Node
	loss  *engine.Node
}

func newDataParallel(comm dist.Comm, rows, microBatches int, params []Param, b engine.Backend) (*dataParallel, error) {
	d := &dataParallel{comm: comm, b: b, pack: map[int]*packProgram{}}
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
	d.n = n
	d.fused = make([]float32, n+microBatches)
	var err error
	if d.fusedT, err = engine.NewTensor(b, engine.F32, engine.Shape{len(d.fused)}); err != nil {
		d.Close()
		return nil, fmt.Errorf("train: %w", err)
	}
	if d.unpack, err = d.compileUnpack(); err != nil {
		d.Close()
		return nil, fmt.Errorf("train: unpack the gradients: %w", err)
	}
	return d, nil
}

// compileUnpack compiles the copy of each gradient's span of fusedT into its tensor.
func (d *dataParallel) compileUnpack() (*engine.Program, error) {
	g := engine.NewGraph()
	fused := g.Input("fused", engine.F32, d.fusedT.Shape())
	var ins, outs []*engine.Node
	for j, t := range d.grads {
		in := g.Input(fmt.Sprintf("grad.%d", j), engine.F32, t.Shape())
		ins = append(ins, in)
		outs = append(outs, g.Apply1(engine.Accumulate{Overwrite: true, Src: d.offs[j], N: t.Shape().Numel()}, in, fused))
	}
	p, err := engine.Compile(g, d.b, outs, engine.CompileOptions{})
	if err != nil {
		return nil, err
	}
	if err := p.Bind(fused, d.fusedT); err != nil {
		p.Release()
		return nil, err
	}
	for j, in := range ins {
		if err := p.Bind(in, d.grads[j]); err != nil {
			p.Release()
			return nil, err
		}
	}
	return p, nil
}

// packInto adds (or, first, copies) the last run of step's gradients into fusedT's spans and its
// weighted loss into the micro-batch's slot: one submission, nothing read.
func (d *dataParallel) packInto(step *StepGraph, slot int, first bool) error {
	k := 2 * slot
	if first {
		k++
	}
	pp := d.pack[k]
	if pp == nil {
		g := engine.NewGraph()
		fused := g.Input("fused", engine.F32, d.fusedT.Shape())
		pp = &packProgram{}
		acc := fused
		for j, t := range d.grads {
			in := g.Input(fmt.Sprintf("grad.%d", j), engine.F32, t.Shape())
			pp.grads = append(pp.grads, in)
			acc = g.Apply1(engine.Accumulate{Overwrite: first, Dst: d.offs[j], N: t.Shape().Numel()}, acc, in)
		}
		pp.loss = g.Input("loss", engine.F32, engine.Shape{1})
		acc = g.Apply1(engine.Accumulate{Overwrite: true, Dst: d.n + slot, N: 1}, acc, pp.loss)
		var err error
		if pp.p, err = engine.Compile(g, d.b, []*engine.Node{acc}, engine.CompileOptions{}); err != nil {
			return fmt.Errorf("train: pack the gradients: %w", err)
		}
		if err := pp.p.Bind(fused, d.fusedT); err != nil {
			pp.p.Release()
			return fmt.Errorf("train: pack the gradients: %w", err)
		}
		d.pack[k] = pp
	}
	bind := func(in, out *engine.Node) error {
		a, err := step.Program.Arg(out)
		if err != nil {
			return err
		}
		v, err := engine.View(d.b, a.Buf, in.Meta())
		if err != nil {
			return err
		}
		return pp.p.Bind(in, v)
	}
	for j, in := range pp.grads {
		if err := bind(in, step.Grads[j]); err != nil {
			return fmt.Errorf("train: pack the gradients: %w", err)
		}
	}
	if err := bind(pp.loss, step.ScaledLoss); err != nil {
		return fmt.Errorf("train: pack the gradients: %w", err)
	}
	return pp.p.Run()
}

// Close frees the gradient tensors and the programs.
func (d *dataParallel) Close() {
	for _, t := range d.grads {
		t.Release()
	}
	d.grads = nil
	for k, pp := range d.pack {
		pp.p.Release()
		delete(d.pack, k)
	}
	if d.unpack != nil {
		d.unpack.Release()
		d.unpack = nil
	}
	if d.fusedT != nil {
		d.fusedT.Release()
		d.fusedT = nil
	}
}

// parallelStep takes one optimizer step as one rank of several: the result equals one process's
// step on the global batch (GradAccum micro-batches of Batch rows each). Each micro-batch's mean
// gradient is Σ_ranks tokens_rank·g_rank / tokens, so a rank differentiates its loss weighted by
// its share of the micro-batch's tokens (known to every rank: each packs the whole batch) and by
// 1/(micro-batches); the packed sums are the step's mean gradient. The weighted losses keep a slot
// per micro-batch, from which the token-weighted loss is taken, as on one process. A non-finite
// loss or gradient on any rank makes the sum non-finite, and the step is skipped on every rank
// alike. The device's traffic is one read and one write of the fused buffer.
func (t *Trainer) parallelStep() (StepMetrics, error) {
	d := t.dp
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
	ran := make([]bool, len(batches))
	packed := false
	for i, b := range batches {
		if b.Tokens == 0 {
			continue
		}
		s := b.Shard(d.lo, d.hi)
		if s.Tokens == 0 {
			continue
		}
		if err := t.step.SetLossScale(float32(s.Tokens) / float32(b.Tokens) / float32(counted)); err != nil {
			return StepMetrics{}, err
		}
		if err := t.step.Exec(s, seeds[i]); err != nil {
			return StepMetrics{}, err
		}
		if err := d.packInto(t.step, i, !packed); err != nil {
			return StepMetrics{}, err
		}
		ran[i], packed = true, true
	}
	if packed {
		v, err := d.fusedT.Float32()
		if err != nil {
			return StepMetrics{}, err
		}
		copy(d.fused, v)
		for i, r := range ran {
			if !r { // a slot this rank did not write this step
				d.fused[d.n+i] = 0
			}
		}
	} else {
		clear(d.fused)
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
	// Slot i holds micro-batch i's token-mean loss / counted; weigh them by their tokens.
	loss := 0.0
	for i, b := range batches {
		loss += float64(d.fused[d.n+i]) * float64(counted) * float64(b.Tokens) / float64(tokens)
	}
	if tokens == 0 || math.IsNaN(loss) || math.IsInf(loss, 0) {
		m.Loss, m.Skipped = math.NaN(), true
		return m, nil
	}
	m.Loss = loss
	if err := d.fusedT.SetFloat32(d.fused); err != nil {
		return m, err
	}
	if err := d.unpack.Run(); err != nil {
		return m, err
	}
	args := make([]engine.Arg, len(d.grads))
	for j, g := range d.grads {
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
	// f32 and a loss per micro-batch. A ring all-reduce sends 2(Ranks-1)/Ranks times this from every rank.
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
	c := Communication{Ranks: 1, AllReduceBytes: 4 * (t.Adapter.NumParams() + int64(t.Cfg.GradAccum)), FullFineTuneBytes: 4 * BaseParams(t.Model.Cfg)}
	c.Saving = float64(c.FullFineTuneBytes) / float64(c.AllReduceBytes)
	if t.dp != nil {
		c.Ranks = t.dp.comm.Size()
		if t.dp.commSteps > 0 {
			c.CommSecondsPerStep = t.dp.commSeconds / float64(t.dp.commSteps)
		}
	}
	return c
}
