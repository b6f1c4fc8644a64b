package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lathe-ml/lathe/engine/backends"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft/hyper"
	"github.com/lathe-ml/lathe/train"
)

// hyperFlags are the settings `lathe train --method hyper` adds to train's.
type hyperFlags struct {
	tasks, mode, reconLoss string
	net                    hyper.Config
}

func (h *hyperFlags) register(f *pflag.FlagSet) {
	d := hyper.DefaultConfig()
	h.net = d
	f.StringVar(&h.tasks, "tasks", "", "--method hyper: JSONL tasks file, one {\"description\", \"data\"} (or {\"description\", \"adapter\"} to reconstruct) a line")
	f.StringVar(&h.mode, "hyper-mode", "sft", "--method hyper: sft (train through the generated adapters) or recon (reconstruct the tasks' PEFT LoRAs)")
	f.StringVar(&h.reconLoss, "recon-loss", "ab", "--hyper-mode recon: L1 on A and B (ab) or on ΔW (delta)")
	f.StringVar(&h.net.Head, "hyper-head", d.Head, "--method hyper: head L (full, per module type) or M (shared by A and B)")
	f.IntVar(&h.net.Latent, "hyper-latent", d.Latent, "--method hyper: latent size of the hypernetwork")
	f.IntVar(&h.net.HeadIn, "hyper-head-in", d.HeadIn, "--method hyper: width of the head's input")
}

// runHyperTrain trains a hypernetwork (`lathe train --method hyper`) and writes it to cfg.Out.
func runHyperTrain(cmd *cobra.Command, cfg train.Config, h hyperFlags, device string, quiet bool) error {
	if cfg.Model == "" || h.tasks == "" || cfg.Out == "" {
		return fmt.Errorf("train: --method hyper needs --model, --tasks and --out")
	}
	if h.mode != "sft" && h.mode != "recon" {
		return fmt.Errorf("train: --hyper-mode %q is not sft or recon", h.mode)
	}
	// A hypernetwork run writes the network at its end only: settings it would ignore are refused.
	switch {
	case cfg.Resume || cfg.SaveEvery > 0:
		return fmt.Errorf("train: --method hyper has no checkpoints yet: --resume and --save-every are not supported")
	case cfg.GradAccum != 1 || cfg.RankBudget > 0 || len(cfg.LayerGroups) > 0 || cfg.Init != "" || cfg.RSLoRA:
		return fmt.Errorf("train: --method hyper does not take --grad-accum, --rank-budget, --layers, --init or --rslora")
	}
	mc, err := model.LoadConfig(cfg.Model)
	if err != nil {
		return err
	}
	if err := train.CheckSeq(cfg.Seq, mc); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	tasks, err := hyper.ReadTasks(h.tasks)
	if err != nil {
		return err
	}
	b, err := backends.Open(device)
	if err != nil {
		return err
	}
	defer b.Close()
	m, err := model.Load(cfg.Model, b, model.LoadOptions{})
	if err != nil {
		return err
	}
	defer m.Release()
	enc, err := hyper.NewModelEncoder(m)
	if err != nil {
		return err
	}
	embs, err := hyper.EncodeTasks(enc, tasks)
	if err != nil {
		return err
	}
	nc := h.net
	nc.R, nc.Alpha, nc.EmbDim, nc.Encoder, nc.BaseModel = cfg.Rank, cfg.Alpha, enc.Dim(), enc.Name(), cfg.Model
	if len(cfg.Targets) > 0 && !(len(cfg.Targets) == 1 && cfg.Targets[0] == "all-linear") {
		nc.Targets = cfg.Targets
	}
	net, err := hyper.New(nc, m.Cfg, b, cfg.Seed)
	if err != nil {
		return err
	}
	defer net.Release()
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "training a hypernetwork (%s head, %d params) on %d tasks, %s, on %s:%s: %d steps of %d×%d tokens\n",
		nc.Head, net.NumParams(), len(tasks), h.mode, b.Device().Backend, b.Device().Name, cfg.Steps, cfg.Batch, cfg.Seq)
	var progress io.Writer = cmd.ErrOrStderr()
	if quiet {
		progress = nil
	}
	tc := hyper.TrainConfig{Steps: cfg.Steps, Batch: cfg.Batch, Seq: cfg.Seq, Warmup: cfg.Warmup, LR: cfg.LR, WeightDecay: cfg.WeightDecay,
		MaxGradNorm: cfg.MaxGradNorm, Seed: cfg.Seed, EvalFraction: cfg.EvalFraction, ReconLoss: h.reconLoss}
	var res hyper.Result
	if h.mode == "sft" {
		res, err = hyper.TrainSFT(m, net, tasks, embs, tc, progress)
	} else {
		res, err = hyper.TrainRecon(m, net, tasks, embs, tc, progress)
	}
	if err != nil {
		return err
	}
	if err := net.Save(cfg.Out); err != nil {
		return err
	}
	res.Hyper = cfg.Out
	fmt.Fprintf(w, "loss %.4f → %.4f over %d steps; hypernetwork in %s\n", res.LossStart, res.LossEnd, res.Steps, cfg.Out)
	return printJSON(w, res)
}

func newHyperCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hyper generate --hyper DIR --task \"description\" --out ADAPTER",
		Short: "Hypernetwork adapters (Text-to-LoRA): generate a PEFT LoRA from a task description",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newHyperGenerateCmd())
	return cmd
}

func newHyperGenerateCmd() *cobra.Command {
	var dir, task, out, modelDir, device string
	cmd := &cobra.Command{
		Use:   "generate --hyper DIR --task \"description\" --out ADAPTER",
		Short: "Write the LoRA adapter a hypernetwork generates for a task description, as Hugging Face PEFT saves one",
		Long: "Generate embeds --task with the encoder the hypernetwork was trained with (the base model's mean-pooled " +
			"last hidden states), runs the hypernetwork and writes an ordinary PEFT LoRA (adapter_config.json, " +
			"adapter_model.safetensors) that eval, generate, serve and merge take. --model defaults to the base model " +
			"named in the hypernetwork's config.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || strings.TrimSpace(task) == "" || out == "" {
				return fmt.Errorf("hyper generate: --hyper, --task and --out are required")
			}
			hc, err := hyper.LoadConfig(dir)
			if err != nil {
				return err
			}
			if modelDir == "" {
				modelDir = hc.BaseModel
			}
			b, err := backends.Open(device)
			if err != nil {
				return err
			}
			defer b.Close()
			m, err := model.Load(modelDir, b, model.LoadOptions{})
			if err != nil {
				return err
			}
			defer m.Release()
			enc, err := hyper.NewModelEncoder(m)
			if err != nil {
				return err
			}
			if hc.Encoder != enc.Name() {
				return fmt.Errorf("hyper generate: %s was trained with the encoder %q; this build embeds with %q", dir, hc.Encoder, enc.Name())
			}
			net, err := hyper.Load(dir, m.Cfg, b)
			if err != nil {
				return err
			}
			defer net.Release()
			emb, err := enc.Encode(task)
			if err != nil {
				return err
			}
			a, err := net.Generate(emb)
			if err != nil {
				return err
			}
			defer a.Release()
			a.Config.BaseModelNameOrPath = modelDir
			if err := a.Save(out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"adapter": out, "task": task, "hyper": dir,
				"params": a.NumParams(), "r": hc.R, "target_modules": hc.Targets})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "hyper", "", "hypernetwork folder (lathe train --method hyper)")
	f.StringVar(&task, "task", "", "one-line task description")
	f.StringVar(&out, "out", "", "folder to write the generated PEFT LoRA to")
	f.StringVar(&modelDir, "model", "", "base model folder (default: the one the hypernetwork names)")
	f.StringVar(&device, "device", "auto", "auto, cpu, webgpu or webgpu:N")
	return cmd
}
