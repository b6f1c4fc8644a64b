package gemm

import (
	"fmt"
	"math"
)

// The cross-entropy loss over a vocabulary of logits, as kernels.CrossEntropy and
// kernels.CrossEntropyBackward compute it in float64, with the vector exponential: on a 2-core
// Zen 5, 256 rows of Llama-3's 128 256 logits took 176 ms forward and 378 ms backward through
// float64 math.Exp, a tenth of a QLoRA step of Llama-3.2-1B.

// lseChunk is how many exponentials ExpSub sums in float32 before the sum goes into float64.
const lseChunk = 2048

// CrossEntropy is kernels.CrossEntropy: the mean over the rows whose target is not ignoreIndex of
// logsumexp(row) − row[target], the count of those rows, and an error for a target out of range.
// Each row's exponentials are float32 (ExpSub, about 2e-7 relative), summed in float32 a chunk
// of lseChunk and in float64 across chunks. A row holding a NaN or +∞ goes through float64
// math.Exp as in kernels, so it still gives a NaN loss (the vector clamps would hide a NaN).
func CrossEntropy(logits []float32, targets []int32, rows, vocab int, ignoreIndex int32) (loss float32, count int, err error) {
	logits, targets = logits[:rows*vocab], targets[:rows]
	for r, t := range targets {
		if t == ignoreIndex {
			continue
		}
		if t < 0 || int(t) >= vocab {
			return 0, 0, fmt.Errorf("cross entropy: target %d at row %d is out of range [0, %d) and not the ignore index %d", t, r, vocab, ignoreIndex)
		}
		count++
	}
	if count == 0 || vocab == 0 {
		return 0, 0, nil
	}
	per := make([]float64, rows)
	parallel(rows, workers(64*rows*vocab), func(r int) {
		if t := targets[r]; t != ignoreIndex {
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

// CrossEntropyBackward is kernels.CrossEntropyBackward: dlogits = dloss·(softmax(row) −
// onehot(target))/count for the counted rows, 0 for the ignored ones (and every row when count
// is 0); a target out of range is an error and nothing is written. dlogits may be logits.
func CrossEntropyBackward(dlogits, logits []float32, targets []int32, rows, vocab int, ignoreIndex int32, dloss float32, count int) error {
	dlogits, logits, targets = dlogits[:rows*vocab], logits[:rows*vocab], targets[:rows]
	for r, t := range targets {
		if t != ignoreIndex && (t < 0 || int(t) >= vocab) {
			return fmt.Errorf("cross-entropy backward: target %d at row %d is out of range [0, %d)", t, r, vocab)
		}
	}
	var g float64 // dloss/count
	if count > 0 {
		g = float64(dloss) / float64(count)
	}
	parallel(rows, workers(64*rows*vocab), func(r int) {
		lr, dr := logits[r*vocab:(r+1)*vocab], dlogits[r*vocab:(r+1)*vocab]
		t := targets[r]
		if t == ignoreIndex || g == 0 {
			clear(dr)
			return
		}
		l := logSumExp(lr)
		if !useAVX512 || math.IsNaN(l) || math.IsInf(l, 0) {
			for c, v := range lr {
				p := math.Exp(float64(v) - l)
				if c == int(t) {
					p--
				}
				dr[c] = float32(g * p)
			}
			return
		}
		// Scaled after the exponentials, not inside them (e^(x−(l−ln g)), one pass less): a
		// power-of-two loss scale then scales the gradient exactly, as the float64 one does.
		ExpSub(dr, lr, float32(l))
		Scale(dr, float32(g))
		dr[t] -= float32(g)
	})
	return nil
}

// logSumExp is log Σ exp(x[i]) (x not empty), as CrossEntropy computes it: float32 exponentials
// with AVX-512, else, and for a row holding a NaN or +∞, float64 math.Exp.
func logSumExp(x []float32) float64 {
	if useAVX512 {
		if q := sumSquares(x); !math.IsNaN(float64(q)) && !math.IsInf(float64(q), 0) {
			m := Max(x)
			var buf [lseChunk]float32
			var s float64
			for c := 0; c < len(x); c += lseChunk {
				s += float64(ExpSub(buf[:], x[c:min(c+lseChunk, len(x))], m))
			}
			return float64(m) + math.Log(s)
		}
	}
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
