//go:build unix

package cpu

import "syscall"

// cpuSeconds is the CPU time (user and system) the process has used: on a host shared with other
// jobs, a kernel's CPU time per call varies far less than its wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
