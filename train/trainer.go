package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// Config is one fine-tuning run: the flags of `lathe train`, or its JSON config file.
type Config struct {
	Model string `json:"model"`
	Data  string `json:"data"`
	Out   string `json:"out"`
	// Method is "lora", "qlora" (LoRA on the base quantized to NF4 with double quantization at
	// load), "dora" (DoRA: PEFT's use_dora), "qdora" (DoRA on the NF4 base) or "ia3".
	Method  string   `json:"method"`
	Rank    int      `json:"rank"`
	Alpha   float64  `json:"alpha"`
	Dropout float64  `json:"dropout"`
	Targets []string `json:"targets"` // module names, or ["all-linear"]
	RSLoRA  bool     `json:"rslora"`
	// Init is PEFT's init_lora_weights for LoRA: "" (PEFT's default), "gaussian" or "pissa"
	// (A and B from the base's SVD, the base keeps the residual; saved converted to a rank-2r LoRA
	// of the original base).
	Init string `json:"init_lora_weights"`

	Steps     int `json:"steps"`
	Batch     int `json:"batch"`
	Seq       int `json:"seq"`
	GradAccum int `json:"grad_accum"`

	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Warmup      int     `json:"warmup"`
	Schedule    string  `json:"schedule"` // cosine, linear or constant
	MinLRRatio  float64 `json:"min_lr_ratio"`
	MaxGradNorm float64 `json:"max_grad_norm"`
	// Optim is "adamw" (f32 moments; "" reads as it) or "adamw8bit" (bitsandbytes' blockwise
	// 8-bit moments, a quarter of the memory).
	Optim string `json:"optim,omitempty"`
	// MaxMemory bounds the training step's device memory (Memory.Peak): "4GiB", "512MB", a byte
	// count. The trainer picks gradient checkpointing and the micro-batch (Batch split into
	// micro-batches, GradAccum raised to keep Batch×GradAccum rows a step) to fit, or fails before
	// the first step with the bytes it would need. "" is no bound.
	MaxMemory string `json:"max_memory,omitempty"`
	// PagedOptim keeps the optimizer state in host memory on GPU backends, streamed to the device
	// layer by layer for each update (the step then runs as a gradient program and the update);
	// on the CPU backend, where device memory is host memory, it changes nothing.
	PagedOptim bool `json:"paged_optim,omitempty"`

	Seed         uint64  `json:"seed"`
	EvalFraction float64 `json:"eval_fraction"`
	EvalEvery    int     `json:"eval_every"`
	SaveEvery    int     `json:"save_every"`
	KeepCkpts    int     `json:"keep_checkpoints"`
	Resume       bool    `json:"resume"`
	// Overwrite lets a fresh run start in an Out that holds an earlier run's checkpoints, which
	// it deletes; without it (or Resume) such an Out is refused, so runs never mix.
	Overwrite bool `json:"overwrite"`
	// Recompute turns on gradient checkpointing: less memory for one more forward pass.
	Recompute bool `json:"gradient_checkpointing"`
	Blocksize int  `json:"quant_blocksize"`
	// Precision is the type the step keeps its activations in between the forward and the
	// backward pass: "f32" (or "", the default), "f16" or "bf16" (engine.CompileOptions.Save).
	// Arithmetic, the adapter's master weights and the optimizer stay f32; f16 turns dynamic loss
	// scaling on (from DefaultLossScale unless LossScale is set) and, on a device with shader-f16,
	// the f16-arithmetic matmul (engine.F16Arithmetic). Frozen 16-bit weights stay 16-bit whatever
	// the precision (model.LoadOptions).
	Precision string `json:"precision"`
	// Compute is the precision of the frozen base's products, forward and the backward pass's
	// input gradient through it (model.LoadOptions.Compute): "f32" (or "", the default) exact,
	// "bf16" as bitsandbytes computes with bnb_4bit_compute_dtype=bfloat16, which QLoRA recipes
	// set (on a CPU with AVX512_BF16 the 4-bit base's products run about twice as fast). The
	// adapter's own products stay f32.
	Compute string `json:"compute,omitempty"`
	// LossScale > 0 turns on dynamic loss scaling from that scale (see LossScale); 0 is off (f16
	// activations would default it to DefaultLossScale). LossScaleGrowth is its growth interval
	// (0: DefaultLossScaleGrowth).
	LossScale       float64 `json:"loss_scale"`
	LossScaleGrowth int     `json:"loss_scale_growth"`
	// RankBudget, when set, prunes a LoRA to this many directions in all (AdaLoRA-style, by
	// singular value; budget.go) and saves it with PEFT's rank_pattern.
	RankBudget int `json:"rank_budget,omitempty"`
	// LayerGroups give different ranks and modules to different layers (layers.go).
	LayerGroups []LayerGroup `json:"layers,omitempty"`
}

