package gemm

import (
	"fmt"
	"os"
)

// ISA names an instruction set the kernels can be limited to.
type ISA string

// The instruction sets, widest last.
const (
	ISAGo     ISA = "go"     // portable Go kernels
	ISAAVX2   ISA = "avx2"   // AVX2 and FMA3 assembly
	ISAAVX512 ISA = "avx512" // AVX-512F assembly where it exists, AVX2 elsewhere
)

// BestISA is the widest instruction set this CPU and build run (read from CPUID at start-up).
func BestISA() ISA {
	switch {
	case hasAVX512:
		return ISAAVX512
	case hasAVX2:
		return ISAAVX2
	}
	return ISAGo
}

// CurrentISA is the instruction set the kernels use now.
func CurrentISA() ISA {
	switch {
	case useAVX512:
		return ISAAVX512
	case useAVX2:
		return ISAAVX2
	}
	return ISAGo
}

// SetISA makes the kernels use isa, which this CPU must run, and returns the one used before. It
// lets a benchmark set the AVX2 path beside the AVX-512 one in the same run. It must not be called
// while kernels run.
func SetISA(isa ISA) (prev ISA, err error) {
	prev = CurrentISA()
	switch isa {
	case ISAGo:
		useAVX2, useAVX512 = false, false
	case ISAAVX2:
		if !hasAVX2 {
			return prev, fmt.Errorf("gemm: this CPU (or build) has no AVX2/FMA")
		}
		useAVX2, useAVX512 = true, false
	case ISAAVX512:
		if !hasAVX512 {
			return prev, fmt.Errorf("gemm: this CPU (or build) has no AVX-512F")
		}
		useAVX2, useAVX512 = true, true
	default:
		return prev, fmt.Errorf("gemm: unknown instruction set %q (want go, avx2 or avx512)", isa)
	}
	kc = depthBlock(useAVX512)
	return prev, nil
}

// LATHE_CPU_ISA=go|avx2|avx512 limits the kernels from the start (to compare paths, or to work
// around a CPU whose wide unit runs slower); a value this CPU cannot run leaves the widest.
func init() {
	if v := os.Getenv("LATHE_CPU_ISA"); v != "" {
		_, _ = SetISA(ISA(v))
	}
}
