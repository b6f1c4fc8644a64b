//go:build !lathe_lite

package model

import "github.com/lathe-ml/lathe/model/gguf"

// ggufFile is an open GGUF model: its tensors and the configuration its metadata gives.
type ggufFile interface {
	tensorSource
	Config() map[string]any
	// RopeFreqFactors are the file's per-dimension RoPE frequency divisors (rope_freqs), or nil.
	RopeFreqFactors() []float64
}

// isGGUF reports whether path names a GGUF file rather than a folder.
func isGGUF(path string) bool { return gguf.IsPath(path) }

func openGGUF(path string) (ggufFile, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	return f, nil
}
