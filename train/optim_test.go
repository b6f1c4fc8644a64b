package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
)

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func tensor(t *testing.T, b engine.Backend, shape engine.Shape, v []float32) *engine.Tensor {
	t.Helper()
	x, err := engine.FromFloat32(b, shape, v)
	require.NoError(t, err)
	t.Cleanup(x.Release)
	return x
}

func args(ts ...*engine.Tensor) []engine.Arg {
	out := make([]engine.Arg, len(ts))
	for i, x := range ts {
		out[i] = engine.Arg{Buf: x.Buffer(), Meta: x.Meta()}
	}
	return out
}

func values(t *testing.T, x *engine.Tensor) []float32 {
	v, err := x.Float32()
	require.NoError(t, err)
	return v
}

// refAdamW is torch.optim.AdamW's update in float64.
type refAdamW struct {
	p, m, v []float64
	wd      float64
}

func (r *refAdamW) step(g []float64, step int, lr, b1, b2, eps float64) {
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	for i := range r.p {
		r.p[i] *= 1 - lr*r.wd
		r.m[i] = b1*r.m[i] + (1-b1)*g[i]
		r.v[i] = b2*r.v[i] + (1-b2)*g[i]*g[i]
		denom := math.Sqrt(r.v[i])/math.Sqrt(bc2) + eps
		r.p[i] -= lr / bc1 * r.m[i] / denom
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func requireClose(t *testing.T, want []float64, got []float32, tol float64, msg string) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.InDelta(t, want[i], float64(got[i]), tol*(1+math.Abs(want[i])), "%s[%d]", msg, i)
	}
}

func TestAdamWMatchesTorchReference(t *testing.T) {
	b := cpu.New()
	r := rand.New(rand.NewPCG(1, 2))
	shapes := []engine.Shape{{3, 4}, {5}}
	p0 := [][]float32{randVec(r, 12, 1), randVec(r, 5, 1)}
	params := []Param{
		{Name: "a.lora_A.weight", Tensor: tensor(t, b, shapes[0], p0[0])},
		{Name: "a.bias", Tensor: tensor(t, b, shapes[1], p0[1]), NoDecay: true},
	}
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	opt, err := NewAdamW(b, params, cfg)
	require.NoError(t, err)
	defer opt.Close()
	refs := []*refAdamW{
		{p: f64s(p0[0]), m: make([]float64, 12), v: make([]float64, 12), wd: 0.1},
		{p: f64s(p0[1]), m: make([]float64, 5), v: make([]float64, 5)},
	}
	lrs := []float32{1e-2, 5e-3, 2e-2}
	for s, lr := range lrs {
		gs := [][]float32{randVec(r, 12, 0.1), randVec(r, 5, 0.1)}
		g0, g1 := tensor(t, b, shapes[0], gs[0]), tensor(t, b, shapes[1], gs[1])
		info, err := opt.Step(args(g0, g1), lr, 1)
		require.NoError(t, err)
		require.Equal(t, s+1, info.Step)
		require.False(t, info.Skipped)
		var ss float64
		for i, ref := range refs {
			ref.step(f64s(gs[i]), s+1, float64(lr), 0.9, 0.95, 1e-8)
			for _, g := range gs[i] {
				ss += float64(g) * float64(g)
			}
		}
		require.InDelta(t, math.Sqrt(ss), info.GradNorm, 1e-5)
		for i, p := range params {
			requireClose(t, refs[i].p, values(t, p.Tensor), 1e-6, p.Name)
		}
	}
	st, err := opt.State()
	require.NoError(t, err)
	require.Equal(t, 3, st.Step)
	for i := range refs {
		requireClose(t, refs[i].m, st.Params[i].M, 1e-6, "m")
		requireClose(t, refs[i].v, st.Params[i].V, 1e-6, "v")
	}
}