// DefaultConfig holds the defaults of `lathe train`.
func DefaultConfig() Config {
	return Config{Method: "lora", Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{peft.AllLinear},
		Steps: 100, Batch: 4, Seq: 128, GradAccum: 1, LR: 2e-4, Warmup: 10, Schedule: string(Cosine),
		MaxGradNorm: 1, Seed: 1, EvalFraction: 0.1, KeepCkpts: 2, Blocksize: 64, Optim: OptimAdamW}
}

// SaveDType is the type the training step keeps its activations in between the passes
// (Precision; engine.F32 for f32).
func (c *Config) SaveDType() engine.DType {
	switch c.Precision {
	case "f16":
		return engine.F16
	case "bf16":
		return engine.BF16
	}
	return engine.F32
}

// MaxBatchTokens bounds batch×seq, whatever the model's context: far above what fits a device,
// so a typo is refused before anything is allocated.
const MaxBatchTokens = 1 << 20

// Validate reports the first setting out of range.
func (c *Config) Validate() error {
	switch {
	case c.Model == "" || c.Data == "" || c.Out == "":
		return fmt.Errorf("train: model, data and out are required")
	case c.Method != "lora" && c.Method != "qlora" && c.Method != "dora" && c.Method != "qdora" && c.Method != "ia3":
		return fmt.Errorf("train: method %q is not lora, qlora, dora, qdora or ia3", c.Method)
	case c.Init != "" && c.Init != "gaussian" && c.Init != peft.InitPiSSA:
		return fmt.Errorf("train: init_lora_weights %q is not gaussian or pissa", c.Init)
	case c.Init == peft.InitPiSSA && c.Resume:
		return fmt.Errorf("train: a PiSSA run cannot resume: its checkpoints are converted to rank-2r LoRAs of the original base")
	case c.Steps <= 0 || c.Batch <= 0 || c.Seq <= 1 || c.GradAccum <= 0:
		return fmt.Errorf("train: steps, batch, grad_accum must be positive and seq at least 2")
	case int64(c.Batch)*int64(c.Seq) > MaxBatchTokens:
		return fmt.Errorf("train: batch %d × seq %d is above %d tokens a micro-batch", c.Batch, c.Seq, MaxBatchTokens)
	case !(c.LR > 0):
		return fmt.Errorf("train: lr %v must be positive", c.LR)
	case c.EvalEvery < 0 || c.SaveEvery < 0 || c.Warmup < 0:
		return fmt.Errorf("train: eval_every, save_every and warmup must not be negative")
	case c.Precision == "f16" && c.PagedOptim:
		return fmt.Errorf("train: precision f16 needs loss scaling, which paged optimizer states do not support yet; use bf16 or f32")
	case c.Precision != "" && c.Precision != "f32" && c.Precision != "f16" && c.Precision != "bf16":
		return fmt.Errorf("train: precision %q is not f32, f16 or bf16", c.Precision)
	case c.Compute != "" && c.Compute != "f32" && c.Compute != "bf16":
		return fmt.Errorf("train: compute %q is not f32 or bf16", c.Compute)
	case c.LossScale != 0 && (!(c.LossScale >= 1) || math.IsInf(c.LossScale, 0)) || c.LossScaleGrowth < 0:
		return fmt.Errorf("train: loss_scale %v must be 0 (off) or at least 1, loss_scale_growth not negative", c.LossScale)
	case c.PagedOptim && c.LossScale != 0:
		return fmt.Errorf("train: loss scaling with paged optimizer states is not supported yet")
	case c.Optim != "" && c.Optim != OptimAdamW && c.Optim != OptimAdamW8bit:
		return fmt.Errorf("train: optim %q is not adamw or adamw8bit", c.Optim)
	}
	if c.MaxMemory != "" {
		if _, err := ParseBytes(c.MaxMemory); err != nil {
			return fmt.Errorf("train: max_memory: %w", err)
		}
	}
	return c.checkBudget()
}

