//go:build unix

// Package cputime reads the CPU time the process has used, for benchmarks on a host shared with
// other jobs: a kernel's CPU time per call varies far less than its wall time there.
package cputime

import "syscall"

// Seconds is the user and system CPU time of the process so far (0 where it cannot be read).
func Seconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
