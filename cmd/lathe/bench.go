//go:build !lathe_lite

package main

import (
	"cmp"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/bench"
	"github.com/lathe-ml/lathe/engine"
)

func newBenchCmd() *cobra.Command {
	var (
		backend, out, python string
		quick, reference     bool
		compare              bool
		budget               time.Duration
		e2eOnly              bool
		e2eLayers, e2eVocab  int
		e2ePrompt, e2eDecode int
	)
	cmd := &cobra.Command{
		Use:   "bench [--backend cpu|webgpu|vulkan|all] [--quick] [--out DIR] [--reference] [--budget D] | bench --compare A.json B.json",
		Short: "Measure kernels against the device's roofline and end-to-end generation; write JSON, Markdown and charts",
		Args: func(_ *cobra.Command, args []string) error {
			if compare && len(args) != 2 {
				return fmt.Errorf("bench: --compare takes two reports: --compare A.json B.json")
			}
			if !compare && len(args) > 0 {
				return fmt.Errorf("bench: unexpected arguments %q", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if compare {
				a, err := bench.ReadReport(args[0])
				if err != nil {
					return err
				}
				b, err := bench.ReadReport(args[1])
				if err != nil {
					return err
				}
				c := bench.Compare(a, b)
				c.Print(w)
				return printJSON(w, c)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			o := bench.Options{
				Backend: backend, Quick: quick, Reference: reference, Python: python, Budget: budget,
				Command: strings.Join(os.Args, " "), Log: cmd.ErrOrStderr(),
				Train: bench.TrainStep,
			}
			if e2eOnly || e2eLayers > 0 || e2eVocab > 0 || e2ePrompt > 0 || e2eDecode > 0 {
				o.Sizes = e2eSizes(e2eOnly, e2eLayers, e2eVocab, e2ePrompt, e2eDecode)
			}
			if e2eOnly {
				o.Train = nil
			}
			rep, err := bench.Run(ctx, o)
			if rep == nil {
				return err
			}
			paths, werr := rep.WriteAll(out)
			if werr != nil {
				return werr
			}
			if err != nil {
				return err
			}
			fmt.Fprint(w, rep.Markdown())
			return printJSON(w, map[string]any{"out": out, "files": paths, "wall_seconds": rep.WallSeconds})
		},
	}
	f := cmd.Flags()
	f.StringVar(&backend, "backend", "all", "backend to measure: cpu, webgpu, vulkan or all (every device found)")
	f.BoolVar(&quick, "quick", false, "only the 0.5B and 1B shapes and fewer repeats (about two minutes on a 2-core CPU)")
	f.StringVar(&out, "out", "bench-out", "folder for bench.json, bench.md and the charts")
	f.BoolVar(&reference, "reference", false, "also time the same shapes in PyTorch (bench/reference/torch_ref.py) and report ratios")
	f.StringVar(&python, "python", "", "Python interpreter with torch for --reference (default: LATHE_PYTHON, python3, /usr/bin/python3)")
	f.DurationVar(&budget, "budget", 0, "stop measuring kernels after this long (e.g. 3m) and report what was measured; 0: no limit")
	f.BoolVar(&compare, "compare", false, "compare two bench.json files given as arguments (b/a time ratios) instead of measuring")
	f.BoolVar(&e2eOnly, "e2e-only", false, "only the ceilings and end-to-end generation at batch 1 (with --reference on the CPU: llama.cpp beside it): no kernels, no training")
	f.IntVar(&e2eLayers, "e2e-layers", 0, "layers of the Llama-3.2-1B-shaped end-to-end checkpoint (default 2)")
	f.IntVar(&e2eVocab, "e2e-vocab", 0, "its vocabulary (default 32000; --quick on a CPU 8192)")
	f.IntVar(&e2ePrompt, "e2e-prompt", 0, "its prompt tokens (default 32; --quick on a CPU 16)")
	f.IntVar(&e2eDecode, "e2e-decode", 0, "tokens decoded (default 32; --quick 8)")
	return cmd
}

// e2eSizes is bench.Defaults with the end-to-end checkpoint resized (0 keeps a default) and, with
// only, nothing else measured but the ceilings and batch-1 generation.
func e2eSizes(only bool, layers, vocab, prompt, decode int) func(engine.DeviceInfo, engine.Caps, bool) bench.Sizes {
	return func(d engine.DeviceInfo, caps engine.Caps, quick bool) bench.Sizes {
		s := bench.Defaults(d, caps, quick)
		if layers > 0 || vocab > 0 || prompt > 0 {
			dec := s.E2E.DecodeTokens
			s.E2E = bench.E2E1B(cmp.Or(prompt, s.E2E.PromptTokens), cmp.Or(vocab, s.E2E.Preset.Vocab), cmp.Or(layers, s.E2E.Layers))
			s.E2E.DecodeTokens = dec
		}
		if decode > 0 {
			s.E2E.DecodeTokens = decode
		}
		if only {
			s.Kernels = []string{"none"}
			s.E2E.Batches, s.E2E.Adapters = []int{1}, 0
			s.Qwen3Train = bench.E2ESizes{}
		}
		return s
	}
}