// Result is what a run did: the last line `lathe train` prints.
type Result struct {
	Steps       int      `json:"steps"`
	LossStart   float64  `json:"loss_start"`
	LossEnd     float64  `json:"loss_end"`
	EvalLoss    *float64 `json:"eval_loss,omitempty"`
	Perplexity  *float64 `json:"eval_perplexity,omitempty"`
	Adapter     string   `json:"adapter"`
	Method      string   `json:"method"`
	Device      string   `json:"device"`
	TrainTokens int64    `json:"train_tokens"`
	TokensPerS  float64  `json:"tokens_per_s"`
	PeakBytes   int64    `json:"peak_bytes"`
	// Memory is the step's device memory by part, against the floor (ideal buffer reuse).
	Memory       Memory `json:"memory"`
	WeightBytes  int64  `json:"weight_bytes"`
	Params       int64  `json:"trainable_params"`
	SkippedSteps int    `json:"skipped_steps"`
	// LossScale is the dynamic loss scale at the end (loss scaling only).
	LossScale float64 `json:"loss_scale,omitempty"`
	// Warnings say what a resumed run changed or fell back from (also in the metrics log).
	Warnings    []string `json:"warnings,omitempty"`
	ResumedFrom int      `json:"resumed_from,omitempty"`
	Metrics     string   `json:"metrics"`
	LossCurve   string   `json:"loss_curve"`
	// Communication is what a data-parallel step all-reduces, against full fine-tuning.
	Communication Communication `json:"communication"`
	// Ranks is each module's rank after a rank-budgeted run.
	Ranks map[string]int `json:"ranks,omitempty"`
}

// Trainer runs one fine-tuning job on one backend.
type Trainer struct {
	Cfg     Config
	Backend engine.Backend
	Model   *model.Model
	Adapter *peft.Adapter

	step      *StepGraph
	eval      *StepGraph
	opt       *AdamW
	acc       *GradAccumulator
	batcher   *Batcher
	evalSet   []Example
	sched     Schedule
	state     TrainerState
	resumedAt int
	// resume describes what resuming found: changed settings and skipped checkpoints.
	resume *ResumeEvent
	// comm is the job's communicator; dp is set when it has several ranks.
	comm dist.Comm
	dp   *dataParallel
	// sharedModel: the model was given to NewWithModel, so Close leaves it to its owner.
	sharedModel bool
	// f16Math is the backend whose f16 kernels --precision f16 turned on (off again at Close).
	f16Math engine.F16Arithmetic

	// OnStep, if set, is called by Run after each step is logged (for progress reports).
	OnStep func(StepMetrics)

	// budgets is the rank budget's pruning schedule (step → budget); ranks the last pruning's.
	budgets map[int]int
	ranks   map[string]int
}

// New loads the model, the data (through the tokenizer unless it is all pre-tokenized) and the adapter (from the latest checkpoint in
// cfg.Out when cfg.Resume) and compiles the training step on b.
func New(cfg Config, b engine.Backend) (*Trainer, error) {
	return NewParallel(cfg, b, dist.Single{})
}

// NewParallel is New for one rank of a data-parallel job over comm (dist.Open under mpirun):
// every rank holds the base and the adapter, trains on its rows of each global batch of
// cfg.Batch rows, and sums adapter gradients with the others. Rank 0 alone writes files. With a
// communicator of one rank it is New.
func NewParallel(cfg Config, b engine.Backend, comm dist.Comm) (*Trainer, error) {
	return newTrainer(cfg, b, nil, comm)
}

// NewWithModel is New on a model already loaded (its folder is cfg.Model, or m.Dir when that is
// empty): the trainer shares m, whose weights it never changes, and Close leaves it loaded. A
// "qlora" run needs m loaded in 4 bits; a "lora" run on a 4-bit m is QLoRA too.
func NewWithModel(cfg Config, m *model.Model) (*Trainer, error) {
	if cfg.Model == "" {
		cfg.Model = m.Dir
	} else if !sameDir(cfg.Model, m.Dir) {
		return nil, fmt.Errorf("train: model %s is not the loaded model's folder %s", cfg.Model, m.Dir)
	}
	if (cfg.Method == "qlora" || cfg.Method == "qdora") && len(m.Quant) == 0 {
		return nil, fmt.Errorf("train: method %s needs the model loaded in 4 bits (quantize nf4)", cfg.Method)
	}
	return newTrainer(cfg, m.Backend, m, dist.Single{})
}

