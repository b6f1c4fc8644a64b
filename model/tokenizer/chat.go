package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Message is one turn of a conversation for ApplyChatTemplate.
type Message struct {
	Role    string // "system", "user" or "assistant" (what the template expects)
	Content string
}

type compiledTemplate struct {
	tmpl *exec.Template
	err  error
}

// chatConfig is the Jinja environment transformers renders chat templates with:
// trim_blocks and lstrip_blocks on.
func chatConfig() *config.Config {
	c := config.New()
	c.TrimBlocks = true
	c.LeftStripBlocks = true
	return c
}

func compileChatTemplate(src string) (tmpl *exec.Template, err error) {
	defer recoverTo(&err)
	const root = "/chat_template"
	fs, err := loaders.NewMemoryLoader(map[string]string{root: src})
	if err != nil {
		return nil, err
	}
	return exec.NewTemplate(root, chatConfig(), fs, gonja.DefaultEnvironment)
}

// HasChatTemplate reports whether the tokenizer carries a default chat template.
func (t *Tokenizer) HasChatTemplate() bool {
	t.chatMu.Lock()
	defer t.chatMu.Unlock()
	_, ok := t.chatTemplates[defaultTemplate]
	return ok
}

// ChatTemplate returns the default chat template's Jinja source, or "" when there is none.
func (t *Tokenizer) ChatTemplate() string {
	t.chatMu.Lock()
	defer t.chatMu.Unlock()
	return t.chatTemplates[defaultTemplate]
}

// SetChatTemplate replaces the default chat template (for models that ship none); it returns
// the parse error, if any, and keeps the old template then.
func (t *Tokenizer) SetChatTemplate(src string) error {
	tmpl, err := compileChatTemplate(src)
	if err != nil {
		return fmt.Errorf("chat template: %w", err)
	}
	t.chatMu.Lock()
	defer t.chatMu.Unlock()
	if t.chatTemplates == nil {
		t.chatTemplates = map[string]string{}
	}
	t.chatTemplates[defaultTemplate] = src
	if t.chatCompiled == nil {
		t.chatCompiled = map[string]*compiledTemplate{}
	}
	t.chatCompiled[defaultTemplate] = &compiledTemplate{tmpl: tmpl}
	return nil
}

func (t *Tokenizer) chatTemplate(name string) (*exec.Template, error) {
	t.chatMu.Lock()
	defer t.chatMu.Unlock()
	if c, ok := t.chatCompiled[name]; ok {
		return c.tmpl, c.err
	}
	src, ok := t.chatTemplates[name]
	if !ok {
		if len(t.chatTemplates) == 0 {
			return nil, errors.New("the tokenizer has no chat template")
		}
		var names []string
		for n := range t.chatTemplates {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no chat template named %q (have %s)", name, strings.Join(names, ", "))
	}
	tmpl, err := compileChatTemplate(src)
	if err != nil {
		err = fmt.Errorf("parse: %w", err)
	}
	if t.chatCompiled == nil {
		t.chatCompiled = map[string]*compiledTemplate{}
	}
	t.chatCompiled[name] = &compiledTemplate{tmpl, err}
	return tmpl, err
}

// ApplyChatTemplate renders the default chat template with the variables transformers passes:
// messages, add_generation_prompt, bos_token, eos_token, unk_token, pad_token and the
// raise_exception function. The result is text; encode it with addSpecial false when the
// template writes the BOS itself.
func (t *Tokenizer) ApplyChatTemplate(messages []Message, addGenerationPrompt bool) (string, error) {
	tmpl, err := t.chatTemplate(defaultTemplate)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	msgs := make([]map[string]any, len(messages))
	for i, m := range messages {
		msgs[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	var raised error
	ctx := exec.NewContext(map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bosTok,
		"eos_token":             t.eosTok,
		"unk_token":             t.unkTok,
		"pad_token":             t.padTok,
		"raise_exception": func(msg string) (any, error) {
			raised = errors.New(msg)
			return nil, raised
		},
	})
	out, err := render(tmpl, ctx)
	if raised != nil {
		return "", fmt.Errorf("chat template: raise_exception: %w", raised)
	}
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// render executes tmpl; a panic inside the template engine becomes an error.
func render(tmpl *exec.Template, ctx *exec.Context) (out string, err error) {
	defer recoverTo(&err)
	return tmpl.ExecuteToString(ctx)
}

// recoverTo turns a panic of the template engine into an error, so that a bad template from a
// model folder cannot crash the caller.
func recoverTo(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("template engine panicked: %v", r)
	}
}
