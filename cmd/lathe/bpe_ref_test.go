package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// refByteLevelBPE encodes text with a model folder's byte-level BPE tokenizer.json the way GPT-2
// defined it, independently of package tokenizer: the GPT-2 split (without its "\s+(?!\S)"
// look-ahead, so only for text without runs of spaces), bytes as GPT-2's printable characters,
// then the lowest-ranked merge first until none applies. It prepends the BOS id when bos is
// given.
func refByteLevelBPE(t *testing.T, dir, text string, bos int) []int {
	t.Helper()
	require.NotContains(t, text, "  ", "the reference split has no look-ahead")
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	require.NoError(t, err)
	var tj struct {
		Model struct {
			Type   string          `json:"type"`
			Vocab  map[string]int  `json:"vocab"`
			Merges json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	require.NoError(t, json.Unmarshal(raw, &tj))
	require.Equal(t, "BPE", tj.Model.Type)
	var merges []string
	if json.Unmarshal(tj.Model.Merges, &merges) != nil {
		var pairs [][2]string // the newer ["a", "b"] form
		require.NoError(t, json.Unmarshal(tj.Model.Merges, &pairs))
		for _, p := range pairs {
			merges = append(merges, p[0]+" "+p[1])
		}
	}
	rank := map[string]int{}
	for i, m := range merges {
		rank[m] = i
	}
	// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256+n.
	var byteChar [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteChar[b] = rune(b)
		} else {
			byteChar[b] = rune(256 + n)
			n++
		}
	}
	var ids []int
	if bos >= 0 {
		ids = append(ids, bos)
	}
	split := regexp.MustCompile(`'s|'t|'re|'ve|'m|'ll|'d| ?\pL+| ?\pN+| ?[^\s\pL\pN]+|\s+`)
	for _, piece := range split.FindAllString(text, -1) {
		var word []string
		for _, b := range []byte(piece) {
			word = append(word, string(byteChar[b]))
		}
		for len(word) > 1 {
			best, at := -1, -1
			for i := 0; i+1 < len(word); i++ {
				if r, ok := rank[word[i]+" "+word[i+1]]; ok && (best < 0 || r < best) {
					best, at = r, i
				}
			}
			if at < 0 {
				break
			}
			word = append(word[:at], append([]string{word[at] + word[at+1]}, word[at+2:]...)...)
		}
		for _, sym := range word {
			id, ok := tj.Model.Vocab[sym]
			require.True(t, ok, "symbol %q of %q is not in the vocabulary", sym, piece)
			ids = append(ids, id)
		}
	}
	return ids
}

func TestRefByteLevelBPEItself(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	_, _, err := run(t, "init-model", "--out", dir)
	require.NoError(t, err)
	ids := refByteLevelBPE(t, dir, "What does the cow say?", 0)
	require.Equal(t, 0, ids[0])
	require.Less(t, len(ids), len("What does the cow say?"), "merges apply")
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	require.NoError(t, err)
	require.True(t, strings.Contains(string(raw), `"ByteLevel"`), "a byte-level tokenizer")
}