// sameDir reports whether a and b name the same folder.
func sameDir(a, b string) bool {
	ia, err := os.Stat(a)
	if err != nil {
		return false
	}
	ib, err := os.Stat(b)
	return err == nil && os.SameFile(ia, ib)
}

func newTrainer(cfg Config, b engine.Backend, shared *model.Model, comm dist.Comm) (*Trainer, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Precision == "f16" && cfg.LossScale == 0 {
		cfg.LossScale = DefaultLossScale // f16 gradients underflow without it
	}
	t := &Trainer{Cfg: cfg, Backend: b, Model: shared, sharedModel: shared != nil, comm: comm}
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	if fa, can := b.(engine.F16Arithmetic); can && cfg.Precision == "f16" && b.Caps().ShaderF16 {
		if err := fa.SetF16Arithmetic(true); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		t.f16Math = fa
	}
	cks, err := ListCheckpoints(cfg.Out)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if len(cks) > 0 && !cfg.Resume && comm.Rank() == 0 {
		if !cfg.Overwrite {
			return nil, fmt.Errorf("train: %s holds checkpoints of an earlier run (%s): pass --resume to continue it or --overwrite to start afresh",
				cfg.Out, filepath.Base(cks[len(cks)-1]))
		}
		for _, d := range cks {
			if err := os.RemoveAll(d); err != nil {
				return nil, fmt.Errorf("train: --overwrite: %w", err)
			}
		}
	}
	lo := model.LoadOptions{Compute: cfg.Compute}
	if cfg.Method == "qlora" || cfg.Method == "qdora" {
		lo = model.LoadOptions{Quantize: "nf4", DoubleQuant: true, Blocksize: cfg.Blocksize, Compute: cfg.Compute}
	}
	if shared == nil {
		if t.Model, err = model.Load(cfg.Model, b, lo); err != nil {
			return nil, err
		}
	}
	examples, err := LoadDataset(cfg.Data, cfg.Model, t.Model.Cfg.VocabSize)
	if err != nil {
		return nil, err
	}
	trainSet, evalSet, err := Split(examples, cfg.EvalFraction, cfg.Seed)
	if err != nil {
		return nil, err
	}
	trainable := 0
	for _, ex := range trainSet {
		trainable += ex.Tokens()
	}
	if trainable == 0 {
		return nil, fmt.Errorf("train: %s has no token to train on: every label of the training split is -100", cfg.Data)
	}
	t.evalSet = evalSet
	if t.batcher, err = NewBatcher(trainSet, cfg.Batch, cfg.Seq, cfg.Seed); err != nil {
		return nil, err
	}
	t.state = TrainerState{RNG: NewRNG(cfg.Seed)}
	var ck *Checkpoint
	if cfg.Resume && len(cks) > 0 {
		if ck, t.Adapter, t.resume, err = resumeFrom(cfg, cks, t.Model.Cfg, b); err != nil {
			return nil, err
		}
	} else {
		acfg := cfg.adapterConfig()
		if len(cfg.LayerGroups) > 0 {
			if acfg, err = cfg.layerGroupsConfig(t.Model.Cfg.NumLayers); err != nil {
				return nil, err
			}
		}
		if t.Adapter, err = peft.NewFor(acfg, t.Model, cfg.Seed); err != nil {
			return nil, err
		}
	}
	ocfg := DefaultAdamW()
	ocfg.WeightDecay, ocfg.MaxGradNorm = float32(cfg.WeightDecay), float32(cfg.MaxGradNorm)
	ocfg.EightBit, ocfg.Paged = cfg.Optim == OptimAdamW8bit, cfg.PagedOptim
	if t.opt, err = NewAdamW(b, AdapterParams(t.Adapter), ocfg); err != nil {
		return nil, err
	}
	scaled := cfg.LossScale > 0
	if scaled {
		growth := cfg.LossScaleGrowth
		if growth == 0 {
			growth = DefaultLossScaleGrowth
		}
		if t.state.LossScale, err = NewLossScale(cfg.LossScale, growth); err != nil {
			return nil, err
		}
	}
	if comm.Size() > 1 {
		if scaled {
			return nil, fmt.Errorf("train: loss scaling is not supported with data parallelism")
		}
		if cfg.MaxMemory != "" {
			return nil, fmt.Errorf("train: max_memory is for one process, not a data-parallel job")
		}
		// The step stops at the gradients: they are summed over the ranks before the update.
		if t.dp, err = newDataParallel(comm, cfg.Batch, cfg.GradAccum, t.opt.Params(), b); err != nil {
			return nil, err
		}
		// Loss-scaled: each rank weighs its loss (and so its gradients) by its share of the tokens.
		if t.step, err = NewTrainStepWith(t.Model, t.Adapter, t.dp.hi-t.dp.lo, cfg.Seq, StepOptions{Recompute: cfg.Recompute, LossScaled: true}); err != nil {
			return nil, err
		}
	} else if cfg.MaxMemory != "" {
		if err := t.fitMemory(); err != nil {
			return nil, err
		}
		if cfg = t.Cfg; cfg.Batch != t.batcher.rows {
			// The micro-batch changed: batches of its size from the same data.
			if t.batcher, err = NewBatcher(trainSet, cfg.Batch, cfg.Seq, cfg.Seed); err != nil {
				return nil, err
			}
		}
	} else if err := t.buildStep(cfg.Batch, cfg.GradAccum, cfg.Recompute); err != nil {
		return nil, err
	}
	if len(evalSet) > 0 && comm.Rank() == 0 {
		if t.eval, err = NewStepGraph(t.Model, t.Adapter, cfg.Batch, cfg.Seq, false, false); err != nil {
			return nil, err
		}
	}
	t.sched = Schedule{Warmup: cfg.Warmup, Total: cfg.Steps, Kind: ScheduleKind(cfg.Schedule), MinRatio: cfg.MinLRRatio}
	if err := t.sched.Validate(); err != nil {
		return nil, err
	}
	if ck != nil {
		if err := t.opt.SetState(ck.Optimizer); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if err := t.batcher.Seek(ck.State.Data); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if scaled && ck.State.LossScale == nil {
			return nil, fmt.Errorf("resume: %s was trained without loss scaling", ck.Dir)
		}
		if !scaled {
			ck.State.LossScale = nil
		}
		t.state = ck.State
		t.resumedAt = ck.State.Step
	}
	if t.dp != nil {
		if err := checkSameStep(comm, t.state.Step); err != nil {
			return nil, err
		}
	}
	ok = true
	return t, nil
}

