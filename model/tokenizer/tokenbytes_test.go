package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A token's raw bytes: a byte-fallback token's byte and a byte-level token's bytes, even where
// they are only part of a character (their text is then U+FFFD).
func TestTokenBytes(t *testing.T) {
	sp := build(t, spFixture(nil, m{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}, llama2Decoder), nil)
	b, err := sp.TokenBytes(3 + 0xC3)
	require.NoError(t, err)
	require.Equal(t, []byte{0xC3}, b)
	b, err = sp.TokenBytes(260) // "c"
	require.NoError(t, err)
	require.Equal(t, []byte("c"), b)
	_, err = sp.TokenBytes(100000)
	require.ErrorContains(t, err, "not in the vocabulary")

	fx := gpt2Fixture([]string{"h e"})
	vocab := fx["model"].(m)["vocab"].(m)
	vocab[string(byteToRune[0xF0])+string(byteToRune[0x9F])] = 17 // the first two bytes of an emoji
	bl := build(t, fx, nil)
	text, err := bl.Decode([]int{17}, false)
	require.NoError(t, err)
	require.Contains(t, text, "\uFFFD")
	b, err = bl.TokenBytes(17)
	require.NoError(t, err)
	require.Equal(t, []byte{0xF0, 0x9F}, b)
	b, err = bl.TokenBytes(12) // "Ġw"
	require.NoError(t, err)
	require.Equal(t, []byte(" w"), b)
	b, err = bl.TokenBytes(16) // special: its text
	require.NoError(t, err)
	require.Equal(t, []byte("<|endoftext|>"), b)
}
