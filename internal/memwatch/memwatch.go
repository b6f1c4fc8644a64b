// Package memwatch measures a command's peak memory: the Go heap, sampled every few
// milliseconds, and the process's peak resident set (VmHWM, Linux only), which also counts the
// pages of memory-mapped files that were read.
package memwatch

import (
	"bufio"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peak is what a watch measured.
type Peak struct {
	// HeapBytes is the largest Go heap (live and unswept objects) seen.
	HeapBytes int64 `json:"peak_heap_bytes"`
	// RSSBytes is the process's peak resident set size (0 where unknown).
	RSSBytes int64 `json:"peak_rss_bytes"`
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heap() int64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// Start begins sampling; the returned function stops it and returns the peaks.
func Start() func() Peak {
	var mu sync.Mutex
	peak := heap()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				h := heap()
				mu.Lock()
				peak = max(peak, h)
				mu.Unlock()
			}
		}
	}()
	return func() Peak {
		close(done)
		<-stopped
		mu.Lock()
		defer mu.Unlock()
		return Peak{HeapBytes: max(peak, heap()), RSSBytes: rssPeak()}
	}
}

// rssPeak reads VmHWM from /proc/self/status.
func rssPeak() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
