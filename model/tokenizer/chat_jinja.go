//go:build !lathe_lite

package tokenizer

import (
	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// chatProgram is a compiled chat template.
type chatProgram struct{ tmpl *exec.Template }

// chatConfig is the Jinja environment transformers renders chat templates with:
// trim_blocks and lstrip_blocks on.
func chatConfig() *config.Config {
	c := config.New()
	c.TrimBlocks = true
	c.LeftStripBlocks = true
	return c
}

func compileChatTemplate(src string) (p *chatProgram, err error) {
	defer recoverTo(&err)
	const root = "/chat_template"
	fs, err := loaders.NewMemoryLoader(map[string]string{root: src})
	if err != nil {
		return nil, err
	}
	tmpl, err := exec.NewTemplate(root, chatConfig(), fs, gonja.DefaultEnvironment)
	if err != nil {
		return nil, err
	}
	return &chatProgram{tmpl}, nil
}

// render executes the template on vars; a panic inside the template engine becomes an error.
func (p *chatProgram) render(vars map[string]any) (out string, err error) {
	defer recoverTo(&err)
	return p.tmpl.ExecuteToString(exec.NewContext(vars))
}
