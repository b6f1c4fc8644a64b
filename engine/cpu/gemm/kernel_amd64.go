//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly kernels; tests switch it off to check the Go ones.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func kern6x16(k int, a, b, c *float32)

//go:noescape
func dotAVX2(n int, x, y *float32) float32

//go:noescape
func axpyAVX2(n int, alpha float32, x, y *float32)

func kernel(k int, a, b []float32, tile *[mr * nr]float32) {
	if useAVX2 && k > 0 {
		_ = a[k*mr-1]
		_ = b[k*nr-1]
		kern6x16(k, &a[0], &b[0], &tile[0])
		return
	}
	kernelGo(k, a, b, tile)
}

func dot(x, y []float32) float32 {
	if useAVX2 && len(x) >= 32 {
		_ = y[len(x)-1]
		return dotAVX2(len(x), &x[0], &y[0])
	}
	return dotGo(x, y)
}

func axpy(alpha float32, x, y []float32) {
	if useAVX2 && len(x) >= 32 {
		_ = y[len(x)-1]
		axpyAVX2(len(x), alpha, &x[0], &y[0])
		return
	}
	axpyGo(alpha, x, y)
}
