package cputime

import (
	"runtime"
	"testing"
)

// Work on the CPU advances the count.
func TestSecondsAdvances(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no getrusage")
	}
	t0 := Seconds()
	x := 1.0
	for i := 0; i < 50_000_000; i++ {
		x = x*1.0000001 + 1e-9
	}
	if x == 0 || Seconds() <= t0 {
		t.Fatalf("CPU time did not advance: %v then %v", t0, Seconds())
	}
}
