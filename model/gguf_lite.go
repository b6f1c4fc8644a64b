//go:build lathe_lite

package model

import (
	"errors"
	"path/filepath"
	"strings"
)

// ggufFile is an open GGUF model; the lite build (-tags lathe_lite) reads none, which keeps
// package gguf and gguf-parser-go out of the binary.
type ggufFile interface {
	tensorSource
	Config() map[string]any
	// RopeFreqFactors are the file's per-dimension RoPE frequency divisors (rope_freqs), or nil.
	RopeFreqFactors() []float64
}

// isGGUF reports whether path names a GGUF file rather than a folder, as package gguf does.
func isGGUF(path string) bool { return strings.EqualFold(filepath.Ext(path), ".gguf") }

func openGGUF(path string) (ggufFile, error) {
	return nil, errors.New(path + ": this lathe is the lite build (-tags lathe_lite), which reads no GGUF files")
}
