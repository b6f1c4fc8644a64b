//go:build amd64 && !purego

package ceiling

import "golang.org/x/sys/cpu"

// Has reports whether this CPU (and build) can run unit.
func Has(u Unit) bool {
	switch u {
	case AVX512:
		return cpu.X86.HasAVX512F
	case AVX512BF16:
		return cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16
	case AVX512VNNI:
		return cpu.X86.HasAVX512F && cpu.X86.HasAVX512VNNI
	case AVX2:
		return cpu.X86.HasAVX2 && cpu.X86.HasFMA
	case Scalar:
		return true
	}
	return false
}

// Features names the CPU's vector extensions that lathe's kernels can use, as /proc/cpuinfo
// spells them.
func Features() []string {
	var f []string
	for _, x := range []struct {
		has  bool
		name string
	}{
		{cpu.X86.HasAVX, "avx"}, {cpu.X86.HasAVX2, "avx2"}, {cpu.X86.HasFMA, "fma"}, {cpu.X86.HasF16C, "f16c"},
		{cpu.X86.HasAVXVNNI, "avx_vnni"},
		{cpu.X86.HasAVX512F, "avx512f"}, {cpu.X86.HasAVX512BW, "avx512bw"}, {cpu.X86.HasAVX512DQ, "avx512dq"},
		{cpu.X86.HasAVX512VL, "avx512vl"}, {cpu.X86.HasAVX512VNNI, "avx512_vnni"}, {cpu.X86.HasAVX512BF16, "avx512_bf16"},
		{cpu.X86.HasAVX512VBMI, "avx512vbmi"}, {cpu.X86.HasAVX512IFMA, "avx512ifma"},
	} {
		if x.has {
			f = append(f, x.name)
		}
	}
	return f
}

//go:noescape
func fma512(n int) float32

//go:noescape
func fma256(n int) float32

//go:noescape
func dpbf16512(n int) float32

//go:noescape
func dpbusd512(n int) float32

//go:noescape
func read512(n int, x *float32) float32

//go:noescape
func read256(n int, x *float32) float32

func fmaLoop(u Unit, n int) float32 {
	switch u {
	case AVX512:
		return fma512(n)
	case AVX512BF16:
		return dpbf16512(n)
	case AVX512VNNI:
		return dpbusd512(n)
	case AVX2:
		return fma256(n)
	}
	return fmaLoopGo(n)
}

// readSum is the sum of x, read with u's vector loads (64 floats an iteration, the tail in Go).
func readSum(u Unit, x []float32) float32 {
	n := len(x) &^ 63
	var s float32
	switch {
	case n == 0 || u == Scalar:
		return readSumGo(x)
	case u == AVX512:
		s = read512(n, &x[0])
	default:
		s = read256(n, &x[0])
	}
	return s + readSumGo(x[n:])
}
