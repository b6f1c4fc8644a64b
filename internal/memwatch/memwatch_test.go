package memwatch

import (
	"runtime"
	"testing"
	"time"
)

// A 64 MiB allocation held for a few sampling periods shows in the peak heap and the peak RSS.
func TestPeakSeesAnAllocation(t *testing.T) {
	runtime.GC()
	stop := Start()
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = byte(i)
	}
	time.Sleep(20 * time.Millisecond)
	runtime.KeepAlive(b)
	p := stop()
	if p.HeapBytes < 64<<20 {
		t.Fatalf("peak heap %d bytes, want at least 64 MiB", p.HeapBytes)
	}
	if runtime.GOOS == "linux" && p.RSSBytes < 64<<20 {
		t.Fatalf("peak RSS %d bytes, want at least 64 MiB", p.RSSBytes)
	}
}
