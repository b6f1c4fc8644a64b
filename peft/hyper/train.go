package hyper

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// Task is one line of a tasks file: a one-line description and either a JSONL dataset (SFT) or a
// PEFT LoRA adapter folder to reconstruct. Relative paths are taken from the tasks file's folder.
type Task struct {
	Description string `json:"description"`
	Data        string `json:"data,omitempty"`
	Adapter     string `json:"adapter,omitempty"`
}

// ReadTasks reads a tasks file (JSONL, one Task a line; blank lines skipped).
func ReadTasks(path string) ([]Task, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	var tasks []Task
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var t Task
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return nil, fmt.Errorf("tasks %s:%d: %w", path, line, err)
		}
		switch {
		case strings.TrimSpace(t.Description) == "" || strings.ContainsAny(t.Description, "\n\r"):
			return nil, fmt.Errorf("tasks %s:%d: a task needs a one-line description", path, line)
		case (t.Data == "") == (t.Adapter == ""):
			return nil, fmt.Errorf("tasks %s:%d: give either data (a JSONL file, to train through the generated adapter) or adapter (a PEFT LoRA to reconstruct)", path, line)
		}
		for _, p := range []*string{&t.Data, &t.Adapter} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(filepath.Dir(path), *p)
			}
		}
		tasks = append(tasks, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tasks %s: %w", path, err)
	}
	if len(tasks) == 0 {
		return nil, fmt.Errorf("tasks %s: no task", path)
	}
	return tasks, nil
}

// TrainConfig is a hypernetwork training run.
type TrainConfig struct {
	Steps, Batch, Seq, Warmup int
	LR, WeightDecay           float64
	MaxGradNorm               float64
	Seed                      uint64
	// EvalFraction of each SFT task's examples is held out (the final eval loss is their mean).
	EvalFraction float64
	// ReconLoss is "ab" (L1 on A and B) or "delta" (L1 on ΔW = s·B·A), for reconstruction.
	ReconLoss string
}

// Result is what a run did.
type Result struct {
	Mode      string   `json:"mode"`
	Steps     int      `json:"steps"`
	LossStart float64  `json:"loss_start"`
	LossEnd   float64  `json:"loss_end"`
	EvalLoss  *float64 `json:"eval_loss,omitempty"`
	Tasks     int      `json:"tasks"`
	Params    int64    `json:"trainable_params"`
	Hyper     string   `json:"hyper"`
}

// EncodeTasks embeds each task's description.
func EncodeTasks(enc Encoder, tasks []Task) ([][]float32, error) {
	embs := make([][]float32, len(tasks))
	for i, t := range tasks {
		e, err := enc.Encode(t.Description)
		if err != nil {
			return nil, err
		}
		embs[i] = e
	}
	return embs, nil
}

// TrainSFT trains net by supervised fine-tuning through the adapters it generates: each step takes
// a batch of one task (the tasks in turn), with that task's embedding, and the loss's gradients
// flow through the generated A and B into the network. It returns the mean loss per step.
func TrainSFT(m *model.Model, net *Net, tasks []Task, embs [][]float32, cfg TrainConfig, progress io.Writer) (Result, error) {
	res := Result{Mode: "sft", Tasks: len(tasks), Params: net.NumParams(), LossStart: math.NaN()}
	if len(tasks) == 0 || len(embs) != len(tasks) {
		return res, fmt.Errorf("hyper: %d tasks and %d embeddings", len(tasks), len(embs))
	}
	batchers := make([]*train.Batcher, len(tasks))
	evalSets := make([][]train.Example, len(tasks))
	for i, t := range tasks {
		if t.Data == "" {
			return res, fmt.Errorf("hyper: task %q has no data: SFT trains on data", t.Description)
		}
		ex, err := train.LoadDataset(t.Data, m.Dir, m.Cfg.VocabSize)
		if err != nil {
			return res, err
		}
		tr, ev, err := train.Split(ex, cfg.EvalFraction, cfg.Seed+uint64(i))
		if err != nil {
			return res, err
		}
		evalSets[i] = ev
		if batchers[i], err = train.NewBatcher(tr, cfg.Batch, cfg.Seq, cfg.Seed+uint64(i)); err != nil {
			return res, fmt.Errorf("hyper: task %q: %w", t.Description, err)
		}
	}
	ocfg := train.DefaultAdamW()
	ocfg.WeightDecay, ocfg.MaxGradNorm = float32(cfg.WeightDecay), float32(cfg.MaxGradNorm)
	opt, err := train.NewAdamW(m.Backend, train.TrainableParams(net), ocfg)
	if err != nil {
		return res, err
	}
	defer opt.Close()
	step, err := train.NewTrainableStep(m, net, cfg.Batch, cfg.Seq, true, false, opt)
	if err != nil {
		return res, err
	}
	defer step.Close()
	sched := train.Schedule{Warmup: cfg.Warmup, Total: cfg.Steps, Kind: train.Cosine}
	rng := train.NewRNG(cfg.Seed)
	for s := 0; s < cfg.Steps; s++ {
		i := s % len(tasks)
		if err := net.SetTask(embs[i]); err != nil {
			return res, err
		}
		loss, _, err := step.Update(batchers[i].Next(), int32(rng.Uint64()), float32(sched.LR(s, cfg.LR)))
		if err != nil {
			return res, fmt.Errorf("hyper: step %d: %w", s+1, err)
		}
		if math.IsNaN(res.LossStart) {
			res.LossStart = loss
		}
		res.LossEnd, res.Steps = loss, s+1
		if progress != nil && (s+1)%max(1, cfg.Steps/20) == 0 {
			fmt.Fprintf(progress, "step %d/%d task %d loss %.4f\n", s+1, cfg.Steps, i, loss)
		}
	}
	var sum float64
	var n int
	for i := range tasks {
		if len(evalSets[i]) == 0 {
			continue
		}
		l, err := EvalTask(m, net, embs[i], evalSets[i], cfg.Batch, cfg.Seq)
		if err != nil {
			return res, err
		}
		sum += l
		n++
	}
	if n > 0 {
		l := sum / float64(n)
		res.EvalLoss = &l
	}
	return res, nil
}

