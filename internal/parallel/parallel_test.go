package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// Every index runs exactly once, on any number of threads, for any count (none included).
func TestForRunsEachIndexOnce(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, threads := range []int{1, 2, 5} {
		runtime.GOMAXPROCS(threads)
		for _, n := range []int{0, 1, 3, 1000} {
			seen := make([]atomic.Int32, n)
			For(n, func(i int) { seen[i].Add(1) })
			for i := range seen {
				if c := seen[i].Load(); c != 1 {
					t.Fatalf("%d threads, n=%d: index %d ran %d times", threads, n, i, c)
				}
			}
		}
	}
}
