//go:build golden

// Golden tests against Hugging Face's own tokenizations. They need vocabulary files that are not
// in the repository or the shared test data, so they are not part of the default test run:
//
//	LATHE_TESTDATA=DIR go test -tags golden ./model/tokenizer/
//
// with DIR/llama2c/tokenizer.bin (llama2.c's Llama 2 tokenizer) and DIR/llama3/encoder.json plus
// DIR/llama3/vocab.bpe.

package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// llama2Golden holds Hugging Face's encodings (add_special_tokens=False) of llama.cpp's tokenizer
// test strings with the Llama 2 tokenizer (llama.cpp models/ggml-vocab-llama-spm.gguf.inp/.out).
var llama2Golden = []struct {
	text string
	ids  []int
}{
	{"ied 4 ½ months", []int{474, 287, 29871, 29946, 29871, 30226, 7378}},
	{"Führer", []int{383, 4000, 261}},
	{"", []int{}},
	{" ", []int{259}},
	{"  ", []int{1678}},
	{"   ", []int{268}},
	{"\t", []int{29871, 12}},
	{"\n", []int{29871, 13}},
	{"\n\n", []int{29871, 13, 13}},
	{"\n\n\n", []int{29871, 13, 13, 13}},
	{"\t\n", []int{29871, 12, 13}},
	{"Hello world", []int{15043, 3186}},
	{" Hello world", []int{29871, 15043, 3186}},
	{"Hello World", []int{15043, 2787}},
	{" Hello World", []int{29871, 15043, 2787}},
	{" Hello World!", []int{29871, 15043, 2787, 29991}},
	{"Hello, world!", []int{15043, 29892, 3186, 29991}},
	{" Hello, world!", []int{29871, 15043, 29892, 3186, 29991}},
	{" this is 🦙.cpp", []int{29871, 445, 338, 29871, 243, 162, 169, 156, 29889, 8223}},
	{"w048 7tuijk dsdfhu", []int{281, 29900, 29946, 29947, 29871, 29955, 9161, 13535, 18031, 2176, 6905}},
	{"нещо на Български", []int{1538, 4851, 665, 1386, 29713, 1305}},
	{"កាន់តែពិសេសអាចខលចេញ", []int{29871, 31849, 31324, 31934, 228, 162, 142, 228, 161, 146, 228, 162, 133, 228, 161, 153, 228, 161, 186, 31708, 228, 162, 132, 31708, 228, 161, 165, 31324, 228, 161, 136, 228, 161, 132, 228, 161, 158, 228, 161, 136, 228, 162, 132, 228, 161, 140}},
	{"🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis concatenated) ✅ (only emoji that has its own token)", []int{29871, 243, 162, 157, 131, 313, 8945, 29897, 29871, 243, 162, 155, 185, 30722, 243, 162, 143, 174, 30598, 313, 20787, 953, 3848, 275, 16125, 630, 29897, 29871, 31681, 313, 6194, 953, 29877, 2397, 393, 756, 967, 1914, 5993, 29897}},
	{"Hello", []int{15043}},
	{" Hello", []int{29871, 15043}},
	{"  Hello", []int{259, 15043}},
	{"   Hello", []int{1678, 15043}},
	{"    Hello", []int{268, 15043}},
	{"    Hello\n    Hello", []int{268, 15043, 13, 1678, 15043}},
	{" (", []int{29871, 313}},
	{"\n =", []int{29871, 13, 353}},
	{"' era", []int{525, 3152}},
	{"Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", []int{15043, 29892, 343, 29915, 497, 29991, 1128, 526, 366, 29871, 243, 162, 155, 132, 1577, 30672, 31522, 30505, 11548, 31041, 30732, 29896, 29941, 29896, 29946, 29896, 29945, 29896, 30408, 30739}},
	{"3", []int{29871, 29941}},
	{"33", []int{29871, 29941, 29941}},
	{"333", []int{29871, 29941, 29941, 29941}},
	{"3333", []int{29871, 29941, 29941, 29941, 29941}},
	{"33333", []int{29871, 29941, 29941, 29941, 29941, 29941}},
	{"333333", []int{29871, 29941, 29941, 29941, 29941, 29941, 29941}},
	{"3333333", []int{29871, 29941, 29941, 29941, 29941, 29941, 29941, 29941}},
	{"33333333", []int{29871, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29941}},
	{"333333333", []int{29871, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29941}},
	{"\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL", []int{29871, 13, 29871, 13, 13, 29871, 13, 13, 13, 29871, 12, 29871, 12, 12, 29871, 12, 13, 259, 13, 1678, 13, 268, 13, 418, 13, 243, 162, 157, 131, 313, 8945, 29897, 29871, 243, 162, 155, 185, 30722, 243, 162, 143, 174, 30598, 313, 20787, 953, 3848, 275, 16125, 630, 29897, 29871, 31681, 29871, 243, 162, 169, 156, 243, 162, 169, 156, 29871, 29941, 29871, 29941, 29941, 29871, 29941, 29941, 29941, 29871, 29941, 29941, 29941, 29941, 29871, 29941, 29941, 29941, 29941, 29941, 29871, 29941, 29941, 29941, 29941, 29941, 29941, 29871, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29871, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29941, 29871, 29941, 29889, 29941, 29871, 29941, 636, 29941, 29871, 29941, 856, 29941, 29871, 31849, 31324, 31934, 228, 162, 142, 228, 161, 146, 228, 162, 133, 228, 161, 153, 228, 161, 186, 31708, 228, 162, 132, 31708, 228, 161, 165, 31324, 228, 161, 136, 243, 162, 155, 132, 1577, 30672, 31522, 30505, 11548, 31041, 30732, 29896, 29941, 29896, 29946, 29896, 29945, 29896, 30408, 30739, 448, 23648, 2751, 25512, 1538, 4851, 665, 1386, 29713, 1305, 14550, 4907, 11120, 16159, 16159, 16159, 15945, 15945, 3045, 636, 6824, 6824, 6824, 8773, 8773, 8773, 306, 29915, 345, 1063, 525, 29873, 1025, 540, 29915, 29879, 727, 29892, 525, 1525, 366, 1854, 29973, 525, 29924, 451, 1854, 306, 29915, 645, 1207, 372, 29892, 525, 29928, 366, 763, 777, 23429, 29973, 1334, 29915, 29963, 29872, 263, 29915, 29880, 29931}},
}

