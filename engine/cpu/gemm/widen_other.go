//go:build !amd64 || purego

package gemm

// useF16C is always false here: only the Go conversion exists.
var useF16C = false

func widenF16x8(n8 int, src *uint16, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func widenBF16x8(n8 int, src *uint16, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}
