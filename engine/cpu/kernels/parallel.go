package kernels

import (
	"fmt"
	"runtime"
	"sync"
)

// minWork is roughly how many multiply-adds one goroutine should get before splitting pays for
// its start and join (a few microseconds).
const minWork = 1 << 15

// grain is the fewest items one goroutine takes when each item costs about work multiply-adds.
func grain(work int) int {
	if work < 1 {
		work = 1
	}
	g := minWork / work
	if g < 1 {
		g = 1
	}
	return g
}

// parallelFor calls fn over contiguous, disjoint ranges that cover [0, n), each at least grain
// items long (but one), on up to GOMAXPROCS goroutines, and returns when all are done. With one
// range it runs fn on the calling goroutine. fn must write only outputs owned by its range so the
// result does not depend on the split.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	workers := min(runtime.GOMAXPROCS(0), (n+grain-1)/grain)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// colSums writes dst[c] = Σ_r term(r, c) for c < dim, each column summed in float64 in row order
// whatever the split, so the result is deterministic. add(r, lo, hi, acc) adds row r's terms for
// columns [lo, hi) into acc[0:hi-lo].
func colSums(dst []float32, rows, dim int, add func(r, lo, hi int, acc []float64)) {
	parallelFor(dim, grain(rows), func(lo, hi int) {
		acc := make([]float64, hi-lo)
		for r := range rows {
			add(r, lo, hi, acc)
		}
		for c, a := range acc {
			dst[lo+c] = float32(a)
		}
	})
}

// need panics if a slice named name of kernel op holds fewer than n elements.
func need(op, name string, have, n int) {
	if have < n {
		panic(fmt.Sprintf("kernels.%s: %s has %d elements, need %d", op, name, have, n))
	}
}
