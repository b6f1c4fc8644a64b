package kernels

import "fmt"

// Embedding gathers rows of a table: y[t] = table[ids[t]].
//
//	y: [len(ids), dim] (output), table: [vocab, dim], ids: [len(ids)]
//
// An id outside [0, vocab) is an error naming the id and its position; every id is checked before
// anything is written. Panics if a slice is shorter than its shape.
func Embedding(y, table []float32, ids []int32, vocab, dim int) error {
	need("Embedding", "y", len(y), len(ids)*dim)
	need("Embedding", "table", len(table), vocab*dim)
	for t, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("embedding: token id %d at position %d is out of range [0, %d)", id, t, vocab)
		}
	}
	parallelFor(len(ids), grain(dim), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			o := int(ids[t]) * dim
			copy(y[t*dim:(t+1)*dim], table[o:o+dim])
		}
	})
	return nil
}

// EmbeddingBackward scatters the output gradient back onto the table: dtable is overwritten with
// zeros and then dtable[ids[t]] += dy[t] for every t.
//
//	dtable: [vocab, dim] (output), dy: [len(ids), dim], ids: [len(ids)]
//
// Tokens are grouped by id (a stable counting sort), and each table row sums its tokens' gradients
// in float64 in token order, so a frequent token's gradient is exact and the result does not
// depend on the number of goroutines. An id out of range is an error (nothing is written); a short
// slice panics.
func EmbeddingBackward(dtable, dy []float32, ids []int32, vocab, dim int) error {
	need("EmbeddingBackward", "dtable", len(dtable), vocab*dim)
	need("EmbeddingBackward", "dy", len(dy), len(ids)*dim)
	// start[id]..start[id+1] indexes the positions of id in order.
	start := make([]int, vocab+1)
	for t, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("embedding backward: token id %d at position %d is out of range [0, %d)", id, t, vocab)
		}
		start[id+1]++
	}
	for i := range vocab {
		start[i+1] += start[i]
	}
	order := make([]int, len(ids))
	next := append([]int(nil), start[:vocab]...)
	for t, id := range ids {
		order[next[id]] = t
		next[id]++
	}
	parallelFor(vocab, grain(dim+dim*len(ids)/max(vocab, 1)), func(lo, hi int) {
		acc := make([]float64, dim)
		for id := lo; id < hi; id++ {
			row := dtable[id*dim : (id+1)*dim]
			ts := order[start[id]:start[id+1]]
			if len(ts) == 0 {
				clear(row)
				continue
			}
			clear(acc)
			for _, t := range ts {
				for c, g := range dy[t*dim : (t+1)*dim] {
					acc[c] += float64(g)
				}
			}
			for c, a := range acc {
				row[c] = float32(a)
			}
		}
	})
	return nil
}
