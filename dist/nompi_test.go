//go:build !mpi

package dist

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOpenWithoutMPI: alone, a build without MPI is a job of one; started by mpirun as one of
// several ranks it refuses, saying MPI support is not compiled in.
func TestOpenWithoutMPI(t *testing.T) {
	for _, k := range launcherEnv {
		t.Setenv(k, "")
	}
	c, err := Open()
	require.NoError(t, err)
	require.Equal(t, 1, c.Size())
	t.Setenv("OMPI_COMM_WORLD_SIZE", "4")
	_, err = Open()
	require.ErrorContains(t, err, "MPI support is not compiled in")
	require.ErrorContains(t, err, "-tags mpi")
}
