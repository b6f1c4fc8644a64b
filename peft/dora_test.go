package peft

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
)

func doraConfig(targets ...string) Config {
	c := loraConfig(targets...)
	c.UseDoRA = true
	return c
}

// randomizeDoRA makes B non-zero and moves the magnitudes off the weight norms, so that every
// part of DoRA does something.
func randomizeDoRA(t *testing.T, a *Adapter, seed uint64) {
	t.Helper()
	randomize(t, a, seed)
	r := rand.New(rand.NewPCG(seed, 10))
	for _, md := range a.modules {
		tt := a.tensors[md.magnitudeKey()]
		v, err := tt.Float32()
		require.NoError(t, err)
		for i := range v {
			v[i] *= float32(1 + 0.3*r.NormFloat64())
		}
		require.NoError(t, tt.SetFloat32(v))
	}
}

// peftDoRA is a float64 reference of PEFT's DoRA layer (lora/layer.py Linear.forward and
// lora/dora.py DoraLinearLayer.forward), for x: [rows, in] and its dropped version xd (x itself
// at evaluation):
//
//	result = x·Wᵀ + bias + (m/‖W + s·B·A‖ − 1) ⊙ xd·Wᵀ + m/‖W + s·B·A‖ ⊙ s·(xd·Aᵀ)·Bᵀ
//
// where the norm is taken with A0, B0 (PEFT detaches it: it is a constant to the gradient, so a
// finite difference of A or B moves the other terms only).
func peftDoRA(x, xd, W, bias, A, B, A0, B0, m []float64, rows, in, out, r int, s float64) []float64 {
	norm := make([]float64, out)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			v := W[o*in+i]
			for k := 0; k < r; k++ {
				v += s * B0[o*r+k] * A0[k*in+i]
			}
			norm[o] += v * v
		}
		norm[o] = math.Sqrt(norm[o])
	}
	y := make([]float64, rows*out)
	for n := 0; n < rows; n++ {
		u := make([]float64, r)
		for k := 0; k < r; k++ {
			for i := 0; i < in; i++ {
				u[k] += xd[n*in+i] * A[k*in+i]
			}
		}
		for o := 0; o < out; o++ {
			var base, based, lora float64
			for i := 0; i < in; i++ {
				base += x[n*in+i] * W[o*in+i]
				based += xd[n*in+i] * W[o*in+i]
			}
			for k := 0; k < r; k++ {
				lora += u[k] * B[o*r+k]
			}
			f := m[o] / norm[o]
			y[n*out+o] = base + (f-1)*based + f*s*lora
			if bias != nil {
				y[n*out+o] += bias[o]
			}
		}
	}
	return y
}