// Check is Validate, then the sequence length against the model's context (config.json): the
// checks that need no weights, run before anything is loaded.
func (c *Config) Check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	mc, err := model.LoadConfig(c.Model)
	if err != nil {
		return err
	}
	if err := CheckSeq(c.Seq, mc); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// CheckSeq refuses a sequence length above the model's context (max_position_embeddings): the
// model was never trained on positions past it.
func CheckSeq(seq int, mc *model.Config) error {
	if seq <= 0 {
		return fmt.Errorf("seq %d must be positive", seq)
	}
	if limit := mc.MaxPositionEmbeddings; limit > 0 && seq > limit {
		return fmt.Errorf("seq %d is above the model's context of %d tokens (max_position_embeddings)", seq, limit)
	}
	return nil
}

func (c *Config) adapterConfig() peft.Config {
	if c.Method == "ia3" {
		cfg := peft.IA3Config()
		if len(c.Targets) > 0 && !(len(c.Targets) == 1 && c.Targets[0] == peft.AllLinear) {
			cfg.TargetModules = peft.Names(c.Targets...)
		}
		return cfg
	}
	cfg := peft.LoRAConfig()
	cfg.R, cfg.LoraAlpha, cfg.LoraDropout, cfg.UseRSLoRA = c.Rank, c.Alpha, c.Dropout, c.RSLoRA
	cfg.UseDoRA = c.Method == "dora" || c.Method == "qdora"
	if c.Init != "" {
		cfg.InitLoraWeights = c.Init
	}
	if len(c.Targets) == 1 && c.Targets[0] == peft.AllLinear {
		cfg.TargetModules = peft.Modules{Pattern: peft.AllLinear}
	} else if len(c.Targets) > 0 {
		cfg.TargetModules = peft.Names(c.Targets...)
	}
	cfg.BaseModelNameOrPath = c.Model
	return cfg
}

