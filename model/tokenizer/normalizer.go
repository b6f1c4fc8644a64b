package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of input text before pre-tokenization.
type normalizer interface {
	normalize(s string) (string, error)
}

type seqNormalizer []normalizer

func (q seqNormalizer) normalize(s string) (string, error) {
	var err error
	for _, n := range q {
		if s, err = n.normalize(s); err != nil {
			return "", err
		}
	}
	return s, nil
}

// prependNormalizer adds a prefix to non-empty text (Llama 2's "▁" dummy prefix).
type prependNormalizer string

func (p prependNormalizer) normalize(s string) (string, error) {
	if s == "" {
		return s, nil
	}
	return string(p) + s, nil
}

type replaceNormalizer struct {
	pat     *pattern
	content string
}

func (r replaceNormalizer) normalize(s string) (string, error) { return r.pat.replaceAll(s, r.content) }

type formNormalizer struct{ form norm.Form }

func (f formNormalizer) normalize(s string) (string, error) { return f.form.String(s), nil }

type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) (string, error) { return strings.ToLower(s), nil }

type stripNormalizer struct{ left, right bool }

func (st stripNormalizer) normalize(s string) (string, error) {
	if st.left {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	if st.right {
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s, nil
}

func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var h struct {
		Type        string
		Normalizers []json.RawMessage
		Prepend     string
		Pattern     json.RawMessage
		Content     string
		StripLeft   *bool `json:"strip_left"`
		StripRight  *bool `json:"strip_right"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch h.Type {
	case "Sequence":
		var q seqNormalizer
		for _, r := range h.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			if n != nil {
				q = append(q, n)
			}
		}
		return q, nil
	case "Prepend":
		return prependNormalizer(h.Prepend), nil
	case "Replace":
		p, err := parsePattern(h.Pattern)
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		return replaceNormalizer{p, h.Content}, nil
	case "NFC":
		return formNormalizer{norm.NFC}, nil
	case "NFD":
		return formNormalizer{norm.NFD}, nil
	case "NFKC":
		return formNormalizer{norm.NFKC}, nil
	case "NFKD":
		return formNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		return stripNormalizer{h.StripLeft == nil || *h.StripLeft, h.StripRight == nil || *h.StripRight}, nil
	}
	return nil, fmt.Errorf("unsupported normalizer type %q", h.Type)
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}
