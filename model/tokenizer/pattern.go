package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
)

// pattern is a Hugging Face {"String": ...} or {"Regex": ...} pattern. Regexes run on regexp2,
// a backtracking engine that, like the Oniguruma engine Hugging Face uses, supports lookahead
// and \p{L}-style classes.
type pattern struct {
	lit  string
	re   *regexp2.Regexp
	fast func(string) ([][2]int, error) // hand-written matcher for a known regex, or nil
}

// regexPattern compiles expr, with a fast matcher when it is one of the known pre-tokenizer
// patterns.
func regexPattern(expr string) (*pattern, error) {
	re, err := compileRegex(expr)
	if err != nil {
		return nil, err
	}
	return &pattern{re: re, fast: fastMatcher(expr)}, nil
}

func parsePattern(raw json.RawMessage) (*pattern, error) {
	var p struct {
		String *string
		Regex  *string
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case p.String != nil:
		return &pattern{lit: *p.String}, nil
	case p.Regex != nil:
		return regexPattern(*p.Regex)
	}
	return nil, fmt.Errorf("pattern %s: want String or Regex", raw)
}

func compileRegex(expr string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

// matches returns the byte ranges of the non-overlapping matches of p in s, in order.
func (p *pattern) matches(s string) ([][2]int, error) {
	if p.fast != nil {
		return p.fast(s)
	}
	if p.re == nil {
		if p.lit == "" {
			return nil, nil
		}
		var out [][2]int
		for off := 0; ; {
			i := strings.Index(s[off:], p.lit)
			if i < 0 {
				return out, nil
			}
			out = append(out, [2]int{off + i, off + i + len(p.lit)})
			off += i + len(p.lit)
		}
	}
	return regexMatches(p.re, s)
}

// regexMatches runs re over s and converts regexp2's rune offsets to byte offsets.
func regexMatches(re *regexp2.Regexp, s string) ([][2]int, error) {
	runes := make([]rune, 0, len(s))
	offs := make([]int, 0, len(s)+1)
	for i, r := range s {
		runes = append(runes, r)
		offs = append(offs, i)
	}
	offs = append(offs, len(s))
	var out [][2]int
	m, err := re.FindRunesMatch(runes)
	for ; m != nil && err == nil; m, err = re.FindNextMatch(m) {
		out = append(out, [2]int{offs[m.Index], offs[m.Index+m.Length]})
	}
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", re.String(), err)
	}
	return out, nil
}

// replaceAll replaces every match of p in s with the literal content.
func (p *pattern) replaceAll(s, content string) (string, error) {
	if p.re == nil {
		if p.lit == "" {
			return s, nil
		}
		return strings.ReplaceAll(s, p.lit, content), nil
	}
	ms, err := regexMatches(p.re, s)
	if err != nil || len(ms) == 0 {
		return s, err
	}
	var b strings.Builder
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m[0]])
		b.WriteString(content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String(), nil
}

// splitBehavior is Hugging Face's SplitDelimiterBehavior.
type splitBehavior int

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch strings.ToLower(s) {
	case "removed":
		return splitRemoved, nil
	case "isolated":
		return splitIsolated, nil
	case "merged_with_previous", "mergedwithprevious":
		return splitMergedWithPrevious, nil
	case "merged_with_next", "mergedwithnext":
		return splitMergedWithNext, nil
	case "contiguous":
		return splitContiguous, nil
	}
	return 0, fmt.Errorf("unsupported split behavior %q", s)
}

type span struct {
	start, end int
	match      bool
}

// splitSpans cuts s at the given matches and applies the delimiter behavior exactly as Hugging
// Face's NormalizedString::split does; empty pieces are dropped as PreTokenizedString does.
func splitSpans(s string, ms [][2]int, invert bool, b splitBehavior) []span {
	var spans []span
	prev := 0
	for _, m := range ms {
		if prev != m[0] {
			spans = append(spans, span{prev, m[0], invert})
		}
		spans = append(spans, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev != len(s) || len(s) == 0 {
		spans = append(spans, span{prev, len(s), invert})
	}
	var out []span
	switch b {
	case splitIsolated:
		out = spans
	case splitRemoved:
		for _, sp := range spans {
			if !sp.match {
				out = append(out, sp)
			}
		}
	case splitMergedWithPrevious:
		prevMatch := false
		for _, sp := range spans {
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = sp.end
			} else {
				out = append(out, sp)
			}
			prevMatch = sp.match
		}
	case splitMergedWithNext:
		prevMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = sp.start
			} else {
				out = append(out, sp)
			}
			prevMatch = sp.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case splitContiguous:
		prevMatch := false
		for i, sp := range spans {
			if i > 0 && sp.match == prevMatch {
				out[len(out)-1].end = sp.end
			} else {
				out = append(out, sp)
			}
			prevMatch = sp.match
		}
	}
	kept := out[:0]
	for _, sp := range out {
		if sp.end > sp.start {
			kept = append(kept, sp)
		}
	}
	return kept
}