// EvalTask is the mean loss on examples of the model with the adapter net generates for emb,
// computed through the network's graph.
func EvalTask(m *model.Model, net *Net, emb []float32, examples []train.Example, rows, seq int) (float64, error) {
	if err := net.SetTask(emb); err != nil {
		return 0, err
	}
	s, err := train.NewTrainableStep(m, net, rows, seq, false, false, nil)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	l, _, err := train.Evaluate(s, examples, rows, seq)
	return l, err
}

// reconTarget is one generated tensor and what it should equal.
type reconTarget struct {
	node, sign *engine.Node
	want       []float32
}

// TrainRecon trains net to reconstruct given PEFT LoRAs, one per task: the loss is the mean
// absolute difference between the generated and the given A and B (ReconLoss "ab", which needs
// the given adapters at the network's rank and scale) or ΔW = s·B·A ("delta", any rank). The L1
// gradient is exact on every backend: a forward pass gives the differences, whose signs are
// uploaded, and the step differentiates Σ sign ⊙ generated.
func TrainRecon(m *model.Model, net *Net, tasks []Task, embs [][]float32, cfg TrainConfig, progress io.Writer) (Result, error) {
	res := Result{Mode: "recon-" + cfg.ReconLoss, Tasks: len(tasks), Params: net.NumParams(), LossStart: math.NaN()}
	if cfg.ReconLoss != "ab" && cfg.ReconLoss != "delta" {
		return res, fmt.Errorf("hyper: reconstruction loss %q is not ab or delta", cfg.ReconLoss)
	}
	delta := cfg.ReconLoss == "delta"
	want := make([]map[string][]float32, len(tasks)) // by module path + "/A", "/B" or "/dW"
	for i, t := range tasks {
		if t.Adapter == "" {
			return res, fmt.Errorf("hyper: task %q has no adapter: reconstruction needs one", t.Description)
		}
		w, err := targetValues(t.Adapter, net, delta)
		if err != nil {
			return res, err
		}
		want[i] = w
	}
	g := engine.NewGraph()
	A, B := net.Record(g)
	var gen []*engine.Node
	var names []string
	for _, t := range net.targets {
		if delta {
			gen = append(gen, g.Scale(g.MatMul(B[t.Name], A[t.Name], false, false), t.Scale))
			names = append(names, t.Name+"/dW")
		} else {
			gen = append(gen, A[t.Name], B[t.Name])
			names = append(names, t.Name+"/A", t.Name+"/B")
		}
	}
	var total int
	for _, x := range gen {
		total += x.Shape().Numel()
	}
	var loss *engine.Node
	signs := make([]*engine.Node, len(gen))
	for i, x := range gen {
		signs[i] = g.Input(fmt.Sprintf("hyper.recon.sign%d", i), engine.F32, x.Shape())
		term := g.Sum(g.Mul(g.Reshape(x, x.Shape().Numel()), g.Reshape(signs[i], x.Shape().Numel())))
		if loss == nil {
			loss = term
		} else {
			loss = g.Add(loss, term)
		}
	}
	loss = g.Scale(loss, 1/float32(total))
	grads, err := g.Backward(loss)
	if err != nil {
		return res, fmt.Errorf("hyper: %w", err)
	}
	params := net.Params()
	outs := append([]*engine.Node{loss}, gen...)
	for _, p := range params {
		d, ok := grads[p.Node]
		if !ok {
			return res, fmt.Errorf("hyper: parameter %s gets no gradient", p.Key)
		}
		outs = append(outs, d)
	}
	prog, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{})
	if err != nil {
		return res, fmt.Errorf("hyper: %w", err)
	}
	defer prog.Release()
	if err := net.Bind(prog); err != nil {
		return res, err
	}
	signT := make([]*engine.Tensor, len(gen))
	for i, x := range gen {
		if signT[i], err = engine.NewTensor(m.Backend, engine.F32, x.Shape()); err != nil {
			return res, err
		}
		defer signT[i].Release()
		if err := prog.Bind(signs[i], signT[i]); err != nil {
			return res, err
		}
	}
	ocfg := train.DefaultAdamW()
	ocfg.WeightDecay, ocfg.MaxGradNorm = float32(cfg.WeightDecay), float32(cfg.MaxGradNorm)
	opt, err := train.NewAdamW(m.Backend, train.TrainableParams(net), ocfg)
	if err != nil {
		return res, err
	}
	defer opt.Close()
	sched := train.Schedule{Warmup: cfg.Warmup, Total: cfg.Steps, Kind: train.Cosine}
	for s := 0; s < cfg.Steps; s++ {
		i := s % len(tasks)
		if err := net.SetTask(embs[i]); err != nil {
			return res, err
		}
		// The forward pass with zero signs gives the generated tensors; their differences' signs
		// then make the L1 gradient of the second run.
		for _, t := range signT {
			if err := t.SetFloat32(make([]float32, t.Shape().Numel())); err != nil {
				return res, err
			}
		}
		if err := prog.Run(); err != nil {
			return res, err
		}
		var l1 float64
		for k, x := range gen {
			v, err := prog.Float32(x)
			if err != nil {
				return res, err
			}
			w := want[i][names[k]]
			sg := make([]float32, len(v))
			for j := range v {
				d := float64(v[j]) - float64(w[j])
				l1 += math.Abs(d)
				switch {
				case d > 0:
					sg[j] = 1
				case d < 0:
					sg[j] = -1
				}
			}
			if err := signT[k].SetFloat32(sg); err != nil {
				return res, err
			}
		}
		l1 /= float64(total)
		if err := prog.Run(); err != nil {
			return res, err
		}
		args := make([]engine.Arg, len(params))
		for k, d := range outs[1+len(gen):] {
			if args[k], err = prog.Arg(d); err != nil {
				return res, err
			}
		}
		if _, err := opt.Step(args, float32(sched.LR(s, cfg.LR)), 1); err != nil {
			return res, err
		}
		if math.IsNaN(res.LossStart) {
			res.LossStart = l1
		}
		res.LossEnd, res.Steps = l1, s+1
		if progress != nil && (s+1)%max(1, cfg.Steps/20) == 0 {
			fmt.Fprintf(progress, "step %d/%d task %d L1 %.6f\n", s+1, cfg.Steps, i, l1)
		}
	}
	return res, nil
}

