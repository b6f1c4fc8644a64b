package cpu_test

import (
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
)

// The CPU backend runs the whole suite too: check mode against itself is trivial, but the tile
// shapes, finite-difference gradients and error parity are not.
func TestConformance(t *testing.T) { enginetest.Run(t, cpu.New(), cpu.New()) }
