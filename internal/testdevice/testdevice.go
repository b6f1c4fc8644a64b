// Package testdevice opens the backends that cross-backend tests run on. A GPU backend that cannot
// be opened skips the test, unless LATHE_REQUIRE_GPU=1 (CI, where lavapipe is installed): then it
// fails, so that a broken driver setup never passes silently.
package testdevice

import (
	"os"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/vulkan"
	"github.com/lathe-ml/lathe/engine/webgpu"
)

// WebGPU opens the best WebGPU adapter for the test and closes it when the test ends.
func WebGPU(t testing.TB) engine.Backend {
	t.Helper()
	b, err := webgpu.OpenBest()
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v", err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	t.Logf("webgpu adapter: %s (%s)", b.Device().Name, b.Device().Type)
	return b
}

// Vulkan opens the best Vulkan device for the test and closes it when the test ends.
func Vulkan(t testing.TB) engine.Backend {
	t.Helper()
	b, err := vulkan.OpenBest()
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v", err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	t.Logf("vulkan device: %s (%s)", b.Device().Name, b.Device().Type)
	return b
}
