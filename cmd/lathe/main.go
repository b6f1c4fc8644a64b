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

	"github.com/spf13/cobra"
)

func main() {
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
		newCombineCmd(),
		newQuantizeCmd(),
		newDequantizeCmd(),
	)
	// serve, rank, export and bench are left out of the lite build (-tags lathe_lite).
	root.AddCommand(fullCommands()...)
	return root
}

// printJSON writes v as one line of JSON: the machine-readable last line of a command.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // token strings such as <s> stay readable
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return nil
}
