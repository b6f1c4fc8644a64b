//go:build unix

package webgpu

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

var quietMu sync.Mutex

// quietNative runs f with the process's stderr (fd 2) pointed at /dev/null. Creating a wgpu
// instance and listing its adapters makes the native libraries it probes (EGL, Wayland, the
// Vulkan loader) print warnings there ("No config found!", "XDG_RUNTIME_DIR is invalid or not
// set"): they are not lathe's, and a successful command prints nothing on stderr but its own
// progress. Failures still come back as values.
func quietNative(f func()) {
	quietMu.Lock()
	defer quietMu.Unlock()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		f()
		return
	}
	defer null.Close()
	saved, err := unix.Dup(2)
	if err != nil {
		f()
		return
	}
	defer unix.Close(saved)
	if err := unix.Dup2(int(null.Fd()), 2); err != nil {
		f()
		return
	}
	defer unix.Dup2(saved, 2) //nolint:errcheck // restoring is best effort
	f()
}