// Close frees everything the trainer holds on the device.
func (t *Trainer) Close() {
	if t.f16Math != nil {
		_ = t.f16Math.SetF16Arithmetic(false) // cannot fail: turning off needs nothing
		t.f16Math = nil
	}
	for _, s := range []*StepGraph{t.step, t.eval} {
		if s != nil {
			s.Close()
		}
	}
	if t.acc != nil {
		t.acc.Close()
	}
	if t.dp != nil {
		t.dp.Close()
	}
	if t.opt != nil {
		t.opt.Close()
	}
	if t.Adapter != nil {
		t.Adapter.Release()
	}
	if t.Model != nil && !t.sharedModel {
		t.Model.Release()
	}
}

// StepProgram is the compiled training step (for its peak memory).
func (t *Trainer) StepProgram() *engine.Program { return t.step.Program }

// Memory is the training step's device memory: weights, adapter, optimizer state, gradients
// (with their accumulation buffers) and activations, against the floor. The evaluation program
// runs between steps and is not counted.
func (t *Trainer) Memory() Memory {
	var accum int64
	if t.acc != nil {
		for _, a := range t.acc.acc {
			accum += a.Meta().Bytes()
		}
	}
	if t.dp != nil || t.acc != nil {
		// The update runs as a program of its own after the step's: their buffers add up.
		mem := stepMemory(t.step.Program, t.Model.WeightBytes(), t.opt.StateBytes(), accum, t.opt.Params())
		if t.opt.alone != nil {
			mem.Peak += t.opt.alone.p.PlannedBytes()
		}
		if pg := t.opt.pager; pg != nil && pg.status != nil {
			mem.HostOptimizer, mem.PagedBytesPerStep = t.opt.HostStateBytes(), pg.moved
			mem.Peak += pg.status.PlannedBytes()
			for _, p := range pg.progs {
				mem.Peak += p.p.PlannedBytes()
			}
		}
		return mem
	}
	return t.step.Memory(t.Model.WeightBytes())
}

// Step takes one optimizer step over GradAccum micro-batches. A micro-batch whose loss is not
// finite is left out; if all are, or the gradient norm is not finite, the step is skipped and the
// weights are not touched. With one micro-batch the step is one submission (forward, backward and
// update) and one read; the skip is decided on the device.
//
// With loss scaling, a skipped step halves the scale and GrowthInterval clean ones double it.
func (t *Trainer) Step() (StepMetrics, error) {
	m, err := t.step1()
	if ls := t.state.LossScale; err == nil && ls != nil {
		ls.Update(m.Skipped)
	}
	return m, err
}

func (t *Trainer) step1() (StepMetrics, error) {
	if t.dp != nil {
		return t.parallelStep()
	}
	if t.acc == nil {
		return t.fusedStep()
	}
	if err := t.applyLossScale(); err != nil {
		return StepMetrics{}, err
	}
	var meter LossMeter
	t.acc.Reset()
	tokens := 0
	for range t.Cfg.GradAccum {
		b := t.batcher.Next()
		tokens += b.Tokens
		seed := int32(t.state.RNG.Uint64())
		if b.Tokens == 0 {
			continue
		}
		loss, err := t.step.Run(b, seed)
		if err != nil {
			return StepMetrics{}, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			continue
		}
		meter.Add(loss, b.Tokens)
		g, err := t.step.GradArgs()
		if err != nil {
			return StepMetrics{}, err
		}
		if err := t.acc.Add(g); err != nil {
			return StepMetrics{}, err
		}
	}
	m := t.beginStep(tokens, t.sched.LR(t.opt.StepCount(), t.Cfg.LR))
	if meter.Tokens() == 0 {
		m.Loss, m.Skipped = math.NaN(), true
		return m, nil
	}
	m.Loss = meter.Mean()
	unscale := 1 / float32(t.acc.Count())
	if ls := t.state.LossScale; ls != nil {
		unscale /= float32(ls.Scale)
	}
	info, err := t.opt.Step(t.acc.Grads(), float32(m.LR), unscale)
	if err != nil {
		return m, err
	}
	m.GradNorm, m.Skipped = info.GradNorm, info.Skipped
	return m, nil
}

// applyLossScale gives the step program the current loss scale (loss scaling only).
func (t *Trainer) applyLossScale() error {
	if ls := t.state.LossScale; ls != nil {
		return t.step.SetLossScale(float32(ls.Scale))
	}
	return nil
}

// beginStep counts a step of tokens at learning rate lr and returns its metrics so far.
func (t *Trainer) beginStep(tokens int, lr float64) StepMetrics {
	m := StepMetrics{Step: t.state.Step + 1, Tokens: tokens, LR: lr}
	t.state.Step++
	t.state.Data = t.batcher.Position()
	t.state.Tokens += int64(tokens)
	return m
}

