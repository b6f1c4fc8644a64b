//go:build !amd64 || purego

package gemm

var useAVX2 = false

func kernel(k int, a, b []float32, tile *[mr * nr]float32) { kernelGo(k, a, b, tile) }

func dot(x, y []float32) float32 { return dotGo(x, y) }

func axpy(alpha float32, x, y []float32) { axpyGo(alpha, x, y) }