func TestClipAndScale(t *testing.T) {
	b := cpu.New()
	p := tensor(t, b, engine.Shape{4}, []float32{1, 2, 3, 4})
	cfg := DefaultAdamW()
	cfg.MaxGradNorm = 1
	opt, err := NewAdamW(b, []Param{{Name: "w", Tensor: p}}, cfg)
	require.NoError(t, err)
	defer opt.Close()
	g := []float32{6, 0, 8, 0} // norm 10
	gt := tensor(t, b, engine.Shape{4}, g)
	info, err := opt.Step(args(gt), 1e-3, 1)
	require.NoError(t, err)
	require.True(t, info.Clipped)
	require.InDelta(t, 10, info.GradNorm, 1e-5)
	require.Equal(t, g, values(t, gt), "the caller's gradient is not modified")
	// After one step m = (1-beta1)·g_clipped, so the clipped gradient's norm is max_norm.
	st, err := opt.State()
	require.NoError(t, err)
	var n2 float64
	for _, m := range st.Params[0].M {
		c := float64(m) / (1 - 0.9)
		n2 += c * c
	}
	require.InDelta(t, 1, math.Sqrt(n2), 1e-5)

	// Below max_norm nothing is clipped; scale multiplies the gradient first (and the norm).
	opt2, err := NewAdamW(b, []Param{{Name: "w", Tensor: tensor(t, b, engine.Shape{4}, []float32{1, 2, 3, 4})}}, cfg)
	require.NoError(t, err)
	defer opt2.Close()
	small := tensor(t, b, engine.Shape{4}, []float32{0.3, 0, 0.4, 0}) // norm 0.5
	info, err = opt2.Step(args(small), 1e-3, 0.5)
	require.NoError(t, err)
	require.False(t, info.Clipped)
	require.InDelta(t, 0.25, info.GradNorm, 1e-6)
	st, err = opt2.State()
	require.NoError(t, err)
	require.InDelta(t, 0.1*0.15, float64(st.Params[0].M[0]), 1e-7)
}

func TestNaNGradientSkipsStep(t *testing.T) {
	b := cpu.New()
	w0 := []float32{1, 2, 3}
	p := tensor(t, b, engine.Shape{3}, w0)
	q := tensor(t, b, engine.Shape{2}, []float32{5, 6})
	opt, err := NewAdamW(b, []Param{{Name: "p", Tensor: p}, {Name: "q", Tensor: q}}, DefaultAdamW())
	require.NoError(t, err)
	defer opt.Close()
	_, err = opt.Step(args(tensor(t, b, engine.Shape{3}, []float32{0.1, 0.2, 0.3}), tensor(t, b, engine.Shape{2}, []float32{1, 1})), 1e-2, 1)
	require.NoError(t, err)
	before, err := opt.State()
	require.NoError(t, err)
	pw, qw := values(t, p), values(t, q)

	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		info, err := opt.Step(args(tensor(t, b, engine.Shape{3}, []float32{0.1, bad, 0.3}), tensor(t, b, engine.Shape{2}, []float32{1, 1})), 1e-2, 1)
		require.NoError(t, err)
		require.True(t, info.Skipped)
		require.Equal(t, 1, info.Step)
		require.True(t, math.IsNaN(info.GradNorm) || math.IsInf(info.GradNorm, 0))
		require.Equal(t, pw, values(t, p))
		require.Equal(t, qw, values(t, q))
		after, err := opt.State()
		require.NoError(t, err)
		require.Equal(t, before, after)
		require.Equal(t, 1, opt.StepCount())
	}
}

func TestGradAccumulation(t *testing.T) {
	b := cpu.New()
	r := rand.New(rand.NewPCG(3, 4))
	shape := engine.Shape{2, 3}
	newParams := func() []Param {
		return []Param{{Name: "w", Tensor: tensor(t, b, shape, []float32{1, 2, 3, 4, 5, 6})}}
	}
	pa := newParams()
	acc, err := NewGradAccumulator(b, pa)
	require.NoError(t, err)
	defer acc.Close()
	const k = 3
	sum := make([]float32, 6)
	for range k {
		g := randVec(r, 6, 1)
		for i := range sum {
			sum[i] += g[i]
		}
		require.NoError(t, acc.Add(args(tensor(t, b, shape, g))))
	}
	require.Equal(t, k, acc.Count())
	buf := make([]byte, 24)
	require.NoError(t, b.Read(acc.Grads()[0].Buf, 0, buf))
	sumT := tensor(t, b, shape, sum)
	want := values(t, sumT)
	accT, err := engine.FromBytes(b, engine.F32, shape, buf)
	require.NoError(t, err)
	defer accT.Release()
	require.Equal(t, want, values(t, accT), "the accumulated sum equals the batch's summed gradient")

	// One step on the mean of k micro-batches equals one step on the batch's mean gradient.
	cfg := DefaultAdamW()
	cfg.MaxGradNorm = 0
	o1, err := NewAdamW(b, pa, cfg)
	require.NoError(t, err)
	defer o1.Close()
	_, err = o1.Step(acc.Grads(), 1e-2, acc.Scale())
	require.NoError(t, err)
	pb := newParams()
	o2, err := NewAdamW(b, pb, cfg)
	require.NoError(t, err)
	defer o2.Close()
	mean := make([]float32, 6)
	for i := range mean {
		mean[i] = sum[i] / k
	}
	_, err = o2.Step(args(tensor(t, b, shape, mean)), 1e-2, 1)
	require.NoError(t, err)
	requireClose(t, f64s(values(t, pb[0].Tensor)), values(t, pa[0].Tensor), 1e-6, "w")

	acc.Reset()
	require.Equal(t, float32(1), acc.Scale())
	require.NoError(t, acc.Add(args(tensor(t, b, shape, mean))))
	require.NoError(t, b.Read(acc.Grads()[0].Buf, 0, buf))
	require.NoError(t, accT.SetBytes(buf))
	require.Equal(t, mean, values(t, accT), "after Reset the next Add starts a new sum")
	require.Error(t, acc.Add(nil))
}

