package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFastMatchersAgreeWithRegexp2 checks the hand-written scanners against regexp2 on random
// strings drawn from an alphabet that covers every class the patterns distinguish.
func TestFastMatchersAgreeWithRegexp2(t *testing.T) {
	alphabet := []string{"a", "Z", "é", "中", "ſ", "K", "S", "s", "t", "r", "e", "v", "m", "l", "L", "d", "D",
		"0", "7", "½", "٣", "Ⅻ", " ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u2028", "\u3000", "'", "'", "!", ".",
		"😀", "👍🏽", "\u200d", "-", "_", "\x00", "\u0301", "’"}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, expr := range []string{gpt2Pattern, llama3SplitPattern, qwen2SplitPattern} {
		re, err := compileRegex(expr)
		require.NoError(t, err)
		fast := fastMatcher(expr)
		require.NotNil(t, fast)
		for n := 0; n < 3000; n++ {
			var b strings.Builder
			for k := rng.IntN(24); k >= 0; k-- {
				b.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			s := b.String()
			want, err := regexMatches(re, s)
			require.NoError(t, err)
			got, err := fast(s)
			require.NoError(t, err)
			if len(want) == 0 {
				want = [][2]int{}
			}
			require.Equal(t, want, got, "pattern %q input %q", expr, s)
		}
	}
}
