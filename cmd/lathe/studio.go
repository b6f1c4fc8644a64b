//go:build !nostudio && !lathe_lite

package main

import (
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/studio"
	"github.com/lathe-ml/lathe/train"
)

// The window links GLFW and X11 (and their shared libraries at run time): a build with -tags
// nostudio leaves `lathe studio` out, for servers without them.
func init() {
	extraCommands = append(extraCommands, newStudioCmd)
	mainThreadReleases = append(mainThreadReleases, func(path string) {
		if path != "lathe studio" {
			studio.ReleaseMainThread()
		}
	})
}

func newStudioCmd() *cobra.Command {
	var cfg train.Config
	var o studio.Options
	var quiet bool
	var resolve func(*cobra.Command) error
	cmd := &cobra.Command{
		Use:   "studio --model DIR --data FILE [--method lora|qlora|...] [--out DIR] [--device auto]",
		Short: "Fine-tune in a desktop window: live loss curve, speed, memory, samples, controls and a prompt box",
		Long: "Studio opens a window (X11, through GLFW) that trains an adapter with the settings of lathe train and shows " +
			"the loss curve, tokens/s, device memory and a sample from the adapter every --sample-every steps. Start, " +
			"Pause and Stop (F1, F2, F3) control the run; type a prompt and press Enter to try the adapter. Stopping " +
			"or closing the window writes a checkpoint in --out: Start, `lathe studio --resume` or `lathe train " +
			"--resume` continue it. A run on WebGPU draws with the device that trains; a CPU run draws in software.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolve(cmd); err != nil {
				return err
			}
			if cfg.Out == "" {
				cfg.Out = "adapter"
			}
			o.Train = cfg
			if !quiet {
				o.Log = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			sum, err := studio.Run(ctx, o)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), sum)
		},
	}
	f := cmd.Flags()
	resolve = bindTrainFlags(f, &cfg)
	f.StringVar(&o.Device, "device", "auto", "auto, cpu, webgpu or webgpu:N")
	f.IntVar(&o.SampleEvery, "sample-every", 50, "show a sample from the adapter every N steps (0: none)")
	f.StringVar(&o.SamplePrompt, "sample-prompt", "What does the cow say?", "the sample's prompt")
	f.IntVar(&o.SampleTokens, "sample-tokens", 32, "the most tokens of a sample or a reply")
	f.IntVar(&o.Width, "width", 900, "window width")
	f.IntVar(&o.Height, "height", 600, "window height")
	f.StringVar(&o.Title, "title", "lathe studio", "window title")
	f.BoolVar(&o.Paused, "paused", false, "wait for Start (F1) instead of training at once")
	f.BoolVar(&quiet, "quiet", false, "no progress lines")
	return cmd
}
