package synth

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// The vocabulary of the synthetic stories and facts: small enough for a tiny model to learn.
var (
	animals = []string{"cat", "dog", "cow", "duck", "sheep", "horse", "frog", "owl", "lion", "bee"}
	sounds  = []string{"meow", "woof", "moo", "quack", "baa", "neigh", "ribbit", "hoot", "roar", "buzz"}
	colors  = []string{"red", "blue", "green", "yellow", "brown", "white", "black", "pink"}
	places  = []string{"in the park", "by the river", "on the farm", "under a tree", "near the house", "in the garden"}
	verbs   = []string{"played", "slept", "ran", "sang", "jumped", "ate", "sat"}
	names   = []string{"Lily", "Tom", "Mia", "Ben", "Sue", "Max"}
)

// Corpus returns n short stories drawn from a fixed grammar (deterministic in seed): the text the
// synthetic tokenizer is trained on, and the kind of text the synthetic datasets hold.
func Corpus(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, 0xc0))
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	out := make([]string, n)
	for i := range out {
		a := r.IntN(len(animals))
		out[i] = fmt.Sprintf("Once upon a time, %s had a %s %s. The %s %s %s. It said %s! %s was happy.",
			pick(names), pick(colors), animals[a], animals[a], pick(verbs), pick(places), sounds[a], pick(names))
	}
	return out
}

// Dataset kinds WriteDataset writes.
const (
	// Facts: {"prompt": "What does the cow say?", "completion": " The cow says moo."}: a mapping a
	// model learns in a few dozen steps, so the loss falls far.
	Facts = "facts"
	// Stories: {"text": ...} lines of Corpus.
	Stories = "stories"
	// Chat: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]} with the facts.
	Chat = "chat"
)

// WriteDataset writes n JSONL examples of a kind (Facts, Stories or Chat) to path, atomically.
// The facts come in rounds that ask about every animal once, in a shuffled order, so that every
// fact is trained on equally often and neighbouring lines differ.
func WriteDataset(path, kind string, seed uint64, n int) error {
	r := rand.New(rand.NewPCG(seed, 0xda7a))
	stories := Corpus(seed, n)
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	var round []int
	for i := 0; i < n; i++ {
		if len(round) == 0 {
			round = r.Perm(len(animals))
		}
		a := round[0]
		round = round[1:]
		q := fmt.Sprintf("What does the %s say?", animals[a])
		ans := fmt.Sprintf("The %s says %s.", animals[a], sounds[a])
		var v any
		switch kind {
		case Facts:
			v = map[string]string{"prompt": q, "completion": " " + ans}
		case Stories:
			v = map[string]string{"text": stories[i]}
		case Chat:
			v = map[string]any{"messages": []map[string]string{{"role": "user", "content": q}, {"role": "assistant", "content": ans}}}
		default:
			return fmt.Errorf("dataset: unknown kind %q (facts, stories or chat)", kind)
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	return nil
}

// corpusForTokenizer is the text the synthetic tokenizer learns its merges from: the stories and
// the facts, so that both tokenize compactly.
func corpusForTokenizer() []string {
	c := Corpus(1, 400)
	for a := range animals {
		c = append(c, fmt.Sprintf("What does the %s say? The %s says %s.", animals[a], animals[a], sounds[a]))
	}
	return c
}
