package train

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// packExamples makes n examples of varied lengths; ids encode (example, offset), and every third
// label is masked.
func packExamples(n int) []Example {
	exs := make([]Example, n)
	for k := range exs {
		l := 1 + (k*7)%13
		ex := Example{IDs: make([]int32, l), Labels: make([]int32, l)}
		for i := range l {
			ex.IDs[i] = int32(1000*k + i)
			ex.Labels[i] = ex.IDs[i]
			if i == 0 || (k+i)%3 == 0 {
				ex.Labels[i] = IgnoreIndex
			}
		}
		exs[k] = ex
	}
	return exs
}

type streamTok struct {
	id, label int32
	offset    int
	first     bool // the first token of an example
	last      bool // the last token of an example
}

// stream is the reference token stream: epochs of examples in their shuffled orders.
func stream(exs []Example, seed uint64, epochs int) []streamTok {
	var out []streamTok
	for e := range epochs {
		for _, k := range permutation(len(exs), seed, uint64(e)) {
			ex := exs[k]
			for i := range ex.IDs {
				out = append(out, streamTok{ex.IDs[i], ex.Labels[i], i, i == 0, i == len(ex.IDs)-1})
			}
		}
	}
	return out
}

func TestPackingInvariants(t *testing.T) {
	exs := packExamples(9)
	const rows, seq, seed = 3, 8, 42
	b, err := NewBatcher(exs, rows, seq, seed)
	require.NoError(t, err)
	ref := stream(exs, seed, 6)
	n := rows * seq
	epochsSeen := map[int]bool{}
	for s := 0; s < 12; s++ {
		bt := b.Next()
		require.Equal(t, rows, bt.Rows)
		require.Len(t, bt.IDs, n)
		tokens := 0
		for i := range n {
			cur, next := ref[s*n+i], ref[s*n+i+1]
			require.Equal(t, cur.id, bt.IDs[i], "batch %d token %d", s, i)
			// Targets shift by one, and never cross into the next example.
			want := next.label
			if cur.last {
				want = IgnoreIndex
			}
			require.Equal(t, want, bt.Targets[i], "batch %d target %d", s, i)
			if want != IgnoreIndex {
				tokens++
			}
			// Positions restart at each example and each row.
			wantPos := int32(0)
			if i%seq != 0 && !cur.first {
				wantPos = bt.Pos[i-1] + 1
			}
			require.Equal(t, wantPos, bt.Pos[i])
			require.Equal(t, int32(i%seq)-wantPos, bt.Starts[i], "attention starts at the example (or the row)")
			if !cur.first && i%seq != 0 {
				require.LessOrEqual(t, bt.Pos[i], int32(cur.offset))
			}
			if cur.first {
				require.Zero(t, bt.Pos[i])
			}
		}
		require.Equal(t, tokens, bt.Tokens)
		epochsSeen[bt.Start.Epoch] = true
	}
	require.True(t, epochsSeen[1], "the stream runs into a second epoch")
	require.Equal(t, (b.TokensPerEpoch()+int64(n)-1)/int64(n), int64(b.StepsPerEpoch()))

	// Each epoch is a fresh shuffle.
	require.NotEqual(t, permutation(9, seed, 0), permutation(9, seed, 1))
}

func TestBatcherResume(t *testing.T) {
	exs := packExamples(11)
	a, err := NewBatcher(exs, 2, 5, 3)
	require.NoError(t, err)
	for range 7 {
		a.Next()
	}
	pos := a.Position()
	var want []Batch
	for range 9 {
		want = append(want, a.Next())
	}
	b, err := NewBatcher(exs, 2, 5, 3)
	require.NoError(t, err)
	require.NoError(t, b.Seek(pos))
	for i := range want {
		got := b.Next()
		require.Equal(t, want[i], got, "batch %d after resume", i)
	}
	require.Equal(t, a.Position(), b.Position())

	require.Error(t, b.Seek(DataPosition{Index: 11}))
	require.Error(t, b.Seek(DataPosition{Epoch: -1}))
	require.Error(t, b.Seek(DataPosition{Index: 0, Offset: 100}))
	_, err = NewBatcher(nil, 1, 1, 0)
	require.Error(t, err)
	_, err = NewBatcher(exs, 0, 4, 0)
	require.Error(t, err)
	_, err = NewBatcher([]Example{{IDs: []int32{1}}}, 1, 4, 0)
	require.Error(t, err)
}

func TestEvalBatches(t *testing.T) {
	exs := packExamples(7) // lengths 1, 8, 2, 9, 3, 10, 4
	const rows, seq = 2, 7
	bs, err := EvalBatches(exs, rows, seq)
	require.NoError(t, err)
	want := 0
	for _, ex := range exs {
		want += ex.Tokens()
	}
	var ids, targets, pos, starts []int32
	total := 0
	for _, b := range bs {
		require.Len(t, b.Starts, rows*seq)
		total += b.Tokens
		ids, targets = append(ids, b.IDs...), append(targets, b.Targets...)
		pos, starts = append(pos, b.Pos...), append(starts, b.Starts...)
	}
	require.Equal(t, want, total, "every labelled token is a target exactly once")
	// Each example is where it would be alone: within one row, or (longer than a row, or not
	// fitting what is left) from a row's start; the gaps are padding.
	k := 0
	pad := func(i int) {
		require.Equal(t, int32(0), ids[i], "padding at %d", i)
		require.Equal(t, int32(IgnoreIndex), targets[i])
		require.Equal(t, int32(0), pos[i])
		require.Equal(t, int32(i%seq), starts[i], "padding is a document of its own")
	}
	for _, ex := range exs {
		if k%seq != 0 && len(ex.IDs) > seq-k%seq {
			for ; k%seq != 0; k++ {
				pad(k)
			}
		}
		require.Equal(t, ex.IDs, ids[k:k+len(ex.IDs)], "examples in order")
		for off := range ex.IDs {
			i := k + off
			rowStart := i - i%seq
			first := max(k, rowStart) // the example's first token in this row
			require.Equal(t, int32(i-first), pos[i], "positions restart per example and row")
			require.Equal(t, int32(first-rowStart), starts[i], "attention starts at the example")
			if off+1 < len(ex.IDs) {
				require.Equal(t, ex.Labels[off+1], targets[i])
			} else {
				require.Equal(t, int32(IgnoreIndex), targets[i])
			}
		}
		k += len(ex.IDs)
	}
	for ; k < len(ids); k++ {
		pad(k)
	}
	_, err = EvalBatches(nil, 1, 4)
	require.Error(t, err)
}

func TestRNG(t *testing.T) {
	r := NewRNG(1)
	a := r.Uint64()
	saved := r
	b, c := r.Uint64(), r.Uint64()
	require.NotEqual(t, a, b)
	require.Equal(t, b, saved.Uint64(), "a copied state continues identically")
	require.Equal(t, c, saved.Uint64())
	for range 1000 {
		v := r.Intn(7)
		require.True(t, v >= 0 && v < 7)
	}
}