func TestOptimizerStateRoundTrip(t *testing.T) {
	testOptimizerStateRoundTrip(t, DefaultAdamW())
}

func TestOptimizer8bitStateRoundTrip(t *testing.T) {
	cfg := DefaultAdamW()
	cfg.EightBit = true
	testOptimizerStateRoundTrip(t, cfg)
}

// testOptimizerStateRoundTrip: a fresh optimizer restored from another's state (also through a
// checkpoint file) continues exactly like it.
func testOptimizerStateRoundTrip(t *testing.T, cfg AdamWConfig) {
	b := cpu.New()
	r := rand.New(rand.NewPCG(5, 6))
	mk := func() []Param {
		return []Param{{Name: "x", Tensor: tensor(t, b, engine.Shape{5}, []float32{1, 2, 3, 4, 5})}}
	}
	pa, pb := mk(), mk()
	oa, err := NewAdamW(b, pa, cfg)
	require.NoError(t, err)
	defer oa.Close()
	ob, err := NewAdamW(b, pb, cfg)
	require.NoError(t, err)
	defer ob.Close()
	g := func() []engine.Arg { return args(tensor(t, b, engine.Shape{5}, randVec(r, 5, 1))) }
	for range 2 {
		grads := g()
		_, err := oa.Step(grads, 1e-2, 1)
		require.NoError(t, err)
		_, err = ob.Step(grads, 1e-2, 1)
		require.NoError(t, err)
	}
	st, err := oa.State()
	require.NoError(t, err)
	require.Equal(t, cfg.Name(), st.Optim)
	path := filepath.Join(t.TempDir(), OptimizerFile)
	require.NoError(t, writeOptimizer(path, st))
	read, err := readOptimizer(path)
	require.NoError(t, err)
	require.Equal(t, st, read, "the checkpoint file holds the state as it is")
	// A fresh optimizer restored from the state continues exactly like the original.
	oc, err := NewAdamW(b, pb, cfg)
	require.NoError(t, err)
	defer oc.Close()
	require.NoError(t, oc.SetState(read))
	require.Equal(t, 2, oc.StepCount())
	grads := g()
	_, err = oa.Step(grads, 1e-2, 1)
	require.NoError(t, err)
	_, err = oc.Step(grads, 1e-2, 1)
	require.NoError(t, err)
	require.Equal(t, values(t, pa[0].Tensor), values(t, pb[0].Tensor))

	bad := st
	bad.Params = []ParamState{{Name: "y", Shape: []int{5}, M: make([]float32, 5), V: make([]float32, 5)}}
	require.ErrorContains(t, oc.SetState(bad), "no state for x")
	bad.Params = []ParamState{{Name: "x", Shape: []int{5, 1}, M: make([]float32, 5), V: make([]float32, 5), Q: st.Params[0].Q, Absmax: st.Params[0].Absmax}}
	require.ErrorContains(t, oc.SetState(bad), "shape")
	bad = st
	bad.Optim = map[bool]string{true: OptimAdamW, false: OptimAdamW8bit}[cfg.EightBit]
	require.ErrorContains(t, oc.SetState(bad), "the optimizer is "+cfg.Name())

	_, err = NewAdamW(b, []Param{{Name: "x", Tensor: pa[0].Tensor}, {Name: "x", Tensor: pa[0].Tensor}}, DefaultAdamW())
	require.Error(t, err)
	_, err = NewAdamW(b, pa, AdamWConfig{Beta1: 1, Beta2: 0.9, Eps: 1e-8})
	require.Error(t, err)
	_, err = oa.Step(nil, 1e-2, 1)
	require.Error(t, err)
}

