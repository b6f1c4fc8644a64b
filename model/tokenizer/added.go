package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// addedMatcher finds added tokens in text, leftmost first and longest at a position, as Hugging
// Face's Aho-Corasick (LeftmostLongest) matcher does.
type addedMatcher struct {
	byFirst [256][]matchEntry // candidates by first byte, longest first
}

type matchEntry struct {
	pat string
	tok *addedToken
}

func newAddedMatcher(entries []matchEntry) *addedMatcher {
	if len(entries) == 0 {
		return nil
	}
	m := &addedMatcher{}
	for _, e := range entries {
		if e.pat == "" {
			continue
		}
		m.byFirst[e.pat[0]] = append(m.byFirst[e.pat[0]], e)
	}
	for i := range m.byFirst {
		c := m.byFirst[i]
		sort.SliceStable(c, func(a, b int) bool { return len(c[a].pat) > len(c[b].pat) })
	}
	return m
}

// segment is a run of text to encode (tok == nil) or one matched added token.
type segment struct {
	text  string
	start int // byte offset in the string that was split
	tok   *addedToken
}

// split cuts s into text segments and added-token segments, applying single_word, lstrip and
// rstrip like Hugging Face's AddedVocabulary::find_matches.
func (m *addedMatcher) split(s string) []segment {
	if m == nil {
		return []segment{{text: s}}
	}
	var out []segment
	last := 0 // end of the previous match, including stripped spaces
	for i := 0; i < len(s); {
		e, ok := m.matchAt(s, i)
		if !ok {
			i++
			continue
		}
		start, stop := i, i+len(e.pat)
		if e.tok.SingleWord && (endsWithWord(s[:start]) || startsWithWord(s[stop:])) {
			i++
			continue
		}
		if e.tok.LStrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), last)
		}
		if e.tok.RStrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
		}
		if last < start {
			out = append(out, segment{text: s[last:start], start: last})
		}
		out = append(out, segment{text: s[start:stop], start: start, tok: e.tok})
		last, i = stop, stop
	}
	if last < len(s) || len(out) == 0 {
		out = append(out, segment{text: s[last:], start: last})
	}
	return out
}

func (m *addedMatcher) matchAt(s string, i int) (matchEntry, bool) {
	for _, e := range m.byFirst[s[i]] {
		if strings.HasPrefix(s[i:], e.pat) {
			return e, true
		}
	}
	return matchEntry{}, false
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func endsWithWord(s string) bool {
	r, n := utf8.DecodeLastRuneInString(s)
	return n > 0 && isWordRune(r)
}

func startsWithWord(s string) bool {
	r, n := utf8.DecodeRuneInString(s)
	return n > 0 && isWordRune(r)
}
