//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// useF16C selects the assembly widening of 16-bit weights (F16C's VCVTPH2PS for IEEE halves, AVX2
// shifts for bfloat16); tests switch it off to check the Go conversion on this machine.
var useF16C = cpu.X86.HasAVX2 && cpu.X86.HasF16C

// widenF16x8 sets dst[0:8·n8] to the IEEE halves src[0:8·n8] as float32.
//
//go:noescape
func widenF16x8(n8 int, src *uint16, dst *float32)

// widenBF16x8 sets dst[0:8·n8] to the bfloat16s src[0:8·n8] as float32.
//
//go:noescape
func widenBF16x8(n8 int, src *uint16, dst *float32)
