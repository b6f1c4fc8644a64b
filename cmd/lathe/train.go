package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine/backends"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// Only train makes MPI calls: every other command gives back the main thread dist's init locks in
// a build with MPI.
func init() {
	mainThreadReleases = append(mainThreadReleases, func(path string) {
		if path != "lathe train" {
			dist.ReleaseMainThread()
		}
	})
}

func newTrainCmd() *cobra.Command {
	var cfg train.Config
	var device string
	var quiet bool
	var resolve func(*cobra.Command) error
	var hf hyperFlags
	var layersFile string
	cmd := &cobra.Command{
		Use:   "train --model DIR --data FILE --method lora|qlora|dora|qdora|ia3|hyper --out DIR",
		Short: "Fine-tune an adapter (LoRA, QLoRA or IA3) and save it in Hugging Face PEFT's format",
		Long: "Train reads a Hugging Face model folder and a JSONL dataset ({\"text\"}, {\"prompt\",\"completion\"}, " +
			"{\"messages\"} or {\"input_ids\"} lines) and writes to --out the adapter (adapter_config.json, " +
			"adapter_model.safetensors), metrics.jsonl, loss.png and checkpoint-N folders. --config FILE reads the same " +
			"settings from a JSON file (field names as in the flags, with underscores); flags given on the command " +
			"line override it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolve(cmd); err != nil {
				return err
			}
			if layersFile != "" {
				groups, err := train.ReadLayerGroups(layersFile)
				if err != nil {
					return err
				}
				cfg.LayerGroups = groups
			}
			if cfg.Method == "hyper" {
				return runHyperTrain(cmd, cfg, hf, device, quiet)
			}
			// Under mpirun this process is one rank of a data-parallel job (a build with -tags
			// mpi); otherwise a job of one, trained through the public API.
			comm, err := dist.Open()
			if err != nil {
				return err
			}
			progress := cmd.ErrOrStderr()
			if quiet {
				progress = nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if comm.Size() == 1 {
				if err := trainOne(ctx, cmd.OutOrStdout(), progress, cfg, device); err != nil {
					return err
				}
				dist.Finalize() // a build with MPI started it, even alone
				return nil
			}
			return trainParallel(ctx, cmd.OutOrStdout(), progress, cfg, device, comm)
		},
	}
	f := cmd.Flags()
	resolve = bindTrainFlags(f, &cfg)
	f.StringVar(&device, "device", "auto", "auto, cpu, webgpu, webgpu:N, vulkan or vulkan:N")
	f.BoolVar(&quiet, "quiet", false, "no progress bar")
	f.StringVar(&layersFile, "layers", "", "JSON file of layer groups, [{\"layers\": \"0-7\", \"rank\": 4, \"targets\": [\"q_proj\"]}, ...]: ranks and modules per layer, saved as one PEFT adapter (target_modules regex, rank_pattern)")
	hf.register(f)
	return cmd
}

