package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDropoutMaskRateAndDeterminism(t *testing.T) {
	const n = 200000
	for _, p := range []float32{0.1, 0.5} {
		kept := 0
		same := 0
		for i := uint32(0); i < n; i++ {
			if DropoutKeep(7, i, p) {
				kept++
			}
			if DropoutKeep(7, i, p) == DropoutKeep(8, i, p) {
				same++
			}
		}
		require.InDelta(t, 1-float64(p), float64(kept)/n, 0.005, "keep rate for p=%v", p)
		require.Less(t, float64(same)/n, 0.5+float64(p-0.5)*float64(p-0.5)*2+0.01, "another seed gives another mask")
	}
	require.True(t, DropoutKeep(3, 17, 0), "p=0 keeps everything")
}
