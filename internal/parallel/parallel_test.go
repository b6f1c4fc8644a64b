package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// every reports whether run called f exactly once for each index of [0, n).
func every(t *testing.T, what string, n int, run func(f func(i int))) {
	t.Helper()
	seen := make([]atomic.Int32, n)
	run(func(i int) { seen[i].Add(1) })
	for i := range seen {
		if c := seen[i].Load(); c != 1 {
			t.Fatalf("%s, n=%d: index %d ran %d times", what, n, i, c)
		}
	}
}

// Every index runs exactly once, on any number of threads or goroutines, for any count (none
// included).
func TestEachIndexOnce(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, n := range []int{0, 1, 3, 1000} {
		for _, threads := range []int{1, 2, 5} {
			runtime.GOMAXPROCS(threads)
			every(t, "For", n, func(f func(int)) { For(n, f) })
		}
		for _, w := range []int{0, 1, 3, 64} {
			every(t, "On", n, func(f func(int)) { On(n, w, f) })
		}
	}
}
