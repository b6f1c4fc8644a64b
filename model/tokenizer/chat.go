package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Message is one turn of a conversation for ApplyChatTemplate.
type Message struct {
	Role    string // "system", "user" or "assistant" (what the template expects)
	Content string
}

type compiledTemplate struct {
	tmpl *chatProgram
	err  error
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

func (t *Tokenizer) chatTemplate(name string) (*chatProgram, error) {
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
	out, err := tmpl.render(map[string]any{
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
	if raised != nil {
		return "", fmt.Errorf("chat template: raise_exception: %w", raised)
	}
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// recoverTo turns a panic of the template engine into an error, so that a bad template from a
// model folder cannot crash the caller.
func recoverTo(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("template engine panicked: %v", r)
	}
}
