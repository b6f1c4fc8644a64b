package train

import (
	"errors"
	"fmt"
)

// RNG is a small deterministic generator (SplitMix64) whose whole state is two numbers, so that a
// checkpoint saves and restores it exactly. Its sequence is fixed by this code, not by the Go
// release. The zero value is usable.
type RNG struct {
	Seed  uint64 `json:"seed"`
	State uint64 `json:"state"`
}

// NewRNG returns a generator seeded with seed.
func NewRNG(seed uint64) RNG { return RNG{Seed: seed, State: seed} }

// Uint64 returns the next value.
func (r *RNG) Uint64() uint64 {
	r.State += 0x9E3779B97F4A7C15
	z := r.State
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// Intn returns a uniform value in [0, n); n must be positive.
func (r *RNG) Intn(n int) int {
	// Rejection keeps the result exactly uniform.
	bound := uint64(n)
	limit := -bound % bound // = 2^64 mod n
	for {
		x := r.Uint64()
		if x >= limit {
			return int(x % bound)
		}
	}
}

// permutation is a Fisher-Yates shuffle of 0..n-1 drawn from (seed, stream).
func permutation(n int, seed, stream uint64) []int {
	r := NewRNG(seed ^ (stream+1)*0xD1B54A32D192ED03)
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := r.Intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// DataPosition is where a Batcher reads next: the epoch, the index into that epoch's shuffled order,
// and the token offset inside that example. Saving it in a checkpoint and passing it to Seek makes
// a resumed run see exactly the batches the interrupted run would have seen.
type DataPosition struct {
	Epoch  int `json:"epoch"`
	Index  int `json:"index"`
	Offset int `json:"offset"`
}

// Batch is batch rows of seq tokens each, row-major ([batch, seq] flattened).
type Batch struct {
	// Rows and Seq are the batch's shape.
	Rows, Seq int
	// IDs are the input tokens.
	IDs []int32
	// Targets[t] is the token position t must predict, IgnoreIndex where there is no loss: at
	// masked labels and where the next token starts another example.
	Targets []int32
	// Pos are RoPE position ids: 0 at the start of each packed example and of each row (a row that
	// continues an example cannot see its beginning, so it starts the positions afresh).
	Pos []int32
	// Starts[t] is the index, in t's row, of the first token of t's example (or of the row, where
	// the example began in an earlier row): attention sees only that example, from there on.
	Starts []int32
	// Tokens counts the targets that carry loss (the denominator of a mean loss).
	Tokens int
	// Start is the data position of the batch's first token.
	Start DataPosition
}

// Batcher packs examples into fixed-size batches for training: the examples of an epoch, in an
// order shuffled by (seed, epoch), are concatenated into one token stream (each already ends with
// EOS) and cut into rows of Seq tokens, with no padding. The stream runs on into the next epoch,
// reshuffled, so every batch is full; an example longer than a row continues in the next row.
// The target of each token is the next token's label, so rows lose no token: the last target of a
// row is the first token of the next row.
//
// Packed examples are isolated, as padding-free packing (TRL's padding_free, flash-attention's
// varlen) does: position ids restart per example so RoPE sees each example from 0, Starts keeps
// attention causal within each example, and targets never cross an example boundary.
type Batcher struct {
	examples   []Example
	rows, seq  int
	seed       uint64
	pos        DataPosition
	perm       []int
	permEpoch  int
	epochToken int64
}

// NewBatcher returns a Batcher over examples at position zero. Batches have rows×seq tokens.
func NewBatcher(examples []Example, rows, seq int, seed uint64) (*Batcher, error) {
	if len(examples) == 0 {
		return nil, errors.New("batcher: no examples")
	}
	if rows <= 0 || seq <= 0 {
		return nil, fmt.Errorf("batcher: batch %d × seq %d must be positive", rows, seq)
	}
	b := &Batcher{examples: examples, rows: rows, seq: seq, seed: seed, permEpoch: -1}
	for i, ex := range examples {
		if len(ex.IDs) == 0 || len(ex.IDs) != len(ex.Labels) {
			return nil, fmt.Errorf("batcher: example %d has %d ids and %d labels", i, len(ex.IDs), len(ex.Labels))
		}
		b.epochToken += int64(len(ex.IDs))
	}
	return b, nil
}

// TokensPerEpoch is the length of one epoch's token stream.
func (b *Batcher) TokensPerEpoch() int64 { return b.epochToken }

// StepsPerEpoch is how many batches one epoch's tokens fill, rounded up.
func (b *Batcher) StepsPerEpoch() int {
	per := int64(b.rows * b.seq)
	return int((b.epochToken + per - 1) / per)
}

// Position returns where the next batch starts.
func (b *Batcher) Position() DataPosition { return b.pos }

// Seek moves to a position saved from Position (by this or an identical Batcher).
func (b *Batcher) Seek(p DataPosition) error {
	if p.Epoch < 0 || p.Index < 0 || p.Index >= len(b.examples) || p.Offset < 0 {
		return fmt.Errorf("batcher: position %+v is outside %d examples", p, len(b.examples))
	}
	if n := len(b.example(p.Epoch, p.Index).IDs); p.Offset >= n {
		return fmt.Errorf("batcher: position %+v is past the example's %d tokens", p, n)
	}
	b.pos = p
	return nil
}

// example returns the example at index i of the given epoch's order.
func (b *Batcher) example(epoch, i int) *Example {
	if b.permEpoch != epoch {
		b.perm = permutation(len(b.examples), b.seed, uint64(epoch))
		b.permEpoch = epoch
	}
	return &b.examples[b.perm[i]]
}

// Next returns the next batch and advances the position past it.
func (b *Batcher) Next() Batch {
	n := b.rows * b.seq
	bt := Batch{Rows: b.rows, Seq: b.seq, IDs: make([]int32, n), Targets: make([]int32, n),
		Pos: make([]int32, n), Start: b.pos}
	for i := 0; i < n; i++ {
		ex := b.example(b.pos.Epoch, b.pos.Index)
		bt.IDs[i] = ex.IDs[b.pos.Offset]
		if i%b.seq != 0 && b.pos.Offset != 0 {
			bt.Pos[i] = bt.Pos[i-1] + 1
		}
		b.pos.Offset++
		if b.pos.Offset == len(ex.IDs) {
			b.pos.Offset = 0
			if b.pos.Index++; b.pos.Index == len(b.examples) {
				b.pos.Index = 0
				b.pos.Epoch++
			}
			bt.Targets[i] = IgnoreIndex // the next token belongs to another example
		} else {
			bt.Targets[i] = ex.Labels[b.pos.Offset]
		}
		if bt.Targets[i] != IgnoreIndex {
			bt.Tokens++
		}
	}
	bt.Starts = docStarts(bt.Pos, b.seq)
	return bt
}

// docStarts derives each token's document start in its row from the position ids, which restart
// at 0 at every document and every row.
func docStarts(pos []int32, seq int) []int32 {
	st := make([]int32, len(pos))
	for i, p := range pos {
		st[i] = int32(i%seq) - p
	}
	return st
}

// EvalBatches packs examples in their given order, once, into batches of rows×seq tokens for
// evaluation, isolated like the Batcher's. An example that does not fit in what is left of a row
// starts the next row, so every example is cut into rows exactly as it would be if evaluated
// alone (an example longer than a row takes rows of its own, its tail sharing the last): the
// loss over a file is the token-weighted mean of its examples' losses alone, at any seq. Padding
// (id 0, target IgnoreIndex, a document of its own) fills the rest.
func EvalBatches(examples []Example, rows, seq int) ([]Batch, error) {
	if rows <= 0 || seq <= 0 {
		return nil, fmt.Errorf("eval batches: batch %d × seq %d must be positive", rows, seq)
	}
	var out []Batch
	n := rows * seq
	var cur *Batch
	i := 0
	for ei, ex := range examples {
		if len(ex.IDs) != len(ex.Labels) {
			return nil, fmt.Errorf("eval batches: example %d has %d ids and %d labels", ei, len(ex.IDs), len(ex.Labels))
		}
		if cur != nil && i%seq != 0 && len(ex.IDs) > seq-i%seq {
			i += seq - i%seq // pad to the next row
		}
		for off := range ex.IDs {
			if cur == nil || i == n {
				out = append(out, Batch{Rows: rows, Seq: seq, IDs: make([]int32, n), Targets: make([]int32, n),
					Pos: make([]int32, n), Start: DataPosition{Index: ei, Offset: off}})
				cur, i = &out[len(out)-1], 0
				for k := range cur.Targets {
					cur.Targets[k] = IgnoreIndex
				}
			}
			cur.IDs[i] = ex.IDs[off]
			if i%seq != 0 && off != 0 {
				cur.Pos[i] = cur.Pos[i-1] + 1
			}
			if off+1 < len(ex.IDs) {
				cur.Targets[i] = ex.Labels[off+1]
				if cur.Targets[i] != IgnoreIndex {
					cur.Tokens++
				}
			}
			i++
		}
	}
	if len(out) == 0 {
		return nil, errors.New("eval batches: no tokens")
	}
	for k := range out {
		out[k].Starts = docStarts(out[k].Pos, seq)
	}
	return out, nil
}