func f64s(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

// TestDoRALayerMatchesPEFT checks a DoRA layer, dense and on an NF4 base, at evaluation and in
// training with dropout, against the float64 reference of PEFT's forward, and the gradients lathe's
// autodiff gives A, B, the magnitude and x against central finite differences of that reference
// (the weight norm detached, as PEFT does).
func TestDoRALayerMatchesPEFT(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 3, Bias: true})
	require.NoError(t, err)
	for _, tc := range []struct {
		quant   string
		dropout float64
	}{{"", 0}, {"", 0.3}, {"nf4", 0}, {"nf4", 0.25}} {
		base := map[string]string{"": "dense", "nf4": "nf4"}[tc.quant]
		t.Run(fmt.Sprintf("%s/dropout%g", base, tc.dropout), func(t *testing.T) {
			m := loadModel(t, dir, tc.quant)
			const name, rows, seed = "model.layers.1.self_attn.q_proj", 5, int32(11)
			c := doraConfig("q_proj")
			c.R, c.LoraAlpha, c.LoraDropout = 3, 7, tc.dropout
			a, err := NewFor(c, m, 7)
			require.NoError(t, err)
			defer a.Release()
			randomizeDoRA(t, a, 8)

			g := engine.NewGraph()
			mg := m.Declare(g)
			l := mg.Layers[1].Q
			require.Equal(t, name, l.Name)
			in, out, r := l.In, l.Out, c.R
			xn := g.Param("x", engine.F32, engine.Shape{rows, in}, true)
			rn := g.Input("r", engine.F32, engine.Shape{rows, out})
			var sn *engine.Node
			if tc.dropout > 0 {
				sn = g.Input("seed", engine.I32, engine.Shape{1})
			}
			y := a.LinearFunc(g, sn)(g, l, xn)
			grads, err := g.Backward(g.Sum(g.Mul(y, rn))) // dloss/dy = R
			require.NoError(t, err)
			p := keyPrefix + name
			keys := []string{p + ".lora_A.weight", p + ".lora_B.weight", p + ".lora_magnitude_vector"}
			outs := []*engine.Node{y, grads[xn]}
			for _, k := range keys {
				n := g.Lookup(k)
				require.NotNil(t, n, k)
				require.NotNil(t, grads[n], k)
				outs = append(outs, grads[n])
			}
			prog, err := engine.Compile(g, m.Backend, outs, engine.CompileOptions{})
			require.NoError(t, err)
			defer prog.Release()
			require.NoError(t, m.Bind(prog))
			require.NoError(t, a.Bind(prog))
			x, R := randVec(rows*in, 21), randVec(rows*out, 22)
			bind := func(n *engine.Node, tt *engine.Tensor, err error) {
				require.NoError(t, err)
				t.Cleanup(tt.Release)
				require.NoError(t, prog.Bind(n, tt))
			}
			tx, err := engine.FromFloat32(m.Backend, xn.Shape(), x)
			bind(xn, tx, err)
			tr, err := engine.FromFloat32(m.Backend, rn.Shape(), R)
			bind(rn, tr, err)
			if sn != nil {
				ts, err := engine.FromInt32(m.Backend, sn.Shape(), []int32{seed})
				bind(sn, ts, err)
			}
			require.NoError(t, prog.Run())
			got := make([][]float32, len(outs))
			for i, o := range outs {
				got[i], err = prog.Float32(o)
				require.NoError(t, err)
			}

			W := f64s(denseWeight(t, m, name))
			bias, err := m.Tensors[name+".bias"].Float32()
			require.NoError(t, err)
			A, B, mag := f64s(tensor(t, a, keys[0])), f64s(tensor(t, a, keys[1])), f64s(tensor(t, a, keys[2]))
			A0, B0 := append([]float64(nil), A...), append([]float64(nil), B...)
			X := f64s(x)
			keep := make([]float64, rows*in) // nn.Dropout's factor: 0 or 1/(1−p); the mask is lathe's
			for i := range keep {
				keep[i] = 1
				if tc.dropout > 0 {
					keep[i] = 0
					if engine.DropoutKeep(seed, salt(name), uint32(i), float32(tc.dropout)) {
						keep[i] = 1 / (1 - float64(float32(tc.dropout)))
					}
				}
			}
			s := float64(a.modules[0].Scale)
			ref := func() []float64 {
				xd := make([]float64, len(X))
				for i := range X {
					xd[i] = X[i] * keep[i]
				}
				return peftDoRA(X, xd, W, f64s(bias), A, B, A0, B0, mag, rows, in, out, r, s)
			}
			want := ref()
			wantF := make([]float32, len(want))
			for i, v := range want {
				wantF[i] = float32(v)
			}
			requireClose(t, wantF, got[0], 2e-5, "y")
			loss := func() float64 {
				var l float64
				for i, v := range ref() {
					l += v * float64(R[i])
				}
				return l
			}
			for i, v := range []struct {
				name string
				p    []float64
			}{{"dx", X}, {"dA", A}, {"dB", B}, {"dm", mag}} {
				fd := make([]float64, len(v.p))
				var big float64
				for j := range v.p {
					orig := v.p[j]
					h := 1e-4 * max(1, math.Abs(orig))
					v.p[j] = orig + h
					lp := loss()
					v.p[j] = orig - h
					lm := loss()
					v.p[j] = orig
					fd[j] = (lp - lm) / (2 * h)
					big = max(big, math.Abs(fd[j]))
				}
				require.Greater(t, big, 1e-3, "%s: the reference's gradient is not trivial", v.name)
				for j := range fd {
					require.InDelta(t, fd[j], float64(got[1+i][j]), 1e-3*big, "%s[%d]", v.name, j)
				}
			}
		})
	}
}

