package kernels

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func refEmbedding(table []float64, ids []int32, dim int) []float64 {
	y := make([]float64, 0, len(ids)*dim)
	for _, id := range ids {
		y = append(y, table[int(id)*dim:int(id+1)*dim]...)
	}
	return y
}

// embedIDs draws n ids from a few values so that most repeat, plus one never-used region of the
// vocabulary (whose gradient rows must come out zero).
func embedIDs(seed uint64, n, vocab int) []int32 {
	r := newRand(seed)
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(r.IntN(vocab / 3))
	}
	ids[n-1] = int32(vocab - 1) // the last id, once
	return ids
}

func TestEmbedding(t *testing.T) {
	const vocab, dim, n = 37, 13, 23
	table := randn(newRand(40), vocab*dim)
	ids := embedIDs(41, n, vocab)
	y := nans(n * dim)
	require.NoError(t, Embedding(y, table, ids, vocab, dim))
	requireClose(t, "y", y, refEmbedding(to64(table), ids, dim), 0)
}

func TestEmbeddingOutOfRange(t *testing.T) {
	const vocab, dim = 37, 13
	table := randn(newRand(42), vocab*dim)
	for _, bad := range []int32{-1, vocab, 1 << 30} {
		ids := []int32{0, 5, bad, 2}
		err := Embedding(nans(len(ids)*dim), table, ids, vocab, dim)
		require.Error(t, err)
		require.ErrorContains(t, err, "id "+strconv.Itoa(int(bad))+" at position 2")
	}
}

func TestEmbeddingBackward(t *testing.T) {
	const vocab, dim, n = 37, 13, 23
	r := newRand(43)
	table, dy := randn(r, vocab*dim), randn(r, n*dim)
	ids := embedIDs(44, n, vocab)
	t64 := to64(table)
	want := fdGrad(t64, func() float64 { return dot(refEmbedding(t64, ids, dim), dy) })
	dtable := nans(vocab * dim)
	EmbeddingBackward(dtable, dy, ids, vocab, dim)
	requireClose(t, "dtable", dtable, want, bwdTol)

	// The sum for a repeated id is exact: a plain float64 sum rounded once.
	for id := range vocab {
		for c := range dim {
			var s float64
			for tk, x := range ids {
				if int(x) == id {
					s += float64(dy[tk*dim+c])
				}
			}
			require.Equal(t, float32(s), dtable[id*dim+c], "id %d col %d", id, c)
		}
	}
}
