//go:build !mpi

package dist

import "fmt"

// Compiled says whether this build of lathe has MPI support (`go build -tags mpi`).
const Compiled = false

// Open returns the communicator of this process. This build has no MPI support: a process that
// an MPI launcher started as one rank of several is refused, rather than training alone on a
// shard that no other rank would sum with.
func Open() (Comm, error) {
	if n := launchedSize(); n > 1 {
		return nil, fmt.Errorf("dist: started by mpirun as one of %d ranks, but MPI support is not compiled in: rebuild with `go build -tags mpi ./cmd/lathe` (needs libopenmpi-dev or MPICH and cgo)", n)
	}
	return Single{}, nil
}

// Finalize ends MPI after a successful run; without MPI it does nothing.
func Finalize() {}

// ReleaseMainThread does nothing: without MPI this package does not lock the main thread.
func ReleaseMainThread() {}