// A new DoRA adapter is the identity (B zero, magnitudes the base's row norms), dense and on NF4.
func TestDoRAStartsAsTheBase(t *testing.T) {
	dir := tinyDir(t)
	for _, q := range []string{"", "nf4"} {
		m := loadModel(t, dir, q)
		a, err := NewFor(doraConfig("q_proj", "v_proj", "down_proj"), m, 3)
		require.NoError(t, err)
		requireClose(t, logits(t, m, nil, nil), logits(t, m, a, nil), 1e-4, "dora "+q)
		a.Release()
	}
	m := loadModel(t, dir, "")
	_, err := New(doraConfig("q_proj"), m.Cfg, m.Backend, 1)
	require.ErrorContains(t, err, "NewFor")
}

// A DoRA adapter saves with PEFT's keys (lora_magnitude_vector without ".weight", shape [out]) and
// use_dora, loads back to the same logits, and merges into the base (dense, and as a folder) to
// the adapter's logits; combining DoRA adapters is refused.
func TestDoRASaveLoadMerge(t *testing.T) {
	dir := tinyDir(t)
	m := loadModel(t, dir, "")
	a, err := NewFor(doraConfig("q_proj", "v_proj", "up_proj"), m, 3)
	require.NoError(t, err)
	defer a.Release()
	randomizeDoRA(t, a, 4)
	want := logits(t, m, a, nil)

	out := filepath.Join(t.TempDir(), "dora")
	require.NoError(t, a.Save(out))
	cfg := readJSON(t, filepath.Join(out, ConfigFile))
	require.Equal(t, true, cfg["use_dora"])
	require.Equal(t, "LORA", cfg["peft_type"])
	f, err := checkpoint.OpenSafetensors(filepath.Join(out, WeightsFile))
	require.NoError(t, err)
	names := map[string][]int{}
	for _, n := range f.Names() {
		tt, _ := f.Tensor(n)
		names[n] = tt.Shape
	}
	f.Close()
	require.Len(t, names, 2*3*3) // 2 layers × 3 modules × (A, B, magnitude)
	for _, md := range a.modules {
		require.Equal(t, []int{md.Out}, names["base_model.model."+md.Name+".lora_magnitude_vector"], md.Name)
		require.Equal(t, []int{md.R, md.In}, names["base_model.model."+md.Name+".lora_A.weight"], md.Name)
	}

	b, err := Load(out, m.Cfg, m.Backend)
	require.NoError(t, err)
	defer b.Release()
	require.True(t, b.Config.UseDoRA)
	requireClose(t, want, logits(t, m, b, nil), 1e-6, "loaded")

	_, err = Combine([]float64{1, 1}, a, b)
	require.ErrorContains(t, err, "DoRA")

	mergedDir := filepath.Join(t.TempDir(), "merged")
	_, err = MergeFolder(dir, mergedDir, b)
	require.NoError(t, err)
	mf, err := model.Load(mergedDir, m.Backend, model.LoadOptions{})
	require.NoError(t, err)
	defer mf.Release()
	requireClose(t, want, logits(t, mf, nil, nil), 1e-4, "merged folder")

	require.NoError(t, Merge(m, b))
	requireClose(t, want, logits(t, m, nil, nil), 1e-4, "merged")
}
