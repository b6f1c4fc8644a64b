package dist

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLocalSumsOverRanks: every rank gets the sum, over several rounds; a rank whose vector has
// another length fails the round on every rank.
func TestLocalSumsOverRanks(t *testing.T) {
	const n = 3
	comms := Local(n)
	out := make([][]float32, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 4 {
				buf := []float32{float32(r + 1), float32(10 * round), -0.5}
				if errs[r] = comms[r].AllReduceSum(buf); errs[r] != nil {
					return
				}
				out[r] = buf
			}
		}()
	}
	wg.Wait()
	for r := range n {
		require.NoError(t, errs[r])
		require.Equal(t, r, comms[r].Rank())
		require.Equal(t, n, comms[r].Size())
		require.Equal(t, []float32{6, 90, -1.5}, out[r])
	}

	comms = Local(2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = comms[r].AllReduceSum(make([]float32, 2+r))
		}()
	}
	wg.Wait()
	// Either rank may be the one that finds the mismatch; both report it, naming both lengths.
	for r := range 2 {
		require.Error(t, errs[r])
		require.Regexp(t, `rank [01] sent [23] values, rank [01] sent [23]$`, errs[r].Error())
		require.Contains(t, errs[r].Error(), "2")
		require.Contains(t, errs[r].Error(), "3")
	}
}

func TestSingleIsRankZeroOfOne(t *testing.T) {
	buf := []float32{1.5, -2}
	require.NoError(t, Single{}.AllReduceSum(buf))
	require.Equal(t, []float32{1.5, -2}, buf)
	require.Equal(t, 0, Single{}.Rank())
	require.Equal(t, 1, Single{}.Size())
}
