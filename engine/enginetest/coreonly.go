package enginetest

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
)

// coreOnly is a backend that implements only the core op set (engine.IsCore): it refuses every
// fast path, so that graphs compiled for it run their decompositions.
type coreOnly struct{ engine.Backend }

// CoreOnly wraps b as a backend that supports only the core op set: the graph compiler rewrites
// every fused and adapter op into core ops for it. Training and serving on it must give b's
// results; it is how a new backend starts.
func CoreOnly(b engine.Backend) engine.Backend { return coreOnly{b} }

// Device is the wrapped device, its backend named "<backend>-core".
func (c coreOnly) Device() engine.DeviceInfo {
	d := c.Backend.Device()
	d.Backend += "-core"
	return d
}

func (c coreOnly) Supports(op engine.Op, in []engine.Meta) error {
	if !engine.IsCore(op) {
		return fmt.Errorf("core-only backend: %s is not a core op", op.Name())
	}
	return c.Backend.Supports(op, in)
}

func (c coreOnly) Run(launches []engine.Launch) error {
	for _, l := range launches {
		if !engine.IsCore(l.Op) {
			return fmt.Errorf("core-only backend: launch of %s", l.Op.Name())
		}
	}
	return c.Backend.Run(launches)
}
