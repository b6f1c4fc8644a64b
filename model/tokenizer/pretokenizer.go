package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// piece is a pre-token: text plus whether it begins at offset 0 of the original input (Metaspace's
// prepend_scheme "first" needs that).
type piece struct {
	text  string
	first bool
}

// pretokenizer splits pieces into smaller pieces; the model then encodes each piece on its own.
type pretokenizer interface {
	split(in []piece) ([]piece, error)
}

// splitPieces splits every piece at the matches found by find, carrying the first flag only to
// a sub-piece that starts at offset 0.
func splitPieces(in []piece, invert bool, b splitBehavior, find func(string) ([][2]int, error)) ([]piece, error) {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		ms, err := find(p.text)
		if err != nil {
			return nil, err
		}
		for _, sp := range splitSpans(p.text, ms, invert, b) {
			out = append(out, piece{p.text[sp.start:sp.end], p.first && sp.start == 0})
		}
	}
	return out, nil
}

type seqPre []pretokenizer

func (q seqPre) split(in []piece) ([]piece, error) {
	var err error
	for _, p := range q {
		if in, err = p.split(in); err != nil {
			return nil, err
		}
	}
	return in, nil
}

type byteLevelPre struct {
	addPrefixSpace bool
	pat            *pattern // nil when use_regex is false
}

func (bl byteLevelPre) split(in []piece) ([]piece, error) {
	if bl.addPrefixSpace {
		for i := range in {
			if !strings.HasPrefix(in[i].text, " ") {
				in[i].text = " " + in[i].text
			}
		}
	}
	if bl.pat != nil {
		var err error
		if in, err = splitPieces(in, false, splitIsolated, bl.pat.matches); err != nil {
			return nil, err
		}
	}
	for i := range in {
		in[i].text = byteLevelEncode(in[i].text)
	}
	return in, nil
}

type splitPre struct {
	pat      *pattern
	behavior splitBehavior
	invert   bool
}

func (sp splitPre) split(in []piece) ([]piece, error) {
	return splitPieces(in, sp.invert, sp.behavior, sp.pat.matches)
}

type prependScheme int

const (
	prependAlways prependScheme = iota
	prependFirst
	prependNever
)

type metaspacePre struct {
	repl    string
	scheme  prependScheme
	splitOn bool
}

func (m metaspacePre) split(in []piece) ([]piece, error) {
	for i := range in {
		t := strings.ReplaceAll(in[i].text, " ", m.repl)
		if !strings.HasPrefix(t, m.repl) && (m.scheme == prependAlways || (m.scheme == prependFirst && in[i].first)) {
			t = m.repl + t
		}
		in[i].text = t
	}
	if !m.splitOn {
		return in, nil
	}
	lit := &pattern{lit: m.repl}
	return splitPieces(in, false, splitMergedWithNext, lit.matches)
}

type digitsPre struct{ individual bool }

func (d digitsPre) split(in []piece) ([]piece, error) {
	b := splitContiguous
	if d.individual {
		b = splitIsolated
	}
	return splitPieces(in, false, b, func(s string) ([][2]int, error) {
		var ms [][2]int
		for i := 0; i < len(s); i++ {
			if s[i] >= '0' && s[i] <= '9' {
				ms = append(ms, [2]int{i, i + 1})
			}
		}
		return ms, nil
	})
}

func parseMetaspace(raw json.RawMessage) (metaspacePre, error) {
	var h struct {
		Replacement    string
		PrependScheme  *string `json:"prepend_scheme"`
		AddPrefixSpace *bool   `json:"add_prefix_space"`
		Split          *bool
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return metaspacePre{}, fmt.Errorf("Metaspace: %w", err)
	}
	if utf8.RuneCountInString(h.Replacement) != 1 {
		return metaspacePre{}, fmt.Errorf("Metaspace: replacement %q is not one character", h.Replacement)
	}
	m := metaspacePre{repl: h.Replacement, scheme: prependAlways, splitOn: h.Split == nil || *h.Split}
	switch {
	case h.PrependScheme != nil:
		switch *h.PrependScheme {
		case "always":
		case "first":
			m.scheme = prependFirst
		case "never":
			m.scheme = prependNever
		default:
			return m, fmt.Errorf("Metaspace: unsupported prepend_scheme %q", *h.PrependScheme)
		}
	case h.AddPrefixSpace != nil && !*h.AddPrefixSpace:
		// Older files carry only add_prefix_space.
		m.scheme = prependNever
	}
	return m, nil
}

func parsePretokenizer(raw json.RawMessage) (pretokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var h struct {
		Type             string
		Pretokenizers    []json.RawMessage
		AddPrefixSpace   bool  `json:"add_prefix_space"`
		UseRegex         *bool `json:"use_regex"`
		Pattern          json.RawMessage
		Behavior         string
		Invert           bool
		IndividualDigits bool `json:"individual_digits"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch h.Type {
	case "Sequence":
		var q seqPre
		for _, r := range h.Pretokenizers {
			p, err := parsePretokenizer(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				q = append(q, p)
			}
		}
		return q, nil
	case "ByteLevel":
		bl := byteLevelPre{addPrefixSpace: h.AddPrefixSpace}
		if h.UseRegex == nil || *h.UseRegex {
			pat, err := regexPattern(gpt2Pattern)
			if err != nil {
				return nil, err
			}
			bl.pat = pat
		}
		return bl, nil
	case "Split":
		p, err := parsePattern(h.Pattern)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		b, err := parseBehavior(h.Behavior)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		return splitPre{p, b, h.Invert}, nil
	case "Metaspace":
		return parseMetaspace(raw)
	case "Digits":
		return digitsPre{h.IndividualDigits}, nil
	case "WhitespaceSplit":
		re, err := compileRegex(`\s+`)
		if err != nil {
			return nil, err
		}
		return splitPre{&pattern{re: re}, splitRemoved, false}, nil
	case "Whitespace":
		re, err := compileRegex(`\w+|[^\w\s]+`)
		if err != nil {
			return nil, err
		}
		return splitPre{&pattern{re: re}, splitRemoved, true}, nil
	}
	return nil, fmt.Errorf("unsupported pre_tokenizer type %q", h.Type)
}
