package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text; like Hugging Face's decode_chain, each stage maps a
// list of strings to a list of strings and the final list is concatenated.
type decoder interface {
	decodeChain(toks []string) []string
}

type seqDecoder []decoder

func (q seqDecoder) decodeChain(toks []string) []string {
	for _, d := range q {
		toks = d.decodeChain(toks)
	}
	return toks
}

type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(toks []string) []string {
	var buf []byte
	for _, t := range toks {
		buf = byteLevelDecodeToken(buf, t)
	}
	return []string{utf8Lossy(buf)}
}

// byteFallbackDecoder turns runs of <0xNN> tokens into the UTF-8 text they spell, or one U+FFFD
// per byte when the run is not valid UTF-8.
type byteFallbackDecoder struct{}

func parseByteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	return byte(v), err == nil
}

func (byteFallbackDecoder) decodeChain(toks []string) []string {
	out := make([]string, 0, len(toks))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range toks {
		if b, ok := parseByteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type metaspaceDecoder struct {
	repl   rune
	scheme prependScheme
}

func (m metaspaceDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		var b strings.Builder
		for _, r := range t {
			if r == m.repl {
				if i == 0 && m.scheme != prependNever {
					continue
				}
				r = ' '
			}
			b.WriteRune(r)
		}
		out[i] = b.String()
	}
	return out
}

type replaceDecoder struct {
	pat     *pattern
	content string
}

func (r replaceDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		s, err := r.pat.replaceAll(t, r.content)
		if err != nil {
			s = t // only a regex timeout fails, and none is set
		}
		out[i] = s
	}
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decodeChain(toks []string) []string { return []string{strings.Join(toks, "")} }

// stripDecoder removes up to start leading and stop trailing copies of content from each token.
type stripDecoder struct {
	content     rune
	start, stop int
}

func (s stripDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		rs := []rune(t)
		lo := 0
		for lo < len(rs) && lo < s.start && rs[lo] == s.content {
			lo++
		}
		hi := len(rs)
		for k := 0; hi > lo && k < s.stop && rs[hi-1] == s.content; k++ {
			hi--
		}
		out[i] = string(rs[lo:hi])
	}
	return out
}

// bpeDecoder replaces the end-of-word suffix with a space, except on the last token.
type bpeDecoder struct{ suffix string }

func (d bpeDecoder) decodeChain(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		rep := " "
		if i == len(toks)-1 {
			rep = ""
		}
		out[i] = strings.ReplaceAll(t, d.suffix, rep)
	}
	return out
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	var h struct {
		Type          string
		Decoders      []json.RawMessage
		Pattern       json.RawMessage
		Content       json.RawMessage
		Start, Stop   int
		Suffix        *string
		Replacement   string
		PrependScheme *string `json:"prepend_scheme"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	switch h.Type {
	case "Sequence":
		var q seqDecoder
		for _, r := range h.Decoders {
			d, err := parseDecoder(r)
			if err != nil {
				return nil, err
			}
			if d != nil {
				q = append(q, d)
			}
		}
		return q, nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Metaspace":
		m, err := parseMetaspace(raw)
		if err != nil {
			return nil, fmt.Errorf("decoder %w", err)
		}
		r, _ := utf8.DecodeRuneInString(m.repl)
		return metaspaceDecoder{r, m.scheme}, nil
	case "Replace":
		p, err := parsePattern(h.Pattern)
		if err != nil {
			return nil, fmt.Errorf("decoder Replace: %w", err)
		}
		var content string
		if err := json.Unmarshal(h.Content, &content); err != nil {
			return nil, fmt.Errorf("decoder Replace: content: %w", err)
		}
		return replaceDecoder{p, content}, nil
	case "Strip":
		var content string
		if err := json.Unmarshal(h.Content, &content); err != nil || utf8.RuneCountInString(content) != 1 {
			return nil, fmt.Errorf("decoder Strip: content must be one character")
		}
		r, _ := utf8.DecodeRuneInString(content)
		return stripDecoder{r, h.Start, h.Stop}, nil
	case "BPEDecoder":
		suffix := "</w>"
		if h.Suffix != nil {
			suffix = *h.Suffix
		}
		return bpeDecoder{suffix}, nil
	}
	return nil, fmt.Errorf("unsupported decoder type %q", h.Type)
}
