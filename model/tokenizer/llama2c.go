package tokenizer

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"unicode/utf8"
)

// llama2cToken is one entry of a llama2.c tokenizer.bin.
type llama2cToken struct {
	piece string // as stored: spaces, not "▁"
	score float32
}

// readLlama2C parses llama2.c's tokenizer.bin: int32 max_token_length, then per token a float32
// score, an int32 byte length and the bytes, all little-endian, until the end of the file.
func readLlama2C(path string) ([]llama2cToken, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 4 {
		return nil, fmt.Errorf("%s: too short for a llama2.c tokenizer", path)
	}
	maxLen := int(int32(binary.LittleEndian.Uint32(data)))
	var toks []llama2cToken
	for off := 4; off < len(data); {
		if len(data)-off < 8 {
			return nil, fmt.Errorf("%s: token %d: truncated header", path, len(toks))
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 || n > maxLen || n > len(data)-off {
			return nil, fmt.Errorf("%s: token %d: bad length %d (max_token_length %d)", path, len(toks), n, maxLen)
		}
		toks = append(toks, llama2cToken{string(data[off : off+n]), score})
		off += n
	}
	return toks, nil
}

// FromLlama2C converts llama2.c's tokenizer.bin at path into an equivalent Hugging Face
// tokenizer.json in the Llama 2 layout: normalizer Prepend "▁" + Replace " "→"▁", no
// pre-tokenizer, BPE with byte fallback whose merges come from the scores as Hugging Face's
// SentencePiece converter derives them, a BOS-adding post-processor, and the Llama 2 decoder.
// Ids 0, 1, 2 become <unk>, <s>, </s>; ids 3..258 must be the byte tokens <0x00>..<0xFF>.
func FromLlama2C(path string) ([]byte, error) {
	toks, err := readLlama2C(path)
	if err != nil {
		return nil, fmt.Errorf("llama2.c tokenizer: %w", err)
	}
	if len(toks) < 259 {
		return nil, fmt.Errorf("llama2.c tokenizer %s: %d tokens, want at least 259 (3 specials + 256 bytes)", path, len(toks))
	}
	pieces := make([]string, len(toks))
	scores := make([]float32, len(toks))
	vocab := make(map[string]int, len(toks))
	for id, t := range toks {
		p := strings.ReplaceAll(t.piece, " ", "▁")
		switch {
		case id == 0:
			p = "<unk>"
		case id == 1:
			p = "<s>"
		case id == 2:
			p = "</s>"
		case id < 259:
			if want := fmt.Sprintf("<0x%02X>", id-3); p != want {
				return nil, fmt.Errorf("llama2.c tokenizer %s: id %d is %q, want byte token %s", path, id, t.piece, want)
			}
		}
		if !utf8.ValidString(p) {
			return nil, fmt.Errorf("llama2.c tokenizer %s: id %d is not valid UTF-8", path, id)
		}
		if prev, dup := vocab[p]; dup {
			return nil, fmt.Errorf("llama2.c tokenizer %s: ids %d and %d are both %q", path, prev, id, p)
		}
		pieces[id], scores[id], vocab[p] = p, t.score, id
	}

	unk := "<unk>"
	out := jsonTokenizer{
		Version: "1.0",
		AddedTokens: []jsonAddedToken{
			{ID: 0, Content: "<unk>", Special: true},
			{ID: 1, Content: "<s>", Special: true},
			{ID: 2, Content: "</s>", Special: true},
		},
		Normalizer: obj{"type": "Sequence", "normalizers": []obj{
			{"type": "Prepend", "prepend": "▁"},
			{"type": "Replace", "pattern": obj{"String": " "}, "content": "▁"},
		}},
		PostProcessor: bosTemplate("<s>", 1),
		Decoder: obj{"type": "Sequence", "decoders": []obj{
			{"type": "Replace", "pattern": obj{"String": "▁"}, "content": " "},
			{"type": "ByteFallback"},
			{"type": "Fuse"},
			{"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
		Model: jsonBPE{
			Type: "BPE", UnkToken: &unk, FuseUnk: true, ByteFallback: true,
			Vocab: vocab, Merges: mergesJSON(scoreMerges(pieces, scores, vocab)),
		},
	}
	return json.MarshalIndent(out, "", " ")
}

// scoreMerges derives BPE merges from SentencePiece scores as transformers'
// SentencePieceExtractor does: every piece that splits into two pieces yields a merge (splits of
// one piece ordered by the ids of their halves), then all merges are stably sorted by the merged
// piece's score, highest first.
func scoreMerges(pieces []string, scores []float32, vocab map[string]int) [][2]string {
	type cand struct {
		l, r  string
		score float32
	}
	var all []cand
	for id, p := range pieces {
		var local []cand
		for i := range p {
			if i == 0 {
				continue
			}
			l, r := p[:i], p[i:]
			if _, ok := vocab[l]; !ok {
				continue
			}
			if _, ok := vocab[r]; !ok {
				continue
			}
			local = append(local, cand{l, r, scores[id]})
		}
		sort.SliceStable(local, func(i, j int) bool {
			if vocab[local[i].l] != vocab[local[j].l] {
				return vocab[local[i].l] < vocab[local[j].l]
			}
			return vocab[local[i].r] < vocab[local[j].r]
		})
		all = append(all, local...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	merges := make([][2]string, len(all))
	for i, c := range all {
		merges[i] = [2]string{c.l, c.r}
	}
	return merges
}

// LoadLlama2C converts llama2.c's tokenizer.bin at path (see FromLlama2C) and loads the result,
// with BOS <s> (1), EOS </s> (2) and UNK <unk> (0).
func LoadLlama2C(path string) (*Tokenizer, error) {
	data, err := FromLlama2C(path)
	if err != nil {
		return nil, err
	}
	cfg := []byte(`{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}`)
	t, err := FromJSON(data, cfg)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return t, nil
}