func TestSchedule(t *testing.T) {
	cos := Schedule{Warmup: 10, Total: 110, Kind: Cosine}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0}, {5, 0.5}, {10, 1}, {35, 0.5 * (1 + math.Cos(math.Pi/4))}, {60, 0.5}, {110, 0}, {500, 0}} {
		require.InDelta(t, c.want, cos.Factor(c.step), 1e-12, "cosine step %d", c.step)
	}
	require.InDelta(t, 3e-4*0.5, cos.LR(60, 3e-4), 1e-15)
	floor := Schedule{Warmup: 10, Total: 110, Kind: Cosine, MinRatio: 0.1}
	require.InDelta(t, 0.55, floor.Factor(60), 1e-12)
	require.InDelta(t, 0.1, floor.Factor(110), 1e-12)
	require.InDelta(t, 0.1, floor.Factor(1000), 1e-12)

	lin := Schedule{Warmup: 10, Total: 110, Kind: Linear}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0}, {1, 0.1}, {10, 1}, {35, 0.75}, {60, 0.5}, {110, 0}, {200, 0}} {
		require.InDelta(t, c.want, lin.Factor(c.step), 1e-12, "linear step %d", c.step)
	}
	require.InDelta(t, 0.2+0.8*0.5, Schedule{Warmup: 10, Total: 110, Kind: Linear, MinRatio: 0.2}.Factor(60), 1e-12)

	con := Schedule{Warmup: 4, Total: 100, Kind: Constant}
	require.InDelta(t, 0.25, con.Factor(1), 1e-12)
	require.InDelta(t, 1, con.Factor(50), 1e-12)
	require.InDelta(t, 1, Schedule{Total: 10, Kind: Cosine}.Factor(0), 1e-12, "no warmup starts at the base rate")

	require.NoError(t, cos.Validate())
	require.Error(t, Schedule{Kind: "step"}.Validate())
	require.Error(t, Schedule{Kind: Cosine, MinRatio: 2}.Validate())
	require.Error(t, Schedule{Kind: Cosine, Warmup: -1}.Validate())
}

// TestOptimizerOnWebGPU runs accumulation, clipping and AdamW launches on the WebGPU backend and
// checks them against the CPU backend: the GPU backend rejects an output that aliases an operand,
// so this is where a launch sequence that only the CPU tolerates would fail.
func TestOptimizerOnWebGPU(t *testing.T) {
	for _, eightBit := range []bool{false, true} {
		t.Run(map[bool]string{false: OptimAdamW, true: OptimAdamW8bit}[eightBit], func(t *testing.T) {
			testOptimizerOnWebGPU(t, eightBit)
		})
	}
}

// testOptimizerOnWebGPU runs three accumulated, clipped updates on the CPU and on WebGPU.
func testOptimizerOnWebGPU(t *testing.T, eightBit bool) {
	gpu := testdevice.WebGPU(t)
	run := func(b engine.Backend) ([][]float32, []StepInfo, OptimizerState) {
		r := rand.New(rand.NewPCG(7, 8))
		shapes := []engine.Shape{{16, 8}, {33}, {3, 5}}
		if eightBit { // past one block of 256, the last partial
			shapes[0] = engine.Shape{40, 9}
		}
		var params []Param
		for i, s := range shapes {
			params = append(params, Param{Name: fmt.Sprint("p", i), Tensor: tensor(t, b, s, randVec(r, s.Numel(), 1)), NoDecay: i == 1})
		}
		cfg := DefaultAdamW()
		cfg.WeightDecay, cfg.MaxGradNorm, cfg.EightBit = 0.01, 2, eightBit
		opt, err := NewAdamW(b, params, cfg)
		require.NoError(t, err)
		defer opt.Close()
		acc, err := NewGradAccumulator(b, params)
		require.NoError(t, err)
		defer acc.Close()
		var infos []StepInfo
		for step := range 3 {
			acc.Reset()
			for range 2 {
				var gs []*engine.Tensor
				for _, s := range shapes {
					gs = append(gs, tensor(t, b, s, randVec(r, s.Numel(), float64(step+1))))
				}
				require.NoError(t, acc.Add(args(gs...)))
			}
			info, err := opt.Step(acc.Grads(), 1e-2, acc.Scale())
			require.NoError(t, err)
			infos = append(infos, info)
		}
		var out [][]float32
		for _, p := range params {
			out = append(out, values(t, p.Tensor))
		}
		st, err := opt.State()
		require.NoError(t, err)
		return out, infos, st
	}
	wantP, wantInfo, wantSt := run(cpu.New())
	gotP, gotInfo, gotSt := run(gpu)
	for i := range wantInfo {
		require.Equal(t, wantInfo[i].Clipped, gotInfo[i].Clipped)
		require.InDelta(t, wantInfo[i].GradNorm, gotInfo[i].GradNorm, 1e-4*wantInfo[i].GradNorm)
	}
	require.True(t, wantInfo[2].Clipped, "the test exercises clipping")
	for i := range wantP {
		requireClose(t, f64s(wantP[i]), gotP[i], 1e-5, "param")
		if eightBit {
			requireClose(t, f64s(wantSt.Params[i].Absmax), gotSt.Params[i].Absmax, 1e-5, "absmax")
			// The same codes but at a rounding tie (none expected on these inputs).
			require.Equal(t, wantSt.Params[i].Q, gotSt.Params[i].Q, "codes of %s", wantSt.Params[i].Name)
			continue
		}
		requireClose(t, f64s(wantSt.Params[i].M), gotSt.Params[i].M, 1e-5, "m")
		requireClose(t, f64s(wantSt.Params[i].V), gotSt.Params[i].V, 1e-5, "v")
	}
}