// targetValues reads a given LoRA's A and B (or its ΔW) for each module the network generates.
func targetValues(dir string, net *Net, delta bool) (map[string][]float32, error) {
	a, err := peft.Load(dir, net.model, net.backend)
	if err != nil {
		return nil, err
	}
	defer a.Release()
	mods := map[string]peft.Module{}
	for _, md := range a.Modules() {
		mods[md.Name] = md
	}
	out := map[string][]float32{}
	for _, t := range net.targets {
		md, ok := mods[t.Name]
		if !ok {
			return nil, fmt.Errorf("hyper: %s has no LoRA for %s, which the network generates", dir, t.Name)
		}
		if !delta && (md.R != t.R || md.Scale != t.Scale) {
			return nil, fmt.Errorf("hyper: %s's %s has rank %d and scale %g, the network's %d and %g: reconstruct its ΔW (--recon-loss delta) instead", dir, t.Name, md.R, md.Scale, t.R, t.Scale)
		}
		ta, _ := a.Tensor("base_model.model." + t.Name + ".lora_A.weight")
		tb, _ := a.Tensor("base_model.model." + t.Name + ".lora_B.weight")
		av, err := ta.Float32()
		if err != nil {
			return nil, err
		}
		bv, err := tb.Float32()
		if err != nil {
			return nil, err
		}
		if !delta {
			out[t.Name+"/A"], out[t.Name+"/B"] = av, bv
			continue
		}
		dw := make([]float32, md.Out*md.In)
		for o := range md.Out {
			for k := range md.R {
				s := float64(md.Scale) * float64(bv[o*md.R+k])
				for j := range md.In {
					dw[o*md.In+j] += float32(s * float64(av[k*md.In+j]))
				}
			}
		}
		out[t.Name+"/dW"] = dw
	}
	return out, nil
}
