package kernels

import "testing"

// TestInPlace runs the kernels documented as "may be x" with the output on top of an input and
// checks the bits against the out-of-place run.
func TestInPlace(t *testing.T) {
	const rows, dim = 7, 13
	r := newRand(80)
	x, w, dy := randn(r, rows*dim), randn(r, dim), randn(r, rows*dim)
	cp := func(s []float32) []float32 { return append([]float32(nil), s...) }

	y := nans(rows * dim)
	RMSNorm(y, x, w, rows, dim, 1e-6)
	z := cp(x)
	RMSNorm(z, z, w, rows, dim, 1e-6)
	requireBits(t, "rmsnorm", y, z)

	dx, dw := nans(rows*dim), nans(dim)
	RMSNormBackward(dx, dw, dy, x, w, rows, dim, 1e-6)
	for _, onX := range []bool{false, true} {
		xs, dys, dw2 := cp(x), cp(dy), nans(dim)
		out := dys
		if onX {
			out = xs
		}
		RMSNormBackward(out, dw2, dys, xs, w, rows, dim, 1e-6)
		requireBits(t, "rmsnorm dx in place", dx, out)
		requireBits(t, "rmsnorm dw with dx in place", dw, dw2)
	}

	dl := nans(dim)
	ScaleColsBackward(dx, dl, dy, x, w, rows, dim)
	dys, dl2 := cp(dy), nans(dim)
	ScaleColsBackward(dys, dl2, dys, x, w, rows, dim)
	requireBits(t, "scalecols dx in place", dx, dys)
	requireBits(t, "scalecols dl with dx in place", dl, dl2)

	Softmax(y, x, rows, dim)
	z = cp(x)
	Softmax(z, z, rows, dim)
	requireBits(t, "softmax", y, z)
	SoftmaxBackward(dx, dy, y, rows, dim)
	dys = cp(dy)
	SoftmaxBackward(dys, dys, y, rows, dim)
	requireBits(t, "softmax backward", dx, dys)

	up := randn(r, rows*dim)
	dg, du := nans(rows*dim), nans(rows*dim)
	SwiGLUBackward(dg, du, dy, x, up)
	gs, us := cp(x), cp(up)
	SwiGLUBackward(gs, us, dy, gs, us)
	requireBits(t, "swiglu dgate in place", dg, gs)
	requireBits(t, "swiglu dup in place", du, us)

	targets := []int32{3, ignore, 0, 12, 7, 1, 2}
	CrossEntropyBackward(dx, x, targets, rows, dim, ignore, 0.5, 6)
	z = cp(x)
	CrossEntropyBackward(z, z, targets, rows, dim, ignore, 0.5, 6)
	requireBits(t, "cross entropy backward", dx, z)
}