// fusedStep runs one micro-batch through the step program that updates the weights itself.
func (t *Trainer) fusedStep() (StepMetrics, error) {
	b := t.batcher.Next()
	seed := int32(t.state.RNG.Uint64())
	lr := t.sched.LR(t.opt.StepCount(), t.Cfg.LR)
	var loss float64
	var info StepInfo
	if err := t.applyLossScale(); err != nil {
		return StepMetrics{}, err
	}
	if b.Tokens > 0 {
		var err error
		if loss, info, err = t.step.Update(b, seed, float32(lr)); err != nil {
			return StepMetrics{}, err
		}
	}
	m := t.beginStep(b.Tokens, lr)
	if b.Tokens == 0 || math.IsNaN(loss) || math.IsInf(loss, 0) {
		m.Loss, m.Skipped = math.NaN(), true
		return m, nil
	}
	var meter LossMeter
	meter.Add(loss, b.Tokens)
	m.Loss = meter.Mean()
	m.GradNorm, m.Skipped = info.GradNorm, info.Skipped
	return m, nil
}

// Evaluate returns the mean loss over the eval split (NaN without one).
func (t *Trainer) Evaluate() (float64, error) {
	if t.eval == nil {
		return math.NaN(), nil
	}
	l, _, err := Evaluate(t.eval, t.evalSet, t.Cfg.Batch, t.Cfg.Seq)
	return l, err
}

