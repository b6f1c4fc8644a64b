// Package dist is the communicator of data-parallel training: the ranks of a job launched by
// mpirun (Open MPI or MPICH, through cogentcore.org/lab's base/mpi when lathe is built with
// `-tags mpi`), or one process alone. Only adapter gradients travel: the frozen base is loaded by
// every rank and never sent.
package dist

import (
	"fmt"
	"os"
	"sync"
)

// Comm sums float32 vectors over the ranks of a job. Every rank must call AllReduceSum the same
// number of times with vectors of the same length, in the same order.
type Comm interface {
	// Rank is this process's index, 0 to Size-1; rank 0 alone writes files.
	Rank() int
	// Size is the number of ranks.
	Size() int
	// AllReduceSum replaces buf, on every rank, with the element-wise sum of every rank's buf.
	AllReduceSum(buf []float32) error
}

// Single is the communicator of a process alone: rank 0 of 1, whose sum is its own vector.
type Single struct{}

// Rank is 0.
func (Single) Rank() int { return 0 }

// Size is 1.
func (Single) Size() int { return 1 }

// AllReduceSum leaves buf as it is.
func (Single) AllReduceSum([]float32) error { return nil }

// launcherEnv are the variables Open MPI, MPICH (Hydra) and PMIx set in the processes they
// launch, with the job's size.
var launcherEnv = []string{"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}

// launchedSize returns the job size an MPI launcher set in the environment (0: none did).
func launchedSize() int {
	for _, k := range launcherEnv {
		if v := os.Getenv(k); v != "" {
			var n int
			if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// Local returns the ranks of a job run by goroutines of one process, whose all-reduce meets in
// memory: the same arithmetic as MPI's (ranks' vectors summed in rank order), for tests and for
// checking data parallelism without a launcher. Every rank must run on its own goroutine.
func Local(n int) []Comm {
	g := &localGroup{n: n, bufs: make([][]float32, n)}
	g.cond = sync.NewCond(&g.mu)
	cs := make([]Comm, n)
	for i := range cs {
		cs[i] = &localComm{g: g, rank: i}
	}
	return cs
}

type localGroup struct {
	mu      sync.Mutex
	cond    *sync.Cond
	n       int
	bufs    [][]float32
	arrived int
	gen     int
	sum     []float32
	err     error
}

type localComm struct {
	g    *localGroup
	rank int
}

func (c *localComm) Rank() int { return c.rank }
func (c *localComm) Size() int { return c.g.n }

func (c *localComm) AllReduceSum(buf []float32) error {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	gen := g.gen
	g.bufs[c.rank] = buf
	g.arrived++
	if g.arrived == g.n {
		g.sum, g.err = make([]float32, len(buf)), nil
		for r, b := range g.bufs {
			if len(b) != len(buf) {
				g.err = fmt.Errorf("all-reduce: rank %d sent %d values, rank %d sent %d", r, len(b), c.rank, len(buf))
				break
			}
			for i, v := range b {
				g.sum[i] += v
			}
		}
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
	} else {
		for gen == g.gen {
			g.cond.Wait()
		}
	}
	if g.err != nil {
		return g.err
	}
	copy(buf, g.sum)
	return nil
}
