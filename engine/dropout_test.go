package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDropoutMaskRateAndDeterminism(t *testing.T) {
	const n = 200000
	for _, p := range []float32{0.1, 0.5} {
		kept := 0
		same, sameSalt := 0, 0
		for i := uint32(0); i < n; i++ {
			if DropoutKeep(7, 1, i, p) {
				kept++
			}
			if DropoutKeep(7, 1, i, p) == DropoutKeep(8, 1, i, p) {
				same++
			}
			if DropoutKeep(7, 1, i, p) == DropoutKeep(7, 2, i, p) {
				sameSalt++
			}
		}
		require.InDelta(t, 1-float64(p), float64(kept)/n, 0.005, "keep rate for p=%v", p)
		// Independent masks agree on a fraction p² + (1−p)² of the elements.
		agree := float64(p*p + (1-p)*(1-p))
		require.InDelta(t, agree, float64(same)/n, 0.01, "another seed gives an independent mask")
		require.InDelta(t, agree, float64(sameSalt)/n, 0.01, "another salt gives an independent mask")
	}
	require.True(t, DropoutKeep(3, 5, 17, 0), "p=0 keeps everything")
}
