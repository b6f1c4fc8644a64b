// Command lathe fine-tunes, quantizes and serves LLM adapters on any GPU or the CPU.
//
// Every command follows one convention: `lathe VERB --name value ...`. On success the last line a
// command prints is one JSON object (or array) that scripts can read; errors go to stderr and the
// exit code is 1.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// gcPercent is the collector's target for the CLI (unless GOGC is set): the CPU backend keeps the
// weights and a program's planned buffers in the Go heap, so Go's default of 100% would let
// garbage (a step's transient buffers) grow as large as the model before each collection. Measured
// on one QLoRA step of a Llama-3.2-1B-shaped f16 checkpoint (bench/peakmem.sh), before the step's
// temporaries came from pools: peak resident 4.12 GB at 20% against 4.33 GB at 100%, for 1.07 GB of
// weights and 1.77 GB of planned buffers (3.14 GB at 20% since). The collector does not scan those
// buffers (they hold no pointers); its cost on step time is not measured yet.
const gcPercent = 20

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lathe:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "lathe",
		Short:         "Fine-tune and serve LLM adapters (LoRA, QLoRA, IA3) on any GPU or the CPU",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			for _, release := range mainThreadReleases {
				release(cmd.CommandPath())
			}
		},
	}
	root.AddCommand(
		newDevicesCmd(),
		newInitModelCmd(),
		newInitDataCmd(),
		newConvertCmd(),
		newTokenizeCmd(),
		newTrainCmd(),
		newEvalCmd(),
		newGenerateCmd(),
		newMergeCmd(),
		newHyperCmd(),
		newCombineCmd(),
		newQuantizeCmd(),
		newDequantizeCmd(),
	)
	// serve, rank, export and bench are left out of the lite build (-tags lathe_lite).
	root.AddCommand(fullCommands()...)
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are the commands of optional parts of the build (studio: not with -tags nostudio).
var extraCommands []func() *cobra.Command

// mainThreadReleases undo, before a command runs (given its path, "lathe train"), the lock of the
// main goroutine to the main OS thread that a linked package takes in its init, unless that
// command needs it: GLFW (studio) and MPI (train, in a build with -tags mpi). Kept locked, every
// other command ran its kernels up to half as fast (studio.ReleaseMainThread).
var mainThreadReleases []func(path string)

// printJSON writes v as one line of JSON: the machine-readable last line of a command.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // token strings such as <s> stay readable
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return nil
}
