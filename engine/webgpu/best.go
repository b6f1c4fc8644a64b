package webgpu

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// ErrNoAdapter is returned by OpenBest when wgpu finds no adapter.
var ErrNoAdapter = errors.New("no WebGPU adapter found (on a machine without a GPU, install mesa-vulkan-drivers for lavapipe)")

// OpenBest opens the adapter --device webgpu would pick: discrete, then integrated, then the rest.
func OpenBest() (*Backend, error) {
	devs, err := Provider{}.Devices()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAdapter, err)
	}
	if len(devs) == 0 {
		return nil, ErrNoAdapter
	}
	best := 0
	for i, d := range devs {
		if engine.Rank(d) < engine.Rank(devs[best]) {
			best = i
		}
	}
	return Open(devs[best].Index)
}
