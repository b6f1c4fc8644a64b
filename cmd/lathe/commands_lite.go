//go:build lathe_lite

package main

import "github.com/spf13/cobra"

// fullCommands is empty in the lite build (-tags lathe_lite): serve, rank, export and bench
// are left out (go build ./cmd/lathe builds them).
func fullCommands() []*cobra.Command { return nil }
