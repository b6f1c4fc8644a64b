// Package parallel runs independent pieces of host-side work (loading, converting and quantizing
// weights) on every core. The engine's kernels have their own pool (engine/cpu/gemm), made for
// many short calls a second; this is for a few long ones.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// For calls f(i) for every i in [0, n) on up to GOMAXPROCS goroutines, the caller's among them,
// handing the indices out in order as goroutines come free, and returns when all calls have.
func For(n int, f func(i int)) { On(n, runtime.GOMAXPROCS(0), f) }

// On is For on up to w goroutines (the caller's among them; w < 2 runs every call on the caller).
func On(n, w int, f func(i int)) {
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			f(i)
		}
	}
	var wg sync.WaitGroup
	for range min(n, w) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}
