package tokenizer

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var trainCorpus = []string{
	"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
	"One day, she saw a big red ball. She wanted to play with it.",
	"Lily and her mom went to the park. They played with the ball all day.",
	"The sun was shining and the birds were singing.\nLily was happy.",
}

func TestTrainByteLevelBPERoundTrip(t *testing.T) {
	data, err := TrainByteLevelBPE(trainCorpus, 330, nil)
	require.NoError(t, err)
	again, err := TrainByteLevelBPE(trainCorpus, 330, nil)
	require.NoError(t, err)
	require.Equal(t, string(data), string(again), "training must be deterministic")

	tk, err := FromJSON(data, nil)
	require.NoError(t, err)
	require.Equal(t, 330, tk.VocabSize())
	require.Equal(t, 0, tk.BOS())
	require.Equal(t, 1, tk.EOS())
	require.True(t, tk.IsSpecial(0))

	for _, s := range append([]string{
		"",
		"Once upon a time",
		"héllo wörld — ünïcödé\n\n\ttabs   and  spaces ",
		"emoji 😀👍🏽 and 中文字符, العربية",
		"ends with newline\n",
		"Lily</s><s>special in the middle",
		"\x00\x01 control bytes \u2028",
	}, trainCorpus...) {
		ids, err := tk.Encode(s, true)
		require.NoError(t, err)
		if s != "" {
			require.Equal(t, 0, ids[0], "BOS first")
		}
		out, err := tk.Decode(ids, true)
		require.NoError(t, err)
		if !strings.Contains(s, "<s>") {
			require.Equal(t, s, out)
		}
		out, err = tk.Decode(ids[1:], false)
		require.NoError(t, err)
		require.Equal(t, s, out)
	}
	// Learned merges compress the training text well below one token per byte.
	ids, err := tk.Encode(trainCorpus[0], false)
	require.NoError(t, err)
	require.Less(t, len(ids), len(trainCorpus[0])/2)
	// Specials are never split.
	ids, err = tk.Encode("a</s>b", false)
	require.NoError(t, err)
	require.Contains(t, ids, 1)
}

func TestTrainByteLevelBPEOptions(t *testing.T) {
	data, err := TrainByteLevelBPE(trainCorpus, 300, []string{"<|bos|>", "<|eos|>", "<|pad|>"})
	require.NoError(t, err)
	tk, err := FromJSON(data, nil)
	require.NoError(t, err)
	require.Equal(t, 300, tk.VocabSize())
	require.Equal(t, 0, tk.BOS())
	require.Equal(t, 2, tk.PAD())
	ids, err := tk.Encode("hi", true)
	require.NoError(t, err)
	require.Equal(t, 0, ids[0])

	// A tiny corpus runs out of pairs before the requested size.
	data, err = TrainByteLevelBPE([]string{"abab"}, 1000, nil)
	require.NoError(t, err)
	tk, err = FromJSON(data, nil)
	require.NoError(t, err)
	require.Equal(t, 2+256+2, tk.VocabSize()) // "ab", then "abab"
	ids, err = tk.Encode("abab", false)
	require.NoError(t, err)
	require.Len(t, ids, 1)

	_, err = TrainByteLevelBPE(trainCorpus, 100, nil)
	require.ErrorContains(t, err, "vocab size")
	_, err = TrainByteLevelBPE(trainCorpus, 300, []string{"<s>", "<s>"})
	require.ErrorContains(t, err, "duplicate")
}

func TestConcurrentEncode(t *testing.T) {
	data, err := TrainByteLevelBPE(trainCorpus, 320, nil)
	require.NoError(t, err)
	tk, err := FromJSON(data, nil)
	require.NoError(t, err)
	want, err := tk.Encode(strings.Join(trainCorpus, " "), true)
	require.NoError(t, err)
	type result struct {
		ids []int
		err error
	}
	done := make(chan result)
	for range 4 {
		go func() {
			ids, err := tk.Encode(strings.Join(trainCorpus, " "), true)
			done <- result{ids, err}
		}()
	}
	for range 4 {
		r := <-done
		require.NoError(t, r.err)
		require.Equal(t, want, r.ids)
	}
}

func BenchmarkEncode(b *testing.B) {
	data, err := TrainByteLevelBPE(trainCorpus, 330, nil)
	require.NoError(b, err)
	tk, err := FromJSON(data, nil)
	require.NoError(b, err)
	text := strings.Repeat(strings.Join(trainCorpus, "\n")+"\n", 200)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for range b.N {
		if _, err := tk.Encode(text, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTrainByteLevelBPE(b *testing.B) {
	corpus := make([]string, 0, 100*len(trainCorpus))
	for i := range 100 {
		for _, s := range trainCorpus {
			corpus = append(corpus, strings.Repeat(s[i%7:], 1+i%3))
		}
	}
	for range b.N {
		if _, err := TrainByteLevelBPE(corpus, 512, nil); err != nil {
			b.Fatal(err)
		}
	}
}
