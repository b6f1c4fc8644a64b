//go:build lathe_lite

package tokenizer

import "errors"

// LoadGGUF is left out of the lite build (-tags lathe_lite), which keeps gguf-parser-go out of
// the binary.
func LoadGGUF(path string) (*Tokenizer, error) {
	return nil, errors.New(path + ": this lathe is the lite build (-tags lathe_lite), which reads no GGUF files")
}
