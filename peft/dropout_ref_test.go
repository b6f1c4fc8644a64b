package peft

import (
	"hash/fnv"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model/synth"
)

// TestDropoutMatchesPEFT checks a LoRA layer in training mode against a float64 reference of what
// PEFT computes: y = x·Wᵀ + b + (α/r)·B·A·dropout(x), where dropout is torch's nn.Dropout (each
// element kept with probability 1−p and scaled by 1/(1−p)) on the LoRA branch only, and the
// gradients of A, B and x through the same mask. Only the mask itself (which elements survive,
// engine.DropoutKeep of the step's seed and a per-layer salt) is taken from lathe: what is applied
// with it is computed here.
func TestDropoutMatchesPEFT(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 3, Bias: true})
	require.NoError(t, err)
	m := loadModel(t, dir, "")
	const name, rows, p, seed = "model.layers.1.self_attn.q_proj", 5, 0.3, int32(11)
	c := loraConfig("q_proj")
	c.LoraDropout = p
	a, err := New(c, m.Cfg, m.Backend, 7)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 8)

	g := engine.NewGraph()
	mg := m.Declare(g)
	l := mg.Layers[1].Q
	require.Equal(t, name, l.Name)
	in, out, r := l.In, l.Out, c.R
	xn := g.Param("x", engine.F32, engine.Shape{rows, in}, true)
	rn := g.Input("r", engine.F32, engine.Shape{rows, out})
	sn := g.Input("seed", engine.I32, engine.Shape{1})
	y := a.LinearFunc(g, sn)(g, l, xn)
	loss := g.Sum(g.Mul(y, rn)) // dloss/dy = R
	grads, err := g.Backward(loss)
	require.NoError(t, err)
	keys := []string{"base_model.model." + name + ".lora_A.weight", "base_model.model." + name + ".lora_B.weight"}
	An, Bn := g.Lookup(keys[0]), g.Lookup(keys[1])
	require.NotNil(t, An)
	require.NotNil(t, Bn)
	outs := []*engine.Node{y, grads[An], grads[Bn], grads[xn]}
	for _, o := range outs {
		require.NotNil(t, o)
	}
	prog, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{})
	require.NoError(t, err)
	defer prog.Release()
	require.NoError(t, m.Bind(prog))
	require.NoError(t, a.Bind(prog))
	x, R := randVec(rows*in, 21), randVec(rows*out, 22)
	for node, v := range map[*engine.Node][]float32{xn: x, rn: R} {
		tt, err := engine.FromFloat32(m.Backend, node.Shape(), v)
		require.NoError(t, err)
		defer tt.Release()
		require.NoError(t, prog.Bind(node, tt))
	}
	st, err := engine.FromInt32(m.Backend, sn.Shape(), []int32{seed})
	require.NoError(t, err)
	defer st.Release()
	require.NoError(t, prog.Bind(sn, st))
	require.NoError(t, prog.Run())

	// The reference, in float64.
	f64 := func(v []float32) []float64 {
		o := make([]float64, len(v))
		for i, x := range v {
			o[i] = float64(x)
		}
		return o
	}
	W, A, B := f64(denseWeight(t, m, name)), f64(tensor(t, a, keys[0])), f64(tensor(t, a, keys[1]))
	bias, err := m.Tensors[name+".bias"].Float32()
	require.NoError(t, err)
	h := fnv.New32a() // the per-layer salt: FNV-1a of the module name
	_, _ = h.Write([]byte(name))
	salt := h.Sum32()
	scale := float64(c.LoraAlpha) / float64(r) // PEFT's scaling without rsLoRA
	xd := make([]float64, rows*in)             // nn.Dropout(p)(x)
	kept := 0
	for i := range xd {
		if engine.DropoutKeep(seed, salt, uint32(i), p) {
			xd[i] = float64(x[i]) / (1 - p)
			kept++
		}
	}
	require.InDelta(t, 1-p, float64(kept)/float64(len(xd)), 0.1, "the mask keeps about 1−p of the elements")
	u := make([]float64, rows*r) // dropout(x)·Aᵀ
	for i := 0; i < rows; i++ {
		for k := 0; k < r; k++ {
			for j := 0; j < in; j++ {
				u[i*r+k] += xd[i*in+j] * A[k*in+j]
			}
		}
	}
	wantY := make([]float64, rows*out)
	for i := 0; i < rows; i++ {
		for o := 0; o < out; o++ {
			s := float64(bias[o])
			for j := 0; j < in; j++ {
				s += float64(x[i*in+j]) * W[o*in+j]
			}
			for k := 0; k < r; k++ {
				s += scale * u[i*r+k] * B[o*r+k]
			}
			wantY[i*out+o] = s
		}
	}
	// Backward with dy = R: dB = s·dyᵀ·u, du = s·dy·B, dA = duᵀ·dropout(x),
	// dx = dy·W + (du·A)·mask/(1−p).
	wantDB := make([]float64, out*r)
	du := make([]float64, rows*r)
	for i := 0; i < rows; i++ {
		for o := 0; o < out; o++ {
			for k := 0; k < r; k++ {
				wantDB[o*r+k] += scale * float64(R[i*out+o]) * u[i*r+k]
				du[i*r+k] += scale * float64(R[i*out+o]) * B[o*r+k]
			}
		}
	}
	wantDA := make([]float64, r*in)
	wantDX := make([]float64, rows*in)
	for i := 0; i < rows; i++ {
		for j := 0; j < in; j++ {
			for k := 0; k < r; k++ {
				wantDA[k*in+j] += du[i*r+k] * xd[i*in+j]
			}
			s := 0.0
			for o := 0; o < out; o++ {
				s += float64(R[i*out+o]) * W[o*in+j]
			}
			lora := 0.0
			for k := 0; k < r; k++ {
				lora += du[i*r+k] * A[k*in+j]
			}
			if engine.DropoutKeep(seed, salt, uint32(i*in+j), p) {
				s += lora / (1 - p)
			}
			wantDX[i*in+j] = s
		}
	}
	for i, want := range [][]float64{wantY, wantDA, wantDB, wantDX} {
		got, err := prog.Float32(outs[i])
		require.NoError(t, err)
		require.Len(t, got, len(want))
		mx := 0.0
		for _, w := range want {
			mx = math.Max(mx, math.Abs(w))
		}
		require.Greater(t, mx, 0.0)
		for j := range want {
			require.InDelta(t, want[j], float64(got[j]), 1e-4*mx, "%s[%d]", []string{"y", "dA", "dB", "dx"}[i], j)
		}
	}
}
