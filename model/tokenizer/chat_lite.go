//go:build lathe_lite

package tokenizer

import "errors"

// chatProgram is a compiled chat template; the lite build (-tags lathe_lite) has no template
// engine, which keeps gonja out of the binary.
type chatProgram struct{}

func compileChatTemplate(string) (*chatProgram, error) {
	return nil, errors.New("this lathe is the lite build (-tags lathe_lite), which renders no chat templates")
}

func (*chatProgram) render(map[string]any) (string, error) {
	return "", errors.New("this lathe is the lite build (-tags lathe_lite), which renders no chat templates")
}