// bindTrainFlags adds the training settings' flags to f, bound to cfg (which it sets to the
// defaults), and returns what applies them once parsed: --config's file first, then the flags
// given on the command line, which win.
func bindTrainFlags(f *pflag.FlagSet, cfg *train.Config) func(*cobra.Command) error {
	*cfg = train.DefaultConfig()
	var configFile, targets string
	f.StringVar(&configFile, "config", "", "JSON file with the settings below")
	f.StringVar(&cfg.Model, "model", "", "Hugging Face model folder")
	f.StringVar(&cfg.Data, "data", "", "JSONL training data")
	f.StringVar(&cfg.Out, "out", "", "output folder for the adapter, metrics and checkpoints")
	f.StringVar(&cfg.Method, "method", cfg.Method, "lora, qlora (LoRA on an NF4 base), dora, qdora (DoRA on an NF4 base), ia3, or hyper (a hypernetwork that generates LoRAs from task descriptions: --tasks)")
	f.IntVar(&cfg.Rank, "rank", cfg.Rank, "LoRA rank")
	f.Float64Var(&cfg.Alpha, "alpha", cfg.Alpha, "LoRA alpha (scale alpha/rank, or alpha/√rank with --rslora)")
	f.Float64Var(&cfg.Dropout, "dropout", cfg.Dropout, "LoRA dropout")
	f.BoolVar(&cfg.RSLoRA, "rslora", cfg.RSLoRA, "rank-stabilised scaling alpha/√rank")
	f.StringVar(&cfg.Init, "init", cfg.Init, "LoRA initialisation: gaussian, or pissa (from the base's SVD; saved as PEFT's converted rank-2r LoRA)")
	f.StringVar(&targets, "targets", "", "comma-separated module names (q_proj,v_proj,...) or all-linear (default)")
	f.IntVar(&cfg.Steps, "steps", cfg.Steps, "optimizer steps")
	f.IntVar(&cfg.Batch, "batch", cfg.Batch, "sequences per micro-batch")
	f.IntVar(&cfg.Seq, "seq", cfg.Seq, "tokens per sequence (examples are packed)")
	f.IntVar(&cfg.GradAccum, "grad-accum", cfg.GradAccum, "micro-batches per optimizer step")
	f.StringVar(&cfg.Optim, "optim", cfg.Optim, "optimizer: adamw (f32 moments) or adamw8bit (bitsandbytes' blockwise 8-bit moments, a quarter of the state memory)")
	f.Float64Var(&cfg.LR, "lr", cfg.LR, "peak learning rate")
	f.Float64Var(&cfg.WeightDecay, "weight-decay", cfg.WeightDecay, "AdamW weight decay")
	f.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "linear warmup steps")
	f.StringVar(&cfg.Schedule, "schedule", cfg.Schedule, "cosine, linear or constant decay after warmup")
	f.Float64Var(&cfg.MaxGradNorm, "max-grad-norm", cfg.MaxGradNorm, "clip the gradient norm (0: off)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the adapter init, data order and dropout")
	f.Float64Var(&cfg.EvalFraction, "eval-fraction", cfg.EvalFraction, "fraction of examples held out for evaluation")
	f.IntVar(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "evaluate every N steps (0: at the end only)")
	f.IntVar(&cfg.SaveEvery, "save-every", cfg.SaveEvery, "write a checkpoint every N steps (0: none)")
	f.IntVar(&cfg.KeepCkpts, "keep-checkpoints", cfg.KeepCkpts, "checkpoints to keep")
	f.BoolVar(&cfg.Resume, "resume", cfg.Resume, "continue from the latest checkpoint in --out")
	f.BoolVar(&cfg.Overwrite, "overwrite", cfg.Overwrite, "start afresh in an --out that holds an earlier run's checkpoints (deleting them)")
	f.BoolVar(&cfg.Recompute, "gradient-checkpointing", cfg.Recompute, "recompute activations in the backward pass (less memory)")
	f.StringVar(&cfg.Compute, "compute", "f32", "precision of the frozen base's products (forward, and the input gradient through it): f32 (exact) or bf16 (as bitsandbytes' bnb_4bit_compute_dtype=bfloat16; faster on a CPU with AVX512_BF16); the adapter's products stay f32")
	f.StringVar(&cfg.Precision, "precision", cfg.Precision, "activations kept for the backward pass: f32, f16 (dynamic loss scaling on; f16 matmul tiles where the GPU has shader-f16) or bf16; arithmetic, adapter and optimizer stay f32")
	f.Float64Var(&cfg.LossScale, "loss-scale", cfg.LossScale, "dynamic loss scaling from this scale (a power of two; 0: off)")
	f.IntVar(&cfg.LossScaleGrowth, "loss-scale-growth", cfg.LossScaleGrowth, "clean steps before the loss scale doubles (0: 2000)")
	f.IntVar(&cfg.RankBudget, "rank-budget", cfg.RankBudget, "prune the LoRA to this many directions in all, by singular value (AdaLoRA's schedule), saved with rank_pattern (0: off)")
	f.BoolVar(&cfg.PagedOptim, "paged-optim", cfg.PagedOptim, "keep the optimizer state in host memory, streamed to the GPU layer by layer for each update (the CPU backend: no change)")
	f.StringVar(&cfg.MaxMemory, "max-memory", cfg.MaxMemory, "bound the step's device memory (4GiB, 512MB, bytes): picks gradient checkpointing and the micro-batch to fit, or fails before step 1 with the bytes it needs")
	return func(cmd *cobra.Command) error {
		if configFile != "" {
			raw, err := os.ReadFile(configFile)
			if err != nil {
				return fmt.Errorf("%s: %w", cmd.Name(), err)
			}
			// Flags set on the command line win over the file: note them, read the file into
			// the config the flags are bound to, then set them again.
			set := map[string]string{}
			cmd.Flags().Visit(func(f *pflag.Flag) { set[f.Name] = f.Value.String() })
			*cfg = train.DefaultConfig()
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(cfg); err != nil {
				return fmt.Errorf("%s: config %s: %w", cmd.Name(), configFile, err)
			}
			for name, v := range set {
				if err := cmd.Flags().Set(name, v); err != nil {
					return err
				}
			}
		}
		if targets != "" {
			cfg.Targets = strings.Split(targets, ",")
		}
		return nil
	}
}

