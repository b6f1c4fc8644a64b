//go:build !amd64 || purego

package ceiling

// Has reports whether this CPU (and build) can run unit: only the portable loop here.
func Has(u Unit) bool { return u == Scalar }

// Features names the CPU's vector extensions that lathe's kernels can use: none in this build.
func Features() []string { return nil }

func fmaLoop(u Unit, n int) float32 { return fmaLoopGo(n) }

func readSum(u Unit, x []float32) float32 { return readSumGo(x) }
