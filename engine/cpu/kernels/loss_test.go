package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

const ignore = -100

// refCE is the mean over counted rows of log Σ exp(logits) − logits[target].
func refCE(logits []float64, targets []int32, rows, vocab int) (float64, int) {
	var sum float64
	count := 0
	for r := 0; r < rows; r++ {
		if targets[r] == ignore {
			continue
		}
		row := logits[r*vocab : (r+1)*vocab]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		z := 0.0
		for _, v := range row {
			z += math.Exp(v - m)
		}
		sum += m + math.Log(z) - row[targets[r]]
		count++
	}
	return sum / float64(count), count
}

// ceCase is 9 rows over a vocabulary of 37 with rows 2 and 6 ignored.
func ceCase(seed uint64) (logits []float32, targets []int32) {
	const rows, vocab = 9, 37
	r := newRand(seed)
	logits = randn(r, rows*vocab)
	for i := range logits {
		logits[i] *= 3
	}
	targets = make([]int32, rows)
	for i := range targets {
		targets[i] = int32(r.IntN(vocab))
	}
	targets[2], targets[6] = ignore, ignore
	return logits, targets
}

func TestCrossEntropy(t *testing.T) {
	const rows, vocab = 9, 37
	logits, targets := ceCase(50)
	loss, count, err := CrossEntropy(logits, targets, rows, vocab, ignore)
	require.NoError(t, err)
	want, wantCount := refCE(to64(logits), targets, rows, vocab)
	require.Equal(t, wantCount, count)
	require.Equal(t, 7, count)
	require.InEpsilon(t, want, float64(loss), fwdTol)
}

func TestCrossEntropyUniform(t *testing.T) {
	const rows, vocab = 4, 37
	logits := make([]float32, rows*vocab)
	for i := range logits {
		logits[i] = 2.5
	}
	targets := []int32{0, 36, ignore, 17}
	loss, count, err := CrossEntropy(logits, targets, rows, vocab, ignore)
	require.NoError(t, err)
	require.Equal(t, 3, count)
	require.InDelta(t, math.Log(vocab), float64(loss), 1e-6)

	d := nans(rows * vocab)
	CrossEntropyBackward(d, logits, targets, rows, vocab, ignore, 1.5, count)
	for r, tg := range targets {
		for c := range vocab {
			want := 0.0
			if tg != ignore {
				want = 1.0 / vocab
				if c == int(tg) {
					want--
				}
				want *= 1.5 / 3
			}
			require.InDelta(t, want, float64(d[r*vocab+c]), 1e-7, "row %d col %d", r, c)
		}
	}
}

func TestCrossEntropyAllIgnored(t *testing.T) {
	const rows, vocab = 3, 37
	logits := randn(newRand(51), rows*vocab)
	targets := []int32{ignore, ignore, ignore}
	loss, count, err := CrossEntropy(logits, targets, rows, vocab, ignore)
	require.NoError(t, err)
	require.Zero(t, count)
	require.Zero(t, loss)
	d := nans(rows * vocab)
	CrossEntropyBackward(d, logits, targets, rows, vocab, ignore, 1, count)
	require.Equal(t, make([]float32, rows*vocab), d)
}

func TestCrossEntropyOutOfRange(t *testing.T) {
	const rows, vocab = 9, 37
	logits, targets := ceCase(52)
	for _, bad := range []int32{vocab, -1, -99} {
		targets[4] = bad
		_, _, err := CrossEntropy(logits, targets, rows, vocab, ignore)
		require.Error(t, err)
		require.ErrorContains(t, err, "at row 4")
	}
}

func TestCrossEntropyBackward(t *testing.T) {
	const rows, vocab, dloss = 9, 37, 0.7
	logits, targets := ceCase(53)
	l64 := to64(logits)
	want := fdGrad(l64, func() float64 {
		l, _ := refCE(l64, targets, rows, vocab)
		return dloss * l
	})
	_, count, err := CrossEntropy(logits, targets, rows, vocab, ignore)
	require.NoError(t, err)
	d := nans(rows * vocab)
	CrossEntropyBackward(d, logits, targets, rows, vocab, ignore, dloss, count)
	requireClose(t, "dlogits", d, want, bwdTol)
	for c := range vocab { // ignored rows are exactly zero
		require.Zero(t, d[2*vocab+c])
		require.Zero(t, d[6*vocab+c])
	}
}
