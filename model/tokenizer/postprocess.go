package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// postProcessor adds special tokens around an encoded sequence.
type postProcessor interface {
	process(ids []int) []int
}

type seqPost []postProcessor

func (q seqPost) process(ids []int) []int {
	for _, p := range q {
		ids = p.process(ids)
	}
	return ids
}

// noopPost is ByteLevel's post-processor: it only trims offsets, which ids do not carry.
type noopPost struct{}

func (noopPost) process(ids []int) []int { return ids }

// templatePost is TemplateProcessing's single-sequence template: nil marks the sequence itself.
type templatePost struct{ items [][]int }

func (t templatePost) process(ids []int) []int {
	out := make([]int, 0, len(ids)+4)
	for _, it := range t.items {
		if it == nil {
			out = append(out, ids...)
		} else {
			out = append(out, it...)
		}
	}
	return out
}

func parsePostProcessor(raw json.RawMessage) (postProcessor, error) {
	if isNull(raw) {
		return nil, nil
	}
	var h struct {
		Type          string
		Processors    []json.RawMessage
		Single        json.RawMessage
		SpecialTokens map[string]struct {
			ID  string
			IDs []int
		} `json:"special_tokens"`
		Cls []json.RawMessage
		Sep []json.RawMessage
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	switch h.Type {
	case "Sequence":
		var q seqPost
		for _, r := range h.Processors {
			p, err := parsePostProcessor(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				q = append(q, p)
			}
		}
		return q, nil
	case "ByteLevel":
		return noopPost{}, nil
	case "TemplateProcessing":
		names, err := parseTemplate(h.Single)
		if err != nil {
			return nil, fmt.Errorf("post_processor TemplateProcessing: %w", err)
		}
		var t templatePost
		for _, n := range names {
			if n == "" {
				t.items = append(t.items, nil)
				continue
			}
			st, ok := h.SpecialTokens[n]
			if !ok || len(st.IDs) == 0 {
				return nil, fmt.Errorf("post_processor TemplateProcessing: special token %q has no ids", n)
			}
			t.items = append(t.items, st.IDs)
		}
		return t, nil
	case "BertProcessing", "RobertaProcessing":
		// cls and sep are [token, id]; single is cls A sep.
		cls, err1 := tokenIDPair(h.Cls)
		sep, err2 := tokenIDPair(h.Sep)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("post_processor %s: cls/sep must be [token, id]", h.Type)
		}
		return templatePost{[][]int{{cls}, nil, {sep}}}, nil
	}
	return nil, fmt.Errorf("unsupported post_processor type %q", h.Type)
}

func tokenIDPair(r []json.RawMessage) (int, error) {
	var id int
	if len(r) != 2 {
		return 0, fmt.Errorf("want 2 elements")
	}
	return id, json.Unmarshal(r[1], &id)
}

// parseTemplate reads a template, either the serialized list form
// [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}] or the string form "<s> $A", and
// returns the special token names in order, "" standing for the sequence.
func parseTemplate(raw json.RawMessage) ([]string, error) {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		var names []string
		for _, f := range strings.Fields(str) {
			if strings.HasPrefix(f, "$") {
				seq := strings.SplitN(f[1:], ":", 2)[0]
				if seq != "" && seq != "A" && seq != "0" {
					return nil, fmt.Errorf("single template uses sequence %q", f)
				}
				names = append(names, "")
				continue
			}
			names = append(names, strings.SplitN(f, ":", 2)[0])
		}
		return names, nil
	}
	var items []struct {
		SpecialToken *struct{ ID string }
		Sequence     *struct{ ID string }
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("single template: %w", err)
	}
	var names []string
	for _, it := range items {
		switch {
		case it.SpecialToken != nil:
			names = append(names, it.SpecialToken.ID)
		case it.Sequence != nil:
			if it.Sequence.ID != "A" {
				return nil, fmt.Errorf("single template uses sequence %q", it.Sequence.ID)
			}
			names = append(names, "")
		default:
			return nil, fmt.Errorf("single template: unknown item")
		}
	}
	return names, nil
}
