package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/quant"
)

func randn(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func to64(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

// quant4 is a random 4-bit weight [n, k] in bitsandbytes' layout and its dequantized float64 value.
type quant4 struct {
	spec   engine.QuantSpec
	packed []byte
	absmax []float32
	w      []float64
}

func randQuant4(r *rand.Rand, n, k, blocksize int, typ quant.Type) quant4 {
	numel := n * k
	q := quant4{spec: engine.QuantSpec{Type: typ, Blocksize: blocksize, N: n, K: k}}
	q.packed = make([]byte, (numel+1)/2)
	for i := range q.packed {
		q.packed[i] = byte(r.IntN(256))
	}
	q.absmax = make([]float32, (numel+blocksize-1)/blocksize)
	for i := range q.absmax {
		q.absmax[i] = float32(0.05 + r.Float64())
	}
	q.w = make([]float64, numel)
	for i := range q.w {
		c := q.packed[i/2] >> 4
		if i%2 == 1 {
			c = q.packed[i/2] & 15
		}
		q.w[i] = float64(typ.Code()[c]) * float64(q.absmax[i/blocksize])
	}
	return q
}

// loraRef64 is the float64 reference: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ.
func loraRef64(x, w, a, b []float64, rows, din, dout, r int, s float64) []float64 {
	y := make([]float64, rows*dout)
	for i := 0; i < rows; i++ {
		xa := make([]float64, r)
		for j := 0; j < r; j++ {
			for c := 0; c < din; c++ {
				xa[j] += x[i*din+c] * a[j*din+c]
			}
		}
		for o := 0; o < dout; o++ {
			acc := 0.0
			for c := 0; c < din; c++ {
				acc += x[i*din+c] * w[o*din+c]
			}
			for j := 0; j < r; j++ {
				acc += s * xa[j] * b[o*r+j]
			}
			y[i*dout+o] = acc
		}
	}
	return y
}

// fdGrad is the central finite difference of L(v) = Σ f(v)⊙R with respect to every element of v.
func fdGrad(v []float64, f func() []float64, rw []float64) []float64 {
	obj := func() float64 {
		s := 0.0
		for i, y := range f() {
			s += y * rw[i]
		}
		return s
	}
	g := make([]float64, len(v))
	for i := range v {
		old := v[i]
		h := 1e-6 * math.Max(1, math.Abs(old))
		v[i] = old + h
		up := obj()
		v[i] = old - h
		down := obj()
		v[i] = old
		g[i] = (up - down) / (2 * h)
	}
	return g
}

func requireClose(t *testing.T, want []float64, got []float32, rel float64, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		require.False(t, math.IsNaN(float64(got[i])), "%s[%d] is NaN (unwritten?)", what, i)
		require.InDelta(t, want[i], float64(got[i]), rel*math.Max(scale, 1e-3), "%s[%d]", what, i)
	}
}

// runOp runs one op through a compiled graph on the CPU backend and returns its outputs.
func runOp(t *testing.T, op engine.Op, ins []*engine.Tensor) [][]float32 {
	t.Helper()
	b := cpuBackend
	g := engine.NewGraph()
	nodes := make([]*engine.Node, len(ins))
	for i, x := range ins {
		nodes[i] = g.Input(string(rune('a'+i)), x.DType(), x.Shape())
	}
	outs := g.Apply(op, nodes...)
	require.NoError(t, g.Err())
	p, err := engine.Compile(g, b, outs, engine.CompileOptions{})
	require.NoError(t, err)
	for i, x := range ins {
		require.NoError(t, p.Bind(nodes[i], x))
	}
	require.NoError(t, p.Run())
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i], err = p.Float32(o)
		require.NoError(t, err)
	}
	return res
}

func tensor(t *testing.T, shape engine.Shape, v []float32) *engine.Tensor {
	x, err := engine.FromFloat32(cpuBackend, shape, v)
	require.NoError(t, err)
	return x
}

var cpuBackend = New()

