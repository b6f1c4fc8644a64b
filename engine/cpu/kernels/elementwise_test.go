package kernels

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func refScaleCols(x, l []float64, rows, dim int) []float64 {
	y := make([]float64, rows*dim)
	for r := 0; r < rows; r++ {
		for c := 0; c < dim; c++ {
			y[r*dim+c] = x[r*dim+c] * l[c]
		}
	}
	return y
}

func TestScaleCols(t *testing.T) {
	const rows, dim = 7, 13
	r := newRand(60)
	x, l := randn(r, rows*dim), randn(r, dim)
	y := nans(rows * dim)
	ScaleCols(y, x, l, rows, dim)
	requireClose(t, "y", y, refScaleCols(to64(x), to64(l), rows, dim), fwdTol)
}

// DivSqrt against float64, and its x-gradient (n is detached) by finite differences: the gradient
// is DivSqrt of dy.
func TestDivSqrt(t *testing.T) {
	const rows, dim = 7, 13
	r := newRand(63)
	x, dy := randn(r, rows*dim), randn(r, rows*dim)
	n := make([]float32, dim)
	for i := range n {
		n[i] = float32(0.01 + 10*r.Float64())
	}
	x64, n64 := to64(x), to64(n)
	ref := func() []float64 {
		y := make([]float64, rows*dim)
		for i := range y {
			y[i] = x64[i] / math.Sqrt(n64[i%dim])
		}
		return y
	}
	y := nans(rows * dim)
	DivSqrt(y, x, n, rows, dim)
	requireClose(t, "y", y, ref(), fwdTol)
	wantDx := fdGrad(x64, func() float64 { return dot(ref(), dy) })
	dx := nans(rows * dim)
	DivSqrt(dx, dy, n, rows, dim)
	requireClose(t, "dx", dx, wantDx, bwdTol)
}

func TestScaleColsBackward(t *testing.T) {
	const rows, dim = 7, 13
	r := newRand(61)
	x, l, dy := randn(r, rows*dim), randn(r, dim), randn(r, rows*dim)
	x64, l64 := to64(x), to64(l)
	loss := func() float64 { return dot(refScaleCols(x64, l64, rows, dim), dy) }
	wantDx, wantDl := fdGrad(x64, loss), fdGrad(l64, loss)

	dx, dl := nans(rows*dim), nans(dim)
	ScaleColsBackward(dx, dl, dy, x, l, rows, dim)
	requireClose(t, "dx", dx, wantDx, bwdTol)
	requireClose(t, "dl", dl, wantDl, bwdTol)

	// Either output may be left out.
	dl2 := nans(dim)
	ScaleColsBackward(nil, dl2, dy, x, l, rows, dim)
	requireBits(t, "dl alone", dl, dl2)
	dx2 := nans(rows * dim)
	ScaleColsBackward(dx2, nil, dy, x, l, rows, dim)
	requireBits(t, "dx alone", dx, dx2)
}

func TestElementwise(t *testing.T) {
	const n = 7 * 13
	r := newRand(62)
	a, b := randn(r, n), randn(r, n)
	a64, b64 := to64(a), to64(b)
	want := func(f func(x, y float64) float64) []float64 {
		w := make([]float64, n)
		for i := range w {
			w[i] = f(a64[i], b64[i])
		}
		return w
	}

	y := nans(n)
	Add(y, a, b)
	requireClose(t, "add", y, want(func(x, y float64) float64 { return x + y }), fwdTol)
	y = nans(n)
	Mul(y, a, b)
	requireClose(t, "mul", y, want(func(x, y float64) float64 { return x * y }), fwdTol)
	y = nans(n)
	Scale(y, a, -0.375)
	requireClose(t, "scale", y, want(func(x, _ float64) float64 { return -0.375 * x }), fwdTol)
	y = append([]float32(nil), b...)
	AddScaled(y, a, 0.3)
	requireClose(t, "add scaled", y, want(func(x, y float64) float64 { return y + float64(float32(0.3))*x }), fwdTol)

	// In place.
	z := append([]float32(nil), a...)
	Add(z, z, b)
	requireClose(t, "add in place", z, want(func(x, y float64) float64 { return x + y }), fwdTol)
}

func TestAddBiasAndSumRows(t *testing.T) {
	const rows, dim = 7, 13
	r := newRand(63)
	x, b, dy := randn(r, rows*dim), randn(r, dim), randn(r, rows*dim)
	x64, b64 := to64(x), to64(b)
	ref := func() []float64 {
		y := make([]float64, rows*dim)
		for i := 0; i < rows; i++ {
			for c := 0; c < dim; c++ {
				y[i*dim+c] = x64[i*dim+c] + b64[c]
			}
		}
		return y
	}
	y := append([]float32(nil), x...)
	AddBias(y, b, rows, dim)
	requireClose(t, "add bias", y, ref(), fwdTol)

	// SumRows is AddBias's backward for b.
	db := nans(dim)
	SumRows(db, dy, rows, dim)
	requireClose(t, "sum rows", db, fdGrad(b64, func() float64 { return dot(ref(), dy) }), bwdTol)
}

func TestReductions(t *testing.T) {
	// Longer than several reduce chunks, with a ragged last chunk.
	n := 3*ReduceChunk + 77
	x := randn(newRand(64), n)
	var s, ss float64
	for _, v := range x {
		s += float64(v)
		ss += float64(v) * float64(v)
	}
	require.InDelta(t, s, Sum(x), 1e-9)
	require.InEpsilon(t, ss, SumSquares(x), 1e-12)
	require.Zero(t, Sum(nil))

	require.False(t, HasNonFinite(x))
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		for _, at := range []int{0, ReduceChunk + 3, n - 1} {
			y := append([]float32(nil), x...)
			y[at] = bad
			require.True(t, HasNonFinite(y), "%g at %d", bad, at)
			require.True(t, math.IsNaN(SumSquares(y)) || math.IsInf(SumSquares(y), 1))
		}
	}
	require.False(t, HasNonFinite([]float32{math.MaxFloat32, -math.MaxFloat32, 0}))
}
