package kernels

import (
	"fmt"
	"math"
)

// CrossEntropy is the mean next-token loss over the rows whose target is not ignoreIndex:
//
//	loss = (1/count) · Σ_{rows r counted} logsumexp(logits[r]) − logits[r, targets[r]]
//
//	logits: [rows, vocab], targets: [rows]
//
// It returns the loss and count, the number of rows counted. With no row counted the loss is 0
// (torch returns NaN), so a fully masked batch does not poison training. A target that is neither
// ignoreIndex nor in [0, vocab) is an error naming it and its row. Row losses are summed in
// float64 in row order. Panics if a slice is shorter than its shape.
func CrossEntropy(logits []float32, targets []int32, rows, vocab int, ignoreIndex int32) (loss float32, count int, err error) {
	need("CrossEntropy", "logits", len(logits), rows*vocab)
	need("CrossEntropy", "targets", len(targets), rows)
	for r, t := range targets[:rows] {
		if t == ignoreIndex {
			continue
		}
		if t < 0 || int(t) >= vocab {
			return 0, 0, fmt.Errorf("cross entropy: target %d at row %d is out of range [0, %d) and not the ignore index %d", t, r, vocab, ignoreIndex)
		}
		count++
	}
	if count == 0 {
		return 0, 0, nil
	}
	per := make([]float64, rows)
	parallelFor(rows, grain(8*vocab), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			t := targets[r]
			if t == ignoreIndex {
				per[r] = 0
				continue
			}
			lr := logits[r*vocab : (r+1)*vocab]
			per[r] = logSumExp(lr) - float64(lr[t])
		}
	})
	var sum float64
	for _, l := range per {
		sum += l
	}
	return float32(sum / float64(count)), count, nil
}

// logSumExp is log Σ exp(x) in float64, shifted by the maximum.
func logSumExp(x []float32) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s)
}

// CrossEntropyBackward computes dlogits = dloss·(softmax(logits) − onehot(target))/count for the
// counted rows and 0 for the rows whose target is ignoreIndex. count is what CrossEntropy returned;
// with count 0 every gradient is 0.
//
//	dlogits: [rows, vocab] (output; may be logits), logits: [rows, vocab], targets: [rows]
//
// A target out of range is an error (nothing is written); a short slice panics.
func CrossEntropyBackward(dlogits, logits []float32, targets []int32, rows, vocab int, ignoreIndex int32, dloss float32, count int) error {
	need("CrossEntropyBackward", "dlogits", len(dlogits), rows*vocab)
	need("CrossEntropyBackward", "logits", len(logits), rows*vocab)
	need("CrossEntropyBackward", "targets", len(targets), rows)
	for r, t := range targets[:rows] {
		if t != ignoreIndex && (t < 0 || int(t) >= vocab) {
			return fmt.Errorf("cross-entropy backward: target %d at row %d is out of range [0, %d)", t, r, vocab)
		}
	}
	var g float64 // dloss/count
	if count > 0 {
		g = float64(dloss) / float64(count)
	}
	parallelFor(rows, grain(8*vocab), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			lr, dr := logits[r*vocab:(r+1)*vocab], dlogits[r*vocab:(r+1)*vocab]
			t := targets[r]
			if t == ignoreIndex || g == 0 {
				clear(dr)
				continue
			}
			l := logSumExp(lr)
			for c, v := range lr {
				p := math.Exp(float64(v) - l)
				if c == int(t) {
					p--
				}
				dr[c] = float32(g * p)
			}
		}
	})
	return nil
}
