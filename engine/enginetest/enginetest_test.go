package enginetest_test

import (
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
)

// The CPU backend against itself: proves every case builds, compiles, writes all of its outputs
// and is deterministic. GPU backends run the same suite against the CPU.
func TestConformanceCPU(t *testing.T) { enginetest.Run(t, cpu.New(), cpu.New()) }