// TestLlama2Golden converts llama2.c's tokenizer.bin (the Llama 2 vocabulary, MIT-licensed in
// karpathy/llama2.c) and checks it against Hugging Face's own output. The file is optional test
// data: the test skips without it, even under LATHE_REQUIRE_TESTDATA.
func TestLlama2Golden(t *testing.T) {
	path, ok := optionalTestdataFile(filepath.Join("llama2c", "tokenizer.bin"))
	if !ok {
		t.Skipf("optional test data %s not found: put llama2.c's tokenizer.bin there to compare with Hugging Face's Llama 2 tokenizer", path)
	}
	tk, err := LoadLlama2C(path)
	require.NoError(t, err)
	require.Equal(t, 32000, tk.VocabSize())
	for _, c := range llama2Golden {
		ids, err := tk.Encode(c.text, false)
		require.NoError(t, err)
		want := c.ids
		if want == nil {
			want = []int{}
		}
		require.Equal(t, want, ids, "text %q", c.text)
		out, err := tk.Decode(ids, false)
		require.NoError(t, err)
		require.Equal(t, c.text, out)
	}
	ids, err := tk.Encode("Hello world", true)
	require.NoError(t, err)
	require.Equal(t, []int{1, 15043, 3186}, ids)
}

// llama3Golden holds Hugging Face's encodings (add_special_tokens=False) of the same strings with
// the Llama 3 tokenizer (llama.cpp models/ggml-vocab-llama-bpe.gguf.inp/.out).
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

// TestLlama3Golden builds Llama 3's tokenizer.json from its GPT-2-format files (encoder.json and
// vocab.bpe, as ollama keeps them for its tests) with the pre-tokenizer, post-processor and
// decoder that Meta's tokenizer.json has, and checks it against Hugging Face's output. The files
// are optional test data: the test skips without them.
func TestLlama3Golden(t *testing.T) {
	encPath, ok1 := optionalTestdataFile(filepath.Join("llama3", "encoder.json"))
	bpePath, ok2 := optionalTestdataFile(filepath.Join("llama3", "vocab.bpe"))
	if !ok1 || !ok2 {
		t.Skipf("optional test data %s and %s not found", encPath, bpePath)
	}
	encJSON, err := os.ReadFile(encPath)
	require.NoError(t, err)
	var vocab map[string]int
	require.NoError(t, json.Unmarshal(encJSON, &vocab))
	bpe, err := os.ReadFile(bpePath)
	require.NoError(t, err)
	var merges []string
	for _, l := range strings.Split(string(bpe), "\n") {
		if l != "" && !strings.HasPrefix(l, "#version") {
			merges = append(merges, l)
		}
	}
	bos := m{"id": 128000, "content": "<|begin_of_text|>", "special": true}
	eos := m{"id": 128001, "content": "<|end_of_text|>", "special": true}
	tk := build(t, m{
		"added_tokens": []m{bos, eos},
		"pre_tokenizer": m{"type": "Sequence", "pretokenizers": []m{
			{"type": "Split", "pattern": m{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": m{"type": "Sequence", "processors": []m{
			{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
			{"type": "TemplateProcessing", "single": "<|begin_of_text|> $A",
				"special_tokens": m{"<|begin_of_text|>": m{"id": "<|begin_of_text|>", "ids": []int{128000}, "tokens": []string{"<|begin_of_text|>"}}}},
		}},
		"decoder": m{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model":   m{"type": "BPE", "ignore_merges": true, "vocab": vocab, "merges": merges},
	}, m{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
	for _, c := range llama3Golden {
		ids, err := tk.Encode(c.text, false)
		require.NoError(t, err)
		want := c.ids
		if want == nil {
			want = []int{}
		}
		require.Equal(t, want, ids, "text %q", c.text)
		out, err := tk.Decode(ids, false)
		require.NoError(t, err)
		require.Equal(t, c.text, out)
	}
	ids, err := tk.Encode("Hello world<|end_of_text|>", true)
	require.NoError(t, err)
	require.Equal(t, []int{128000, 9906, 1917, 128001}, ids)
}
