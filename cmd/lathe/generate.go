package main

import (
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/serve"
)

func newGenerateCmd() *cobra.Command {
	var (
		dir, adapterDir, prompt string
		device, quantize, head  string
		compute                 string
		chat, asJSON            bool
		s                       = serve.DefaultSampling()
	)
	cmd := &cobra.Command{
		Use:   "generate --model DIR [--adapter DIR] [--prompt TEXT]",
		Short: "Generate text from a model (streamed to stdout; --json for one JSON object)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("generate: --model is required")
			}
			if err := s.Validate(); err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			m, err := lathe.Open(dir, lathe.Options{Device: device, Quantize: quantize, Head: head, Compute: compute, Slots: 1})
			if err != nil {
				return err
			}
			defer m.Close()
			req := lathe.Request{Prompt: prompt, Sampling: &s}
			if chat {
				req = lathe.Request{Messages: []lathe.Message{{Role: "user", Content: prompt}}, Sampling: &s}
			}
			if adapterDir != "" {
				if err := m.LoadAdapter("adapter", adapterDir); err != nil {
					return err
				}
				req.Adapter = "adapter"
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			w := cmd.OutOrStdout()
			var onText func(string) error
			if !asJSON {
				onText = func(piece string) error {
					_, err := fmt.Fprint(w, piece)
					return err
				}
			}
			res, err := m.Generate(ctx, req, onText)
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(w)
			}
			return printJSON(w, struct {
				serve.Result
				Device string `json:"device"`
			}{res, m.Device()})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "model folder (config.json, safetensors, tokenizer.json)")
	f.StringVar(&adapterDir, "adapter", "", "PEFT adapter folder to apply (adapter_config.json + adapter_model.safetensors)")
	f.StringVar(&prompt, "prompt", "", "prompt text; empty starts from BOS")
	f.BoolVar(&chat, "chat", false, "send the prompt as a user message through the model's chat template")
	f.StringVar(&device, "device", "auto", "auto, cpu, webgpu, webgpu:N, vulkan or vulkan:N")
	f.StringVar(&quantize, "quantize", "", "store the base weights in 4 bits: nf4 or fp4")
	f.StringVar(&head, "head", model.HeadAuto, headUsage)
	f.StringVar(&compute, "compute", "f32", computeUsage)
	f.IntVar(&s.MaxTokens, "max-tokens", s.MaxTokens, "most tokens to generate")
	f.Float64Var(&s.Temperature, "temperature", s.Temperature, "sampling temperature; 0 is greedy")
	f.Float64Var(&s.TopP, "top-p", s.TopP, "nucleus sampling mass")
	f.IntVar(&s.TopK, "top-k", s.TopK, "sample from the K most likely tokens (0: all)")
	f.Float64Var(&s.RepetitionPenalty, "repetition-penalty", s.RepetitionPenalty, "penalty for tokens already in the text (1: none)")
	f.Uint64Var(&s.Seed, "seed", s.Seed, "random seed of the sampler")
	f.StringArrayVar(&s.Stop, "stop", nil, "stop at this string (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print only the result object")
	return cmd
}
