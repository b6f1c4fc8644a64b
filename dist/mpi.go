//go:build mpi

package dist

import (
	"fmt"
	"runtime"
	"sync"

	"cogentcore.org/lab/base/mpi"
)

// Compiled says whether this build of lathe has MPI support (`go build -tags mpi`).
const Compiled = true

func init() {
	// MPI is initialised without thread support: every MPI call must come from the thread that
	// initialised it, so the main goroutine (which runs the command) stays on the main thread.
	runtime.LockOSThread()
}

var releaseOnce sync.Once

// ReleaseMainThread undoes this package's lock of the main goroutine to the main OS thread, for a
// command that makes no MPI call (see studio.ReleaseMainThread for what the lock costs). It must
// be called from the main goroutine; later calls do nothing.
func ReleaseMainThread() { releaseOnce.Do(runtime.UnlockOSThread) }

var (
	openOnce, finalizeOnce sync.Once
	world                  Comm
	openErr                error
)

// Open initialises MPI (once) and returns MPI_COMM_WORLD. Called from the main goroutine. A
// process started without a launcher is a job of one rank. A rank that fails ends its process with
// a non-zero status without finalising MPI: the launcher then ends every other rank (Open MPI's
// and Hydra's default), so no rank waits forever in an all-reduce.
func Open() (Comm, error) {
	openOnce.Do(func() {
		mpi.LogErrors = false
		mpi.Init()
		c, err := mpi.NewComm(nil)
		if err != nil {
			openErr = fmt.Errorf("dist: MPI_COMM_WORLD: %w", err)
			return
		}
		world = &mpiComm{c: c, rank: c.Rank(), size: c.Size()}
	})
	return world, openErr
}

// Finalize ends MPI after a successful run on every rank (it waits for the others); once.
func Finalize() {
	if world != nil {
		finalizeOnce.Do(mpi.Finalize)
	}
}

type mpiComm struct {
	c          *mpi.Comm
	rank, size int
}

func (c *mpiComm) Rank() int { return c.rank }
func (c *mpiComm) Size() int { return c.size }

func (c *mpiComm) AllReduceSum(buf []float32) error {
	if len(buf) == 0 || c.size == 1 {
		return nil
	}
	if err := c.c.AllReduceF32(mpi.OpSum, buf, nil); err != nil {
		return fmt.Errorf("dist: all-reduce of %d floats on rank %d of %d: %w", len(buf), c.rank, c.size, err)
	}
	return nil
}