// Run trains to Cfg.Steps, writing the metrics log, checkpoints, the adapter and the loss curve
// into Cfg.Out. progress (nil: none) receives a progress bar. In a data-parallel job, rank 0
// alone writes and logs (and evaluates); the other ranks train and return their own Result. When
// ctx is cancelled Run returns its error after writing a checkpoint of the steps taken since the
// last one (with SaveEvery set), so that Resume continues from where it stopped.
func (t *Trainer) Run(ctx context.Context, progress io.Writer) (Result, error) {
	cfg := t.Cfg
	lead := t.comm.Rank() == 0
	if !lead {
		progress = nil
	}
	metricsPath := filepath.Join(cfg.Out, "metrics.jsonl")
	var mlog *MetricsLog
	if lead {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return Result{}, fmt.Errorf("train: %w", err)
		}
		var err error
		if mlog, err = OpenMetricsLog(metricsPath, t.state.Step); err != nil {
			return Result{}, err
		}
		defer mlog.Close()
	}
	bar := NewProgress(progress, t.state.Step, cfg.Steps, progress != nil)
	res := Result{Method: cfg.Method, Adapter: cfg.Out, Device: t.Backend.Device().Backend + ":" + t.Backend.Device().Name,
		Params: t.Adapter.NumParams(), WeightBytes: t.Model.WeightBytes(), PeakBytes: t.step.Program.PeakBytes(),
		ResumedFrom: t.resumedAt, Metrics: metricsPath, LossCurve: filepath.Join(cfg.Out, "loss.png"), LossStart: math.NaN()}
	if len(t.state.LossHistory) > 0 {
		res.LossStart = t.state.LossHistory[0].Loss
	}
	cfgJSON, _ := json.Marshal(cfg)
	t.state.Config = cfgJSON
	if t.resume != nil {
		res.Warnings = t.resume.Warnings()
		for _, w := range res.Warnings {
			fmt.Fprintln(orDiscard(progress), "warning: "+w)
		}
		if lead {
			if err := mlog.LogResume(*t.resume); err != nil {
				return res, err
			}
		}
	}
	start := time.Now()
	elapsed0 := t.state.Elapsed
	var runTokens int64
	for t.state.Step < cfg.Steps {
		if err := ctx.Err(); err != nil {
			if cfg.SaveEvery > 0 && t.state.Step > t.resumedAt && t.state.Step%cfg.SaveEvery != 0 {
				if cerr := t.checkpoint(); cerr != nil {
					return res, fmt.Errorf("train: checkpoint on cancel: %w (%w)", cerr, err)
				}
			}
			return res, err
		}
		m, err := t.Step()
		if err != nil {
			return res, fmt.Errorf("train: step %d: %w", t.state.Step, err)
		}
		if err := t.prune(m.Step); err != nil {
			return res, err
		}
		runTokens += int64(m.Tokens)
		t.state.Elapsed = elapsed0 + time.Since(start).Seconds()
		m.Elapsed = t.state.Elapsed
		m.TokensPerS = float64(runTokens) / time.Since(start).Seconds()
		if m.Skipped {
			res.SkippedSteps++
			msg := ""
			if ls := t.state.LossScale; ls != nil {
				msg = fmt.Sprintf(" (loss scale now %g)", ls.Scale)
			}
			fmt.Fprintf(orDiscard(progress), "step %d skipped: non-finite loss or gradient%s\n", m.Step, msg)
		}
		t.state.LossHistory = append(t.state.LossHistory, LossPoint{Step: m.Step, Loss: m.Loss})
		if math.IsNaN(res.LossStart) && !math.IsNaN(m.Loss) {
			res.LossStart = m.Loss
		}
		if lead {
			if err := mlog.LogStep(m); err != nil {
				return res, err
			}
		}
		bar.Update(m.Step, m.Loss, m.TokensPerS, byteSize(t.step.Program.PeakBytes()+t.Model.WeightBytes()))
		if t.OnStep != nil {
			t.OnStep(m)
		}
		if cfg.EvalEvery > 0 && m.Step%cfg.EvalEvery == 0 && t.eval != nil {
			if err := t.logEval(mlog, m.Step); err != nil {
				return res, err
			}
		}
		if lead && cfg.SaveEvery > 0 && m.Step%cfg.SaveEvery == 0 && m.Step < cfg.Steps {
			if err := t.checkpoint(); err != nil {
				return res, err
			}
		}
	}
	_ = bar.Finish()
	res.Steps = t.state.Step
	res.TrainTokens = t.state.Tokens
	if el := time.Since(start).Seconds(); el > 0 {
		res.TokensPerS = float64(runTokens) / el
	}
	res.LossEnd = lastLoss(t.state.LossHistory)
	res.Communication = t.communication()
	if ls := t.state.LossScale; ls != nil {
		res.LossScale = ls.Scale
	}
	res.Memory = t.Memory() // after the steps: the accumulated update compiles at the first
	if math.IsNaN(res.LossEnd) || math.IsNaN(res.LossStart) {
		return res, fmt.Errorf("train: every step was skipped: the loss is not finite (lower --lr, or check the data)")
	}
	if t.eval != nil {
		l, err := t.Evaluate()
		if err != nil {
			return res, err
		}
		ppl := Perplexity(l)
		res.EvalLoss, res.Perplexity = &l, &ppl
		t.state.EvalHistory = append(t.state.EvalHistory, LossPoint{Step: t.state.Step, Loss: l})
		if err := mlog.LogEval(EvalMetrics{Step: t.state.Step, Loss: l, Perplexity: ppl}); err != nil {
			return res, err
		}
	}
	if !lead {
		return res, nil
	}
	if err := t.Adapter.Save(cfg.Out); err != nil {
		return res, err
	}
	if cfg.RankBudget > 0 {
		if _, err := saveRanked(cfg.Out); err != nil {
			return res, err
		}
		res.Ranks = t.ranks
	}
	if err := mlog.Close(); err != nil {
		return res, err
	}
	steps, evals, err := ReadMetrics(metricsPath)
	if err != nil {
		return res, err
	}
	if err := PlotLoss(res.LossCurve, steps, evals); errors.Is(err, ErrNoPlot) {
		res.LossCurve = "" // the lite build draws no chart
	} else if err != nil {
		return res, err
	}
	return res, nil
}

func (t *Trainer) logEval(mlog *MetricsLog, step int) error {
	l, err := t.Evaluate()
	if err != nil {
		return err
	}
	t.state.EvalHistory = append(t.state.EvalHistory, LossPoint{Step: step, Loss: l})
	return mlog.LogEval(EvalMetrics{Step: step, Loss: l, Perplexity: Perplexity(l)})
}

// checkpoint saves adapter, optimizer and trainer state under Cfg.Out/checkpoint-STEP.
func (t *Trainer) checkpoint() error {
	opt, err := t.opt.State()
	if err != nil {
		return err
	}
	_, err = SaveCheckpoint(t.Cfg.Out, t.state, opt, t.Adapter.Save, t.Cfg.KeepCkpts)
	return err
}

func lastLoss(h []LossPoint) float64 {
	for i := len(h) - 1; i >= 0; i-- {
		if !math.IsNaN(h[i].Loss) {
			return h[i].Loss
		}
	}
	return math.NaN()
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
}