func TestLoRAForwardBackwardDenseAndNF4(t *testing.T) {
	for _, tc := range []struct {
		name               string
		rows, din, dout, r int
		quant              bool
		blocksize          int
	}{
		{"dense", 7, 13, 11, 3, false, 0},
		{"dense-rank1", 5, 9, 17, 1, false, 0},
		{"nf4", 6, 19, 15, 4, true, 64}, // 285 elements: blocks span rows, last block partial
		{"nf4-gemv", 1, 33, 21, 2, true, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tc.rows*1000+tc.din)))
			x := randn(r, tc.rows*tc.din, 1)
			a := randn(r, tc.r*tc.din, 0.3)
			bm := randn(r, tc.dout*tc.r, 0.3)
			dy := randn(r, tc.rows*tc.dout, 1)
			s := float32(1.7)
			var w64 []float64
			var wIns []*engine.Tensor
			op := engine.LoRA{Scale: s}
			if tc.quant {
				q := randQuant4(r, tc.dout, tc.din, tc.blocksize, quant.NF4)
				w64 = q.w
				op.Quant = &q.spec
				packed, err := engine.FromBytes(cpuBackend, engine.U8, engine.Shape{len(q.packed)}, q.packed)
				require.NoError(t, err)
				wIns = []*engine.Tensor{packed, tensor(t, engine.Shape{len(q.absmax)}, q.absmax)}
			} else {
				w := randn(r, tc.dout*tc.din, 0.5)
				w64 = to64(w)
				wIns = []*engine.Tensor{tensor(t, engine.Shape{tc.dout, tc.din}, w)}
			}
			ins := append([]*engine.Tensor{tensor(t, engine.Shape{tc.rows, tc.din}, x)}, wIns...)
			ins = append(ins, tensor(t, engine.Shape{tc.r, tc.din}, a), tensor(t, engine.Shape{tc.dout, tc.r}, bm))
			fwd := runOp(t, op, ins)

			x64, a64, b64 := to64(x), to64(a), to64(bm)
			ref := func() []float64 { return loraRef64(x64, w64, a64, b64, tc.rows, tc.din, tc.dout, tc.r, float64(s)) }
			requireClose(t, ref(), fwd[0], 1e-5, "y")

			// Backward: dx, dA, dB against finite differences of the float64 reference.
			bop := engine.LoRABackward{Scale: s, Quant: op.Quant, NeedX: true, NeedA: true, NeedB: true}
			bins := append([]*engine.Tensor{tensor(t, engine.Shape{tc.rows, tc.dout}, dy)}, ins...)
			bins = append(bins, tensor(t, engine.Shape{tc.rows, tc.r}, fwd[1]))
			grads := runOp(t, bop, bins)
			dy64 := to64(dy)
			requireClose(t, fdGrad(x64, ref, dy64), grads[0], 1e-4, "dx")
			requireClose(t, fdGrad(a64, ref, dy64), grads[1], 1e-4, "dA")
			requireClose(t, fdGrad(b64, ref, dy64), grads[2], 1e-4, "dB")

			// Asking for a subset computes the same values.
			only := runOp(t, engine.LoRABackward{Scale: s, Quant: op.Quant, NeedB: true}, bins)
			require.Equal(t, grads[2], only[0])
		})
	}
}

func TestMatMulAndQMatMulAgainstFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		m, n, k := 7, 11, 13
		a := randn(r, m*k, 1)
		b := randn(r, k*n, 1)
		sa, sb := engine.Shape{m, k}, engine.Shape{k, n}
		if tr[0] {
			sa = engine.Shape{k, m}
		}
		if tr[1] {
			sb = engine.Shape{n, k}
		}
		got := runOp(t, engine.MatMul{TransA: tr[0], TransB: tr[1]}, []*engine.Tensor{tensor(t, sa, a), tensor(t, sb, b)})[0]
		want := make([]float64, m*n)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				for c := 0; c < k; c++ {
					av := a[i*k+c]
					if tr[0] {
						av = a[c*m+i]
					}
					bv := b[c*n+j]
					if tr[1] {
						bv = b[j*k+c]
					}
					want[i*n+j] += float64(av) * float64(bv)
				}
			}
		}
		requireClose(t, want, got, 1e-5, "matmul")
	}
	// 4-bit: y = x·Wᵀ and, transposed, y = x·W.
	q := randQuant4(r, 23, 37, 64, quant.FP4)
	packed, err := engine.FromBytes(cpuBackend, engine.U8, engine.Shape{len(q.packed)}, q.packed)
	require.NoError(t, err)
	absmax := tensor(t, engine.Shape{len(q.absmax)}, q.absmax)
	for _, trans := range []bool{false, true} {
		rows, kin, nout := 5, 37, 23
		if trans {
			kin, nout = nout, kin
		}
		x := randn(r, rows*kin, 1)
		got := runOp(t, engine.QMatMul{Quant: q.spec, TransW: trans}, []*engine.Tensor{tensor(t, engine.Shape{rows, kin}, x), packed, absmax})[0]
		want := make([]float64, rows*nout)
		for i := 0; i < rows; i++ {
			for o := 0; o < nout; o++ {
				for c := 0; c < kin; c++ {
					var wv float64
					if trans {
						wv = q.w[c*37+o]
					} else {
						wv = q.w[o*37+c]
					}
					want[i*nout+o] += float64(x[i*kin+c]) * wv
				}
			}
		}
		requireClose(t, want, got, 1e-5, "qmatmul")
	}
}
