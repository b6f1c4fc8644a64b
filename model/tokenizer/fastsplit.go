package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Hand-written matchers for the pre-tokenization regexes that the supported models use. regexp2
// is a general backtracking engine and spends most of the encode time on them; these scanners
// reproduce its leftmost-first, greedy-with-backtracking result for the exact patterns below
// (fast_test.go checks them against regexp2 on random text) and run several times faster.

// Qwen2's pattern differs from Llama 3's only in taking one digit at a time.
const (
	llama3SplitPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2SplitPattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// fastMatcher returns a scanner for a known pattern, or nil.
func fastMatcher(expr string) func(string) ([][2]int, error) {
	switch expr {
	case gpt2Pattern:
		return func(s string) ([][2]int, error) { return scanAll(s, gpt2At), nil }
	case llama3SplitPattern:
		return func(s string) ([][2]int, error) {
			return scanAll(s, func(rs []rune, i int) int { return llama3At(rs, i, 3) }), nil
		}
	case qwen2SplitPattern:
		return func(s string) ([][2]int, error) {
			return scanAll(s, func(rs []rune, i int) int { return llama3At(rs, i, 1) }), nil
		}
	}
	return nil
}

// scanAll applies at at every position; at returns the match length in runes at i (0: none).
func scanAll(s string, at func([]rune, int) int) [][2]int {
	rs := make([]rune, 0, len(s))
	offs := make([]int, 0, len(s)+1)
	for i, r := range s {
		rs = append(rs, r)
		offs = append(offs, i)
	}
	offs = append(offs, len(s))
	out := make([][2]int, 0, len(rs)/4+1)
	for i := 0; i < len(rs); {
		n := at(rs, i)
		if n == 0 {
			i++
			continue
		}
		out = append(out, [2]int{offs[i], offs[i+n]})
		i += n
	}
	return out
}

func isL(r rune) bool {
	if r < utf8.RuneSelf {
		return (r|0x20) >= 'a' && (r|0x20) <= 'z'
	}
	return unicode.IsLetter(r)
}

func isN(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return unicode.IsNumber(r)
}

func isS(r rune) bool { return unicode.IsSpace(r) }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }

func run(rs []rune, i int, f func(rune) bool) int {
	j := i
	for j < len(rs) && f(rs[j]) {
		j++
	}
	return j - i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i, case-insensitively when fold is set.
func contraction(rs []rune, i int, fold bool) int {
	if rs[i] != '\'' || i+1 >= len(rs) {
		return 0
	}
	lc := func(k int) rune {
		if k >= len(rs) {
			return 0
		}
		if fold {
			return unicode.ToLower(rs[k])
		}
		return rs[k]
	}
	switch lc(i + 1) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if lc(i+2) == 'e' {
			return 3
		}
	case 'l':
		if lc(i+2) == 'l' {
			return 3
		}
	}
	return 0
}

// wsTail handles \s+(?!\S)|\s+ for a whitespace run of length n at i: a run that is followed by
// a non-space gives up its last character to the next match, unless it is only one character.
func wsTail(rs []rune, i, n int) int {
	if i+n == len(rs) || n == 1 {
		return n
	}
	return n - 1
}

// gpt2At: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func gpt2At(rs []rune, i int) int {
	if n := contraction(rs, i, false); n > 0 {
		return n
	}
	sp := 0
	if rs[i] == ' ' && i+1 < len(rs) {
		sp = 1
	}
	for _, f := range []func(rune) bool{isL, isN, isOther} {
		if n := run(rs, i+sp, f); n > 0 {
			return sp + n
		}
		if n := run(rs, i, f); n > 0 {
			return n
		}
	}
	if n := run(rs, i, isS); n > 0 {
		return wsTail(rs, i, n)
	}
	return 0
}

// llama3At: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func llama3At(rs []rune, i, maxDigits int) int {
	if n := contraction(rs, i, true); n > 0 {
		return n
	}
	r := rs[i]
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(r) {
		return run(rs, i, isL)
	}
	if r != '\r' && r != '\n' && !isN(r) && i+1 < len(rs) && isL(rs[i+1]) {
		return 1 + run(rs, i+1, isL)
	}
	// \p{N}{1,maxDigits}
	if isN(r) {
		return min(run(rs, i, isN), maxDigits)
	}
	// ' '?[^\s\p{L}\p{N}]+[\r\n]*
	start := i
	if r == ' ' && i+1 < len(rs) && isOther(rs[i+1]) {
		start = i + 1
	}
	if n := run(rs, start, isOther); n > 0 {
		end := start + n
		end += run(rs, end, func(c rune) bool { return c == '\r' || c == '\n' })
		return end - i
	}
	// \s*[\r\n]+ : the whitespace run up to and including its last line break.
	n := run(rs, i, isS)
	if n == 0 {
		return 0
	}
	for k := i + n - 1; k >= i; k-- {
		if rs[k] == '\r' || rs[k] == '\n' {
			return k + 1 - i
		}
	}
	return wsTail(rs, i, n)
}
