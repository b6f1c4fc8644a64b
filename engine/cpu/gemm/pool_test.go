package gemm

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/quant"
)

// Every index runs exactly once, whether the call gets the pool or (busy: nested calls, other
// goroutines calling at the same time) starts goroutines of its own.
func TestParallelEachIndexOnce(t *testing.T) {
	const callers, calls, n, inner = 4, 50, 37, 5
	var wg sync.WaitGroup
	counts := make([][]int32, callers)
	for c := range callers {
		counts[c] = make([]int32, calls*n*inner)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for call := range calls {
				parallel(n, 3, func(i int) {
					parallel(inner, 2, func(k int) {
						counts[c][(call*n+i)*inner+k]++ // each index once: no two writers
					})
				})
			}
		}()
	}
	wg.Wait()
	for c := range callers {
		for i, v := range counts[c] {
			require.EqualValues(t, 1, v, "caller %d index %d", c, i)
		}
	}
}

// The AVX-512 GEMV of whole 128-code groups (one row of x, k a multiple of 128) matches the plain
// Go path for blocksizes 64 (scales read in place) and 128 and 256 (repeated per half), with β
// both 0 (y holding NaN, never read) and not, over a row count that is no multiple of the pool's
// chunks.
func TestGemv4Groups128MatchPlain(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, bs := range []int{64, 128, 256} {
		for _, dims := range [][2]int{{75, 384}, {1, 128}, {203, 256}} {
			n, k := dims[0], dims[1]
			packed, absmax := randQuant4(r, n, k, bs)
			x := randn(r, k)
			y0 := randn(r, n)
			for _, beta := range []float32{0, 0.5} {
				run := func(isa ISA) []float32 {
					useISA(t, isa)
					y := append([]float32(nil), y0...)
					if beta == 0 {
						for i := range y {
							y[i] = float32(math.NaN())
						}
					}
					MatMul4(false, 1, n, k, x, packed, absmax, bs, &quant.NF4Code, beta, y)
					return y
				}
				ref := run(ISAGo)
				for _, isa := range isas(t) {
					got := run(isa)
					for i := range got {
						require.InDelta(t, ref[i], got[i], 1e-4*(1+math.Abs(float64(ref[i]))), "bs=%d n=%d k=%d β=%v %s [%d]", bs, n, k, beta, isa, i)
					}
				}
			}
		}
	}
}
