package hyper

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// Family is one generated task: a one-line description and the function it names, from a list of
// words to the answer.
type Family struct {
	Name        string
	Description string
	// Words is the vocabulary its inputs draw from.
	Words []string
	Do    func(words []string) []string
}

var (
	plainWords = []string{"cat", "dog", "sun", "ball", "tree", "bird", "fish", "hat", "box", "cup", "car", "bed", "toy", "cake"}
	rhymes     = map[string]string{"cat": "hat", "dog": "log", "sun": "fun", "ball": "wall", "tree": "bee", "fish": "dish",
		"box": "fox", "cup": "pup", "car": "star", "bed": "red", "toy": "boy", "cake": "lake"}
	opposites = map[string]string{"big": "small", "hot": "cold", "up": "down", "happy": "sad", "day": "night", "good": "bad",
		"fast": "slow", "old": "new", "in": "out", "yes": "no"}
)

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func mapped(m map[string]string) func([]string) []string {
	return func(w []string) []string {
		out := make([]string, len(w))
		for i, x := range w {
			out[i] = m[x]
		}
		return out
	}
}

// Families is the generated task family: list and word-mapping tasks over simple words.
func Families() []Family {
	return []Family{
		{"reverse", "reverse the list of words", plainWords, func(w []string) []string {
			out := make([]string, len(w))
			for i, x := range w {
				out[len(w)-1-i] = x
			}
			return out
		}},
		{"copy", "copy the list of words", plainWords, func(w []string) []string { return append([]string(nil), w...) }},
		{"first", "say the first word of the list", plainWords, func(w []string) []string { return w[:1] }},
		{"last", "say the last word of the list", plainWords, func(w []string) []string { return w[len(w)-1:] }},
		{"twice", "repeat each word twice", plainWords, func(w []string) []string {
			var out []string
			for _, x := range w {
				out = append(out, x, x)
			}
			return out
		}},
		{"sort", "sort the words in alphabetical order", plainWords, func(w []string) []string {
			out := append([]string(nil), w...)
			sort.Strings(out)
			return out
		}},
		{"rhyme", "map each word to its rhyme", keys(rhymes), mapped(rhymes)},
		{"opposite", "map each word to its opposite", keys(opposites), mapped(opposites)},
	}
}

// Example is one prompt and its answer.
type Example struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
}

// Examples draws n examples of f: lists of 2 to 4 distinct words.
func (f Family) Examples(seed uint64, n int) []Example {
	r := rand.New(rand.NewPCG(seed, 0x7a5c))
	out := make([]Example, n)
	for i := range out {
		k := 2 + r.IntN(3)
		perm := r.Perm(len(f.Words))[:k]
		w := make([]string, k)
		for j, p := range perm {
			w[j] = f.Words[p]
		}
		out[i] = Example{Prompt: "Input: " + strings.Join(w, " ") + "\nOutput:", Completion: " " + strings.Join(f.Do(w), " ")}
	}
	return out
}

// WriteFamilies writes, under dir, each family's examples (NAME.jsonl, n each, and NAME-eval.jsonl,
// nEval others) and tasks.jsonl listing every family but heldOut, which is left for evaluation.
func WriteFamilies(dir string, seed uint64, n, nEval int, heldOut string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	var tasks []byte
	found := false
	for i, f := range Families() {
		for _, part := range []struct {
			name string
			ex   []Example
		}{{f.Name + ".jsonl", f.Examples(seed+uint64(2*i), n)}, {f.Name + "-eval.jsonl", f.Examples(seed+uint64(2*i+1)+1000, nEval)}} {
			var b []byte
			for _, e := range part.ex {
				raw, _ := json.Marshal(e)
				b = append(append(b, raw...), '\n')
			}
			if err := atomicfile.WriteFile(filepath.Join(dir, part.name), b, 0o644); err != nil {
				return fmt.Errorf("tasks: %w", err)
			}
		}
		if f.Name == heldOut {
			found = true
			continue
		}
		raw, _ := json.Marshal(Task{Description: f.Description, Data: f.Name + ".jsonl"})
		tasks = append(append(tasks, raw...), '\n')
	}
	if !found && heldOut != "" {
		return fmt.Errorf("tasks: no family %q to hold out", heldOut)
	}
	return atomicfile.WriteFile(filepath.Join(dir, "tasks.jsonl"), tasks, 0o644)
}
