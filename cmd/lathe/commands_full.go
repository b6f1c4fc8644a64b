//go:build !lathe_lite

package main

import "github.com/spf13/cobra"

// fullCommands are the commands the lite build (-tags lathe_lite) leaves out: with them go the
// HTTP server, the chart packages and GGUF, which take most of a cold build's time.
func fullCommands() []*cobra.Command {
	return []*cobra.Command{newServeCmd(), newRankCmd(), newExportCmd(), newBenchCmd()}
}
