package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// TrainByteLevelBPE learns a GPT-2-style byte-level BPE tokenizer from corpus and returns its
// tokenizer.json. The vocabulary is the special tokens (ids 0..len(special)-1; default "<s>",
// "</s>"), then the 256 byte tokens, then one token per learned merge. Merges are learned
// greedily: the most frequent adjacent pair within GPT-2 pre-tokens wins, ties going to the
// smallest (left id, right id), so the result is deterministic. Training stops at vocabSize or
// when no pair is left. special[0] is the BOS that the post-processor adds; loading the result
// without a tokenizer_config.json takes "</s>"-style names as EOS.
func TrainByteLevelBPE(corpus []string, vocabSize int, special []string) ([]byte, error) {
	if len(special) == 0 {
		special = []string{"<s>", "</s>"}
	}
	base := len(special) + 256
	if vocabSize < base {
		return nil, fmt.Errorf("train bpe: vocab size %d is below %d specials + 256 bytes", vocabSize, len(special))
	}
	vocab := make(map[string]int, vocabSize)
	toks := make([]string, 0, vocabSize)
	added := make([]jsonAddedToken, 0, len(special))
	var entries []matchEntry
	for _, s := range special {
		if s == "" || !utf8.ValidString(s) {
			return nil, fmt.Errorf("train bpe: invalid special token %q", s)
		}
		if _, dup := vocab[s]; dup {
			return nil, fmt.Errorf("train bpe: duplicate special token %q", s)
		}
		vocab[s] = len(toks)
		added = append(added, jsonAddedToken{ID: len(toks), Content: s, Special: true})
		entries = append(entries, matchEntry{s, &addedToken{ID: len(toks), Content: s}})
		toks = append(toks, s)
	}
	for b := 0; b < 256; b++ {
		s := string(byteToRune[b])
		if _, dup := vocab[s]; dup {
			return nil, fmt.Errorf("train bpe: special token %q collides with a byte token", s)
		}
		vocab[s] = len(toks)
		toks = append(toks, s)
	}

	words, err := trainingWords(corpus, newAddedMatcher(entries))
	if err != nil {
		return nil, fmt.Errorf("train bpe: %w", err)
	}
	merges := learnMerges(words, &toks, vocab, vocabSize)

	out := jsonTokenizer{
		Version:       "1.0",
		AddedTokens:   added,
		PreTokenizer:  obj{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		PostProcessor: bosTemplate(special[0], 0),
		Decoder:       obj{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		Model:         jsonBPE{Type: "BPE", Vocab: vocab, Merges: mergesJSON(merges)},
	}
	return json.MarshalIndent(out, "", " ")
}

// trainWord is a distinct pre-token: its current symbols and how often it occurs.
type trainWord struct {
	syms []int
	freq int
}

// trainingWords pre-tokenizes the corpus as the trained tokenizer will (specials split out, GPT-2
// regex, byte-level map) and counts distinct words as sequences of byte-token ids.
func trainingWords(corpus []string, specials *addedMatcher) ([]trainWord, error) {
	pat, err := regexPattern(gpt2Pattern)
	if err != nil {
		return nil, err
	}
	pre := byteLevelPre{pat: pat}
	index := map[string]int{}
	var words []trainWord
	nSpecial := 0
	if specials != nil {
		for _, c := range specials.byFirst {
			nSpecial += len(c)
		}
	}
	for i, text := range corpus {
		if !utf8.ValidString(text) {
			return nil, fmt.Errorf("corpus[%d] is not valid UTF-8", i)
		}
		for _, seg := range specials.split(text) {
			if seg.tok != nil || seg.text == "" {
				continue
			}
			pieces, err := pre.split([]piece{{text: seg.text}})
			if err != nil {
				return nil, err
			}
			for _, p := range pieces {
				if k, ok := index[p.text]; ok {
					words[k].freq++
					continue
				}
				var syms []int
				for _, r := range p.text {
					syms = append(syms, nSpecial+int(runeToByte[r]))
				}
				index[p.text] = len(words)
				words = append(words, trainWord{syms, 1})
			}
		}
	}
	return words, nil
}

// learnMerges runs the greedy merge loop. Pair counts are kept up to date incrementally (only
// the words that hold the merged pair are recounted) and the best pair comes from a max-heap
// with lazy deletion: an entry whose count is no longer current is skipped when popped.
func learnMerges(words []trainWord, toks *[]string, vocab map[string]int, vocabSize int) [][2]string {
	counts := map[uint64]int{}
	where := map[uint64]map[int]struct{}{}
	changed := map[uint64]struct{}{}
	addPairs := func(w int, sign int) {
		s := words[w].syms
		for i := 0; i+1 < len(s); i++ {
			k := pairKey(s[i], s[i+1])
			counts[k] += sign * words[w].freq
			changed[k] = struct{}{}
			if sign > 0 {
				if where[k] == nil {
					where[k] = map[int]struct{}{}
				}
				where[k][w] = struct{}{}
			}
		}
	}
	for w := range words {
		addPairs(w, 1)
	}
	h := &pairHeap{}
	flush := func() {
		for k := range changed {
			if c := counts[k]; c > 0 {
				heap.Push(h, pairCount{k, c})
			} else {
				delete(counts, k)
			}
		}
		clear(changed)
	}
	flush()
	var merges [][2]string
	for len(*toks) < vocabSize && h.Len() > 0 {
		top := heap.Pop(h).(pairCount)
		if counts[top.key] != top.count {
			continue // stale
		}
		best := top.key
		a, b := int(best>>32), int(uint32(best))
		name := (*toks)[a] + (*toks)[b]
		id, ok := vocab[name]
		if !ok {
			id = len(*toks)
			vocab[name] = id
			*toks = append(*toks, name)
		}
		merges = append(merges, [2]string{(*toks)[a], (*toks)[b]})
		for w := range where[best] {
			addPairs(w, -1)
			s := words[w].syms
			out := s[:0]
			for i := 0; i < len(s); i++ {
				if i+1 < len(s) && s[i] == a && s[i+1] == b {
					out = append(out, id)
					i++
				} else {
					out = append(out, s[i])
				}
			}
			words[w].syms = out
			addPairs(w, 1)
		}
		delete(where, best)
		flush()
	}
	return merges
}

type pairCount struct {
	key   uint64 // pairKey(left, right)
	count int
}

// pairHeap pops the highest count first, then the smallest (left id, right id).
type pairHeap []pairCount

func (q pairHeap) Len() int { return len(q) }
func (q pairHeap) Less(i, j int) bool {
	if q[i].count != q[j].count {
		return q[i].count > q[j].count
	}
	return q[i].key < q[j].key
}
func (q pairHeap) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pairHeap) Push(x any)   { *q = append(*q, x.(pairCount)) }
func (q *pairHeap) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
