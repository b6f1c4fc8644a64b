package gemm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The worker pool behind parallel. Decoding one token runs over a hundred small parallel kernels
// (a GEMV a linear layer, a few hundred microseconds each); a goroutine started for each waits
// for a parked thread to wake, often tens of microseconds, while the caller works alone (on the
// 1B-shaped decode, 1.5 of 2 cores busy). The pool's workers instead spin for a short while after
// each job, as llama.cpp's threads do, and park only after spinTime without work, so a run of
// kernels keeps every core and an idle process burns nothing.
//
// One job runs on the pool at a time; a parallel call made while it is busy (a nested call, or
// another goroutine's) starts goroutines of its own as before.

// spinTime is how long an idle worker polls for the next job before it parks. Waking a parked
// worker costs more than a small kernel: Llama-3.2-1B's decode attention (8 KV heads over 512
// keys, 43 µs on one core) took 57-71 µs on two when called 0.3-1 ms apart with a 200 µs spin,
// 26-30 µs with this one (up to 0.3 ms apart). An idle process burns at most this long a core.
const spinTime = time.Millisecond

// job is one parallel call on the pool: indices handed out dynamically, up to slots workers
// joining the caller.
type job struct {
	f      func(int)
	n      int64
	next   atomic.Int64
	slots  atomic.Int32 // workers that may still join
	active atomic.Int32 // workers inside run
	closed atomic.Bool  // every index handed out: no worker may join any more
}

func (j *job) run() {
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.f(int(i))
	}
}

var pool struct {
	busy    atomic.Bool
	seq     atomic.Uint64 // bumped for each job published
	current atomic.Pointer[job]
	parked  atomic.Int32
	wake    chan struct{}
	mu      sync.Mutex // guards size
	size    int
}

// poolRun runs f(i) for i in [0, n) on the caller and up to w-1 pool workers, and reports false
// (having run nothing) when the pool is busy.
func poolRun(n, w int, f func(int)) bool {
	if !pool.busy.CompareAndSwap(false, true) {
		return false
	}
	defer pool.busy.Store(false)
	grow(w - 1)
	j := &job{f: f, n: int64(n)}
	j.slots.Store(int32(w - 1))
	pool.current.Store(j)
	pool.seq.Add(1)
	for i := pool.parked.Load(); i > 0; i-- {
		select {
		case pool.wake <- struct{}{}:
		default:
		}
	}
	j.run()
	j.closed.Store(true)
	for spins := 0; j.active.Load() != 0; spins++ {
		if spins%64 == 63 {
			runtime.Gosched()
		}
	}
	pool.current.Store(nil)
	return true
}

// grow starts workers until the pool has at least size.
func grow(size int) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.wake == nil {
		pool.wake = make(chan struct{}, 64)
	}
	for ; pool.size < size && pool.size < cap(pool.wake); pool.size++ {
		go worker(pool.seq.Load())
	}
}

// worker joins each job published after seen: it spins for spinTime after a job, then parks.
func worker(seen uint64) {
	for {
		if !awaitJob(seen) {
			pool.parked.Add(1)
			if pool.seq.Load() == seen { // else a job came between the spin and the park
				<-pool.wake
			}
			pool.parked.Add(-1)
		}
		s := pool.seq.Load()
		if s == seen {
			continue // a stale wake-up
		}
		seen = s
		j := pool.current.Load()
		if j == nil {
			continue
		}
		j.active.Add(1)
		if !j.closed.Load() && j.slots.Add(-1) >= 0 {
			j.run()
		}
		j.active.Add(-1)
	}
}

// awaitJob polls for a job after seen for up to spinTime.
func awaitJob(seen uint64) bool {
	start := time.Now()
	for i := 0; ; i++ {
		if pool.seq.Load() != seen {
			return true
		}
		if i%64 == 63 {
			if time.Since(start) > spinTime {
				return false
			}
			runtime.Gosched()
		}
	}
}