// trainOne runs cfg in this process through package lathe, as an app would.
func trainOne(ctx context.Context, w, progress io.Writer, cfg train.Config, device string) error {
	m, err := lathe.OpenFor(cfg, device)
	if err != nil {
		return err
	}
	defer m.Close()
	tr, err := m.NewTrainer(cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	fmt.Fprintf(w, "training %s (%d params) on %s: %d steps of %d×%d tokens\n", cfg.Method, tr.Params(), m.Device(),
		cfg.Steps, cfg.Batch, cfg.Seq)
	if cfg.MaxMemory != "" {
		c := tr.Config()
		fmt.Fprintf(w, "--max-memory %s: micro-batch %d × %d a step, gradient checkpointing %v\n", cfg.MaxMemory,
			c.Batch, c.GradAccum, c.Recompute)
	}
	tr.ProgressBar = progress
	res, err := tr.Run(ctx, nil)
	if err != nil {
		return err
	}
	return printTrainResult(w, res)
}

// trainParallel runs this process's rank of a data-parallel job. It stays on package train:
// the API's Model and Trainer are one process on one device, and a rank also needs the
// communicator, rank-0-only output and MPI's finalisation.
func trainParallel(ctx context.Context, w, progress io.Writer, cfg train.Config, device string, comm dist.Comm) error {
	rankErr := func(err error) error {
		return fmt.Errorf("rank %d of %d: %w", comm.Rank(), comm.Size(), err)
	}
	b, err := backends.Open(device)
	if err != nil {
		return rankErr(err)
	}
	defer b.Close()
	tr, err := train.NewParallel(cfg, b, comm)
	if err != nil {
		return rankErr(err)
	}
	defer tr.Close()
	// Rank 0 alone speaks: the others' output would repeat it.
	if comm.Rank() != 0 {
		w = io.Discard
	}
	fmt.Fprintf(w, "training %s (%d params) on %s:%s: %d steps of %d×%d tokens over %d ranks\n", cfg.Method, tr.Adapter.NumParams(),
		b.Device().Backend, b.Device().Name, cfg.Steps, cfg.Batch, cfg.Seq, comm.Size())
	res, err := tr.Run(ctx, progress)
	if err != nil {
		// No MPI_Finalize: this rank exits with status 1 and the launcher ends the others.
		return rankErr(err)
	}
	if err := printTrainResult(w, res); err != nil {
		return err
	}
	dist.Finalize()
	return nil
}

// printTrainResult prints a run's summary lines and, last, its result as JSON.
func printTrainResult(w io.Writer, res train.Result) error {
	curve := ""
	if res.LossCurve != "" { // the lite build draws no chart
		curve = ", loss curve " + res.LossCurve
	}
	fmt.Fprintf(w, "loss %.4f → %.4f over %d steps, %.0f tokens/s; adapter in %s%s\n",
		res.LossStart, res.LossEnd, res.Steps, res.TokensPerS, res.Adapter, curve)
	fmt.Fprintf(w, "device memory: %s\n", res.Memory)
	c := res.Communication
	fmt.Fprintf(w, "all-reduce per step: %s of adapter gradients (full fine-tuning: %s, %.0f× more) over %d ranks, %.2f ms a step\n",
		byteSize(c.AllReduceBytes), byteSize(c.FullFineTuneBytes), c.Saving, c.Ranks, 1e3*c.CommSecondsPerStep)
	return printJSON(w, res)
}

func newEvalCmd() *cobra.Command {
	var dir, adapterDir, data, device, quantize string
	var seq int
	cmd := &cobra.Command{
		Use:   "eval --model DIR [--adapter DIR] --data FILE",
		Short: "Mean next-token loss and perplexity of a model (with an adapter) on a JSONL dataset",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || data == "" {
				return fmt.Errorf("eval: --model and --data are required")
			}
			mc, err := model.LoadConfig(dir)
			if err != nil {
				return err
			}
			if seq == 0 {
				seq = 512
				if limit := mc.MaxPositionEmbeddings; limit > 0 && seq > limit {
					seq = limit
				}
			}
			if err := train.CheckSeq(seq, mc); err != nil {
				return fmt.Errorf("eval: %w", err)
			}
			b, err := backends.Open(device)
			if err != nil {
				return err
			}
			defer b.Close()
			m, err := model.Load(dir, b, model.LoadOptions{Quantize: quantize})
			if err != nil {
				return err
			}
			defer m.Release()
			examples, err := train.LoadDataset(data, dir, m.Cfg.VocabSize)
			if err != nil {
				return err
			}
			var a *peft.Adapter
			if adapterDir != "" {
				if a, err = peft.Load(adapterDir, m.Cfg, b); err != nil {
					return err
				}
				defer a.Release()
			}
			g, err := train.NewStepGraph(m, a, 1, seq, false, false)
			if err != nil {
				return err
			}
			defer g.Close()
			loss, tokens, err := train.Evaluate(g, examples, 1, seq)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"loss": loss, "perplexity": train.Perplexity(loss), "tokens": tokens,
				"device": b.Device().Backend + ":" + b.Device().Name})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "Hugging Face model folder")
	f.StringVar(&adapterDir, "adapter", "", "PEFT adapter folder")
	f.StringVar(&data, "data", "", "JSONL data")
	f.IntVar(&seq, "seq", 0, "tokens per evaluated row (default: the model's context, at most 512)")
	f.StringVar(&device, "device", "auto", "auto, cpu, webgpu, webgpu:N, vulkan or vulkan:N")
	f.StringVar(&quantize, "quantize", "", "store the base weights in 4 bits: nf4 or fp4 (as QLoRA trained them)")
	return cmd
}
