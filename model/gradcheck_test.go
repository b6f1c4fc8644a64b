package model_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
)

// The whole-graph part of the conformance suite (engine/enginetest checks ops one at a time and
// cannot import the model): on every backend, the gradients of a tiny Llama's loss with respect
// to a LoRA (with dropout), a QLoRA and an IA3 adapter agree with central finite differences of
// that loss, all computed by the backend.
func TestWholeGraphGradientsOnEveryBackend(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 31})
	require.NoError(t, err)
	backends := map[string]func(t *testing.T) engine.Backend{
		"cpu":    func(*testing.T) engine.Backend { return cpu.New() },
		"webgpu": func(t *testing.T) engine.Backend { return testdevice.WebGPU(t) },
		"core":   func(*testing.T) engine.Backend { return enginetest.CoreOnly(cpu.New()) },
	}
	lora := peft.LoRAConfig()
	lora.R, lora.LoraAlpha, lora.LoraDropout = 4, 8, 0.2
	lora.TargetModules = peft.Names("q_proj", "v_proj", "down_proj")
	ia3 := peft.IA3Config()
	for _, bname := range []string{"cpu", "webgpu", "core"} {
		for _, kc := range []struct {
			name  string
			quant string
			cfg   peft.Config
		}{{"lora", "", lora}, {"qlora", "nf4", lora}, {"ia3", "", ia3}} {
			t.Run(bname+"/"+kc.name, func(t *testing.T) {
				b := backends[bname](t)
				m, err := model.Load(dir, b, model.LoadOptions{Quantize: kc.quant})
				require.NoError(t, err)
				defer m.Release()
				a, err := peft.New(kc.cfg, m.Cfg, b, 3)
				require.NoError(t, err)
				defer a.Release()
				randomize(t, a, 4)
				gradCheck(t, m, a)
			})
		}
	}
}

func gradCheck(t *testing.T, m *model.Model, a *peft.Adapter) {
	const batch, seq = 2, 6
	n := batch * seq
	g := engine.NewGraph()
	mg := m.Declare(g)
	idn := g.Input("ids", engine.I32, engine.Shape{n})
	posn := g.Input("pos", engine.I32, engine.Shape{n})
	tgt := g.Input("targets", engine.I32, engine.Shape{n})
	seed := g.Input("seed", engine.I32, engine.Shape{1})
	loss := g.CrossEntropy(mg.Forward(idn, posn, batch, seq, a.LinearFunc(g, seed)), tgt, -100)
	grads, err := g.Backward(loss)
	require.NoError(t, err)
	params := a.Params()
	var gnodes []*engine.Node
	for _, p := range params {
		require.Contains(t, grads, p.Node, p.Key)
		gnodes = append(gnodes, grads[p.Node])
	}
	ids := testIDs(m.Cfg.VocabSize, n)
	pos := make([]int32, n)
	targets := make([]int32, n)
	for i := range pos {
		pos[i] = int32(i % seq)
		targets[i] = ids[(i+1)%n]
	}
	targets[seq-1] = -100
	bind := func(p *engine.Program) {
		require.NoError(t, m.Bind(p))
		require.NoError(t, a.Bind(p))
		for node, v := range map[*engine.Node][]int32{idn: ids, posn: pos, tgt: targets, seed: {77}} {
			x, err := engine.FromInt32(m.Backend, node.Shape(), v)
			require.NoError(t, err)
			t.Cleanup(x.Release)
			require.NoError(t, p.Bind(node, x))
		}
	}
	bwd, err := engine.Compile(g, m.Backend, gnodes, engine.CompileOptions{})
	require.NoError(t, err)
	defer bwd.Release()
	bind(bwd)
	require.NoError(t, bwd.Run())
	fwd, err := engine.Compile(g, m.Backend, []*engine.Node{loss}, engine.CompileOptions{})
	require.NoError(t, err)
	defer fwd.Release()
	bind(fwd)
	lossAt := func() float64 {
		require.NoError(t, fwd.Run())
		v, err := fwd.Float32(loss)
		require.NoError(t, err)
		return float64(v[0])
	}
	r := rand.New(rand.NewPCG(5, 6))
	const eps = 1e-2
	// The first and last parameters of the adapter (the first and last layers it wraps).
	for _, pi := range []int{0, 1, len(params) - 1} {
		p := params[pi]
		gv, err := bwd.Float32(gnodes[pi])
		require.NoError(t, err)
		vals, err := p.Tensor.Float32()
		require.NoError(t, err)
		scale, top := 0.0, 0
		for j, v := range gv {
			if math.Abs(float64(v)) > scale {
				scale, top = math.Abs(float64(v)), j
			}
		}
		require.NotZero(t, scale, "%s has no gradient", p.Key)
		for _, j := range []int{top, r.IntN(len(gv)), r.IntN(len(gv))} {
			var l [2]float64
			for k, d := range []float32{eps, -eps} {
				require.NoError(t, p.Tensor.SetFloat32At(j, []float32{vals[j] + d}))
				l[k] = lossAt()
			}
			require.NoError(t, p.Tensor.SetFloat32At(j, []float32{vals[j]}))
			fd := (l[0] - l[1]) / (2 * eps)
			require.InDelta(t, fd, float64(gv[j]), 0.03*scale, fmt.Sprintf("d loss/d %s[%d] on %s (largest gradient %.3g)", p.Key, j, m.Backend.Device().Backend, scale))
		}
	}
}
