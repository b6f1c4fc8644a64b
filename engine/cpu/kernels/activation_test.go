package kernels

import (
	"math"
	"testing"
)

func refSiLU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = v / (1 + math.Exp(-v))
	}
	return y
}

func refSwiGLU(gate, up []float64) []float64 {
	y := refSiLU(gate)
	for i := range y {
		y[i] *= up[i]
	}
	return y
}

func refSoftmax(x []float64, rows, cols int) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < rows; r++ {
		m := math.Inf(-1)
		for c := 0; c < cols; c++ {
			m = math.Max(m, x[r*cols+c])
		}
		sum := 0.0
		for c := 0; c < cols; c++ {
			sum += math.Exp(x[r*cols+c] - m)
		}
		for c := 0; c < cols; c++ {
			y[r*cols+c] = math.Exp(x[r*cols+c]-m) / sum
		}
	}
	return y
}

// spread is n normal values times 4, so the sigmoid's tails are exercised too.
func spread(seed uint64, n int) []float32 {
	x := randn(newRand(seed), n)
	for i := range x {
		x[i] *= 4
	}
	return x
}

func TestSiLU(t *testing.T) {
	x := spread(30, 7*13)
	x = append(x, -100, 100, 0) // saturation and zero
	y := nans(len(x))
	SiLU(y, x)
	requireClose(t, "y", y, refSiLU(to64(x)), fwdTol)
}

func TestSiLUBackward(t *testing.T) {
	x, dy := spread(31, 7*13), randn(newRand(32), 7*13)
	x64 := to64(x)
	want := fdGrad(x64, func() float64 { return dot(refSiLU(x64), dy) })
	dx := nans(len(x))
	SiLUBackward(dx, dy, x)
	requireClose(t, "dx", dx, want, bwdTol)
}

func TestSwiGLU(t *testing.T) {
	gate, up := spread(33, 7*13), randn(newRand(34), 7*13)
	y := nans(len(gate))
	SwiGLU(y, gate, up)
	requireClose(t, "y", y, refSwiGLU(to64(gate), to64(up)), fwdTol)
}

func TestSwiGLUBackward(t *testing.T) {
	r := newRand(35)
	gate, up, dy := spread(36, 7*13), randn(r, 7*13), randn(r, 7*13)
	g64, u64 := to64(gate), to64(up)
	loss := func() float64 { return dot(refSwiGLU(g64, u64), dy) }
	dgate, dup := nans(len(gate)), nans(len(up))
	SwiGLUBackward(dgate, dup, dy, gate, up)
	requireClose(t, "dgate", dgate, fdGrad(g64, loss), bwdTol)
	requireClose(t, "dup", dup, fdGrad(u64, loss), bwdTol)
}

func TestSoftmax(t *testing.T) {
	const rows, cols = 7, 13
	x := spread(37, rows*cols)
	x[0] = 1000 // would overflow exp without the shift
	y := nans(len(x))
	Softmax(y, x, rows, cols)
	requireClose(t, "y", y, refSoftmax(to64(x), rows, cols), fwdTol)
}

func TestSoftmaxBackward(t *testing.T) {
	const rows, cols = 7, 13
	r := newRand(38)
	x, dy := randn(r, rows*cols), randn(r, rows*cols)
	y := nans(len(x))
	Softmax(y, x, rows, cols)
	x64 := to64(x)
	want := fdGrad(x64, func() float64 { return dot(refSoftmax(x64, rows, cols), dy) })
	dx := nans(len(x))
	SoftmaxBackward(dx, dy, y, rows, cols)
	requireClose(t, "dx", dx, want, bwdTol)
}
