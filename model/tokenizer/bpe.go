package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// bpe is the Hugging Face BPE model.
type bpe struct {
	vocab        map[string]int
	merges       map[uint64]merge // key: pairKey(left, right)
	unkID        int              // -1: no unk token
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteIDs      [256]int

	mu    sync.RWMutex
	cache map[string][]int
}

type merge struct{ rank, id int }

// cacheLimit bounds the per-word cache; past it, words are encoded without being cached.
const cacheLimit = 1 << 17

// cacheWordLimit keeps very long pre-tokens (runs of whitespace, say) out of the cache.
const cacheWordLimit = 256

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func parseBPE(raw json.RawMessage) (*bpe, error) {
	var h struct {
		Type                    string
		Dropout                 *float64
		UnkToken                *string `json:"unk_token"`
		ContinuingSubwordPrefix *string `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string `json:"end_of_word_suffix"`
		FuseUnk                 bool    `json:"fuse_unk"`
		ByteFallback            bool    `json:"byte_fallback"`
		IgnoreMerges            bool    `json:"ignore_merges"`
		Vocab                   map[string]int
		Merges                  json.RawMessage
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if h.Type != "BPE" && h.Type != "" {
		return nil, fmt.Errorf("unsupported model type %q (only BPE is implemented)", h.Type)
	}
	if h.Dropout != nil && *h.Dropout > 0 {
		return nil, fmt.Errorf("model BPE: dropout %v is not supported (encoding would be random)", *h.Dropout)
	}
	if h.Vocab == nil {
		return nil, fmt.Errorf("model BPE: no vocab")
	}
	m := &bpe{
		vocab:        h.Vocab,
		unkID:        -1,
		fuseUnk:      h.FuseUnk,
		byteFallback: h.ByteFallback,
		ignoreMerges: h.IgnoreMerges,
		cache:        map[string][]int{},
	}
	for tok, id := range h.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("model BPE: token %q has negative id %d", tok, id)
		}
	}
	if h.ContinuingSubwordPrefix != nil {
		m.prefix = *h.ContinuingSubwordPrefix
	}
	if h.EndOfWordSuffix != nil {
		m.suffix = *h.EndOfWordSuffix
	}
	if h.UnkToken != nil {
		id, ok := h.Vocab[*h.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model BPE: unk_token %q is not in the vocab", *h.UnkToken)
		}
		m.unkID = id
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := h.Vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	pairs, err := parseMerges(h.Merges)
	if err != nil {
		return nil, fmt.Errorf("model BPE: %w", err)
	}
	m.merges = make(map[uint64]merge, len(pairs))
	for rank, p := range pairs {
		a, b := p[0], p[1]
		ida, oka := h.Vocab[a]
		idb, okb := h.Vocab[b]
		merged := a + strings.TrimPrefix(b, m.prefix)
		idm, okm := h.Vocab[merged]
		if !oka || !okb || !okm {
			return nil, fmt.Errorf("model BPE: merge %d (%q %q) uses a token that is not in the vocab", rank, a, b)
		}
		// A repeated pair keeps its last rank, as Hugging Face's map construction does.
		m.merges[pairKey(ida, idb)] = merge{rank, idm}
	}
	return m, nil
}

// parseMerges accepts both the "a b" string form and the newer ["a", "b"] pair form. The whole
// list is decoded at once: per-entry decoding made loading Llama 3's 280k merges slow.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d: %q is not two space-separated tokens", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("merges: want a list of \"a b\" strings or [a, b] pairs: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("merge %d: %q is not a pair", i, p)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// tokenize appends the ids of one pre-token to dst, through the per-word cache.
func (m *bpe) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	cacheable := len(word) <= cacheWordLimit
	if cacheable {
		m.mu.RLock()
		ids, ok := m.cache[word]
		m.mu.RUnlock()
		if ok {
			return append(dst, ids...)
		}
	}
	ids := m.mergeWord(word)
	if cacheable {
		m.mu.Lock()
		if len(m.cache) < cacheLimit {
			m.cache[word] = ids
		}
		m.mu.Unlock()
	}
	return append(dst, ids...)
}

type symbol struct {
	id, prev, next int
	dead           bool
}

type mergeItem struct{ rank, pos, id int }

// mergeQueue orders candidate merges by rank, then position, as Hugging Face does.
type mergeQueue []mergeItem

func (q mergeQueue) Len() int { return len(q) }
func (q mergeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q mergeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *mergeQueue) Push(x any)   { *q = append(*q, x.(mergeItem)) }
func (q *mergeQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// mergeWord splits word into initial symbols (characters, byte fallback, unk) and applies the
// merges lowest rank first with a priority queue: O(n log n) per word.
func (m *bpe) mergeWord(word string) []int {
	syms := make([]symbol, 0, len(word))
	add := func(id int) {
		syms = append(syms, symbol{id: id, prev: len(syms) - 1, next: len(syms) + 1})
	}
	pendingUnk := false
	for i, r := range word {
		n := i + len(string(r))
		s := word[i:n]
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if n == len(word) && m.suffix != "" {
			s += m.suffix
		}
		if id, ok := m.vocab[s]; ok {
			if pendingUnk {
				add(m.unkID)
				pendingUnk = false
			}
			add(id)
			continue
		}
		if m.byteFallback && m.hasBytes(s) {
			for j := 0; j < len(s); j++ {
				add(m.byteIDs[s[j]])
			}
			continue
		}
		if m.unkID >= 0 {
			if pendingUnk && !m.fuseUnk {
				add(m.unkID)
			}
			pendingUnk = true
		}
		// Without an unk token Hugging Face drops the character; so do we.
	}
	if pendingUnk {
		add(m.unkID)
	}
	if len(syms) == 0 {
		return []int{}
	}
	syms[len(syms)-1].next = -1

	q := make(mergeQueue, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			q = append(q, mergeItem{mg.rank, i, mg.id})
		}
	}
	heap.Init(&q)
	for q.Len() > 0 {
		top := heap.Pop(&q).(mergeItem)
		cur := &syms[top.pos]
		if cur.dead || cur.next < 0 {
			continue
		}
		right := syms[cur.next]
		if mg, ok := m.merges[pairKey(cur.id, right.id)]; !ok || mg.id != top.id {
			continue // stale entry
		}
		cur.id = top.id
		syms[cur.next].dead = true
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if mg, ok := m.merges[pairKey(syms[cur.prev].id, cur.id)]; ok {
				heap.Push(&q, mergeItem{mg.rank, cur.prev, mg.id})
			}
		}
		if cur.next >= 0 {
			if mg, ok := m.merges[pairKey(cur.id, syms[cur.next].id)]; ok {
				heap.Push(&q, mergeItem{mg.rank, top.pos, mg.id})
			}
		}
	}
	ids := make([]int, 0, len(syms))
	for i := 0; i >= 0; i = syms[i].next {
		ids = append(ids, syms[i].id)
	}
	return ids
}

func (m *bpe) hasBytes(s string) bool {
	for j := 0; j < len(s); j++ {
		if m.byteIDs[s[j]] < 0 {
			return false
		}
	}
	return true
}
