//go:build !amd64 || purego

package ceiling

// Has reports whether this CPU (and build) can run unit: only the portable loop here.
func Has(u Unit) bool { return u == Scalar }

// Features names the CPU's vector extensions that lathe's kernels can use: none in this build.
func Features() []string { return nil }

func fmaLoop(u Unit, n int) float32 { return fmaLoopGo(n) }

func readSum(u Unit, x []float32) float32 { return readSumGo(x) }

// fma512 and fma256 are never called here (Has reports no vector unit); they exist so that the
// tests build on every platform.
func fma512(n int) float32    { panic("ceiling: no AVX-512 loop in this build") }
func fma256(n int) float32    { panic("ceiling: no AVX2 loop in this build") }
func dpbf16512(n int) float32 { panic("ceiling: no AVX-512 BF16 loop in this build") }
func dpbusd512(n int) float32 { panic("ceiling: no AVX-512 VNNI loop in this build") }
