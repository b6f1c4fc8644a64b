package hyper

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdevice"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

func tinyModel(t *testing.T, b engine.Backend) *model.Model {
	t.Helper()
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 1, Bias: true})
	require.NoError(t, err)
	m, err := model.Load(dir, b, model.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(m.Release)
	return m
}

func smallConfig(head string) Config {
	return Config{Latent: 16, HeadIn: 24, Head: head, R: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}, EmbDim: 8}
}

// randomize moves every parameter off its initial value (the L head starts with B = 0, which
// would hide half the network from a check).
func randomize(t *testing.T, n *Net, seed uint64, scale float64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	for _, name := range n.names {
		v, err := n.tensors[name].Float32()
		require.NoError(t, err)
		bound := scale / math.Sqrt(float64(n.shapes[name].Last()))
		for i := range v {
			v[i] += float32(bound * r.NormFloat64())
		}
		require.NoError(t, n.tensors[name].SetFloat32(v))
	}
}

func randomEmb(seed uint64, d int) []float32 {
	r := rand.New(rand.NewPCG(seed, 9))
	v := make([]float32, d)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// refNet is a float64 reference of the network, written from its definition (package doc).
func refNet(t *testing.T, n *Net, emb []float32) (A, B map[string][]float64) {
	t.Helper()
	p := map[string][]float64{}
	for _, name := range n.names {
		v, err := n.tensors[name].Float32()
		require.NoError(t, err)
		p[name] = f64(v)
	}
	linear := func(x []float64, w, b string, out, in int) []float64 {
		y := make([]float64, out)
		for o := range out {
			s := 0.0
			if b != "" {
				s = p[b][o]
			}
			for i := range in {
				s += p[w][o*in+i] * x[i]
			}
			y[o] = s
		}
		return y
	}
	silu := func(x []float64) []float64 {
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = v / (1 + math.Exp(-v))
		}
		return y
	}
	layerNorm := func(x []float64, prefix string) []float64 {
		mean, vr := 0.0, 0.0
		for _, v := range x {
			mean += v
		}
		mean /= float64(len(x))
		for _, v := range x {
			vr += (v - mean) * (v - mean)
		}
		vr /= float64(len(x))
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = (v-mean)/math.Sqrt(vr+1e-5)*p[prefix+".weight"][i] + p[prefix+".bias"][i]
		}
		return y
	}
	add := func(a, b []float64) []float64 {
		y := make([]float64, len(a))
		for i := range a {
			y[i] = a[i] + b[i]
		}
		return y
	}
	c := n.Cfg
	lat, r := c.Latent, c.R
	task := layerNorm(linear(f64(emb), "task.weight", "task.bias", lat/2, c.EmbDim), "task_norm")
	A, B = map[string][]float64{}, map[string][]float64{}
	for _, tg := range n.targets {
		kd := n.kinds[tg.kind]
		// concat(task, layer embedding, module embedding) through the mixer's one Linear
		cat := append(append(append([]float64(nil), task...), p["layer_emb.weight"][tg.layer*lat/4:(tg.layer+1)*lat/4]...),
			p["module_emb.weight"][tg.kind*lat/4:(tg.kind+1)*lat/4]...)
		w := make([]float64, 4*lat*lat)
		for o := range 4 * lat {
			copy(w[o*lat:], p["mixer.0.weight_task"][o*lat/2:(o+1)*lat/2])
			copy(w[o*lat+lat/2:], p["mixer.0.weight_layer"][o*lat/4:(o+1)*lat/4])
			copy(w[o*lat+3*lat/4:], p["mixer.0.weight_module"][o*lat/4:(o+1)*lat/4])
		}
		p["cat.weight"] = w
		x := silu(linear(cat, "cat.weight", "mixer.0.bias", 4*lat, lat))
		x = silu(linear(x, "mixer.2.weight", "mixer.2.bias", lat, 4*lat))
		for _, blk := range []string{"res1", "res2"} {
			h := silu(linear(layerNorm(x, blk+".norm"), blk+".0.weight", blk+".0.bias", 4*lat, lat))
			x = add(x, silu(linear(h, blk+".2.weight", blk+".2.bias", lat, 4*lat)))
		}
		h := silu(linear(layerNorm(x, "to_head.norm"), "to_head.0.weight", "to_head.0.bias", c.HeadIn, lat))
		if c.Head == HeadL {
			A[tg.Name] = linear(h, "head."+kd.name+".A.weight", "head."+kd.name+".A.bias", r*kd.in, c.HeadIn)
			B[tg.Name] = linear(h, "head."+kd.name+".B.weight", "head."+kd.name+".B.bias", r*kd.out, c.HeadIn)
			continue
		}
		oa := linear(add(h, p["head.emb_A"]), "head.weight", "head.bias", r*n.maxDim, c.HeadIn)
		ob := linear(add(h, p["head.emb_B"]), "head.weight", "head.bias", r*n.maxDim, c.HeadIn)
		a, b := make([]float64, r*kd.in), make([]float64, kd.out*r)
		for k := range r {
			for i := range kd.in {
				a[k*kd.in+i] = oa[k*n.maxDim+i]
			}
			for o := range kd.out {
				b[o*r+k] = ob[k*n.maxDim+o]
			}
		}
		A[tg.Name], B[tg.Name] = a, b
	}
	return A, B
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func closeTo(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	require.Len(t, got, len(want), what)
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
		require.InDelta(t, want[i], float64(got[i]), tol*(1+math.Abs(want[i])), "%s[%d]", what, i)
	}
	require.Greater(t, den, 0.0, "%s is all zeros: the check would prove nothing", what)
	require.Less(t, num/den, 1e-9, "%s: NMSE", what)
}

func examples(t *testing.T, m *model.Model, n int, seed uint64) []train.Example {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	var ex []train.Example
	enc := train.NewIDEncoder(m.Cfg.VocabSize)
	for range n {
		ids := make([]int64, 9)
		for i := range ids {
			ids[i] = int64(r.IntN(m.Cfg.VocabSize))
		}
		e, err := enc.InputIDs(ids, nil)
		require.NoError(t, err)
		ex = append(ex, e)
	}
	return ex
}

// The generated adapter is the network's forward pass (a float64 reference), and the adapter
// Generate writes, loaded back as an ordinary PEFT LoRA, gives the loss the network's own graph
// gives: on the CPU and on the GPU (lavapipe in CI), with both heads.
func TestGeneratedAdapterIsTheNetworkForward(t *testing.T) {
	for _, be := range []struct {
		name string
		b    func(t *testing.T) engine.Backend
	}{{"cpu", func(*testing.T) engine.Backend { return cpu.New() }}, {"webgpu", func(t *testing.T) engine.Backend { return testdevice.WebGPU(t) }}} {
		for _, head := range []string{HeadL, HeadM} {
			t.Run(be.name+"/"+head, func(t *testing.T) {
				m := tinyModel(t, be.b(t))
				n, err := New(smallConfig(head), m.Cfg, m.Backend, 1)
				require.NoError(t, err)
				defer n.Release()
				randomize(t, n, 2, 1)
				emb := randomEmb(3, 8)
				A, B, err := n.Forward(emb)
				require.NoError(t, err)
				rA, rB := refNet(t, n, emb)
				require.Len(t, A, 2*m.Cfg.NumLayers)
				for name := range rA {
					closeTo(t, name+" A", A[name], rA[name], 1e-4)
					closeTo(t, name+" B", B[name], rB[name], 1e-4)
				}
				a, err := n.Generate(emb)
				require.NoError(t, err)
				dir := t.TempDir()
				require.NoError(t, a.Save(dir))
				a.Release()
				loaded, err := peft.Load(dir, m.Cfg, m.Backend)
				require.NoError(t, err)
				defer loaded.Release()
				for _, md := range loaded.Modules() {
					tA, _ := loaded.Tensor("base_model.model." + md.Name + ".lora_A.weight")
					v, err := tA.Float32()
					require.NoError(t, err)
					require.Equal(t, A[md.Name], v)
				}
				ex := examples(t, m, 6, 4)
				sg, err := train.NewStepGraph(m, loaded, 2, 16, false, false)
				require.NoError(t, err)
				defer sg.Close()
				want, _, err := train.Evaluate(sg, ex, 2, 16)
				require.NoError(t, err)
				got, err := EvalTask(m, n, emb, ex, 2, 16)
				require.NoError(t, err)
				require.InDelta(t, want, got, 1e-5)
				base, err := train.NewStepGraph(m, nil, 2, 16, false, false)
				require.NoError(t, err)
				defer base.Close()
				bl, _, err := train.Evaluate(base, ex, 2, 16)
				require.NoError(t, err)
				require.Greater(t, math.Abs(bl-want), 1e-3, "the generated adapter changes nothing: the check is blind")
			})
		}
	}
}

// The loss's gradients reach the network's parameters through the generated A and B: each
// parameter's gradient, along a random direction, equals the central finite difference of the
// loss of the whole model (the engine's autodiff, no hand-written backward).
func TestGradientFlowsThroughTheAdapterIntoTheNetwork(t *testing.T) {
	for _, head := range []string{HeadL, HeadM} {
		t.Run(head, func(t *testing.T) {
			m := tinyModel(t, cpu.New())
			n, err := New(smallConfig(head), m.Cfg, m.Backend, 1)
			require.NoError(t, err)
			defer n.Release()
			randomize(t, n, 5, 1)
			emb := randomEmb(6, 8)
			require.NoError(t, n.SetTask(emb))
			ex := examples(t, m, 2, 7)
			batches, err := train.EvalBatches(ex, 1, 16)
			require.NoError(t, err)
			b := batches[0]
			sg, err := train.NewTrainableStep(m, n, 1, 16, true, false, nil)
			require.NoError(t, err)
			defer sg.Close()
			loss := func() float64 {
				l, err := sg.Run(b, 0)
				require.NoError(t, err)
				return l
			}
			loss()
			grads := map[string][]float32{}
			for i, p := range sg.Params {
				v, err := sg.Program.Float32(sg.Grads[i])
				require.NoError(t, err)
				grads[p.Name] = v
			}
			r := rand.New(rand.NewPCG(8, 8))
			checked := 0
			for _, name := range []string{"task.weight", "task_norm.weight", "layer_emb.weight", "module_emb.weight", "mixer.0.weight_task",
				"res1.0.weight", "res2.norm.bias", "to_head.0.weight", "head.q_proj.A.weight", "head.v_proj.B.bias", "head.weight", "head.emb_B"} {
				tt, ok := n.tensors[name]
				if !ok {
					continue
				}
				v0, err := tt.Float32()
				require.NoError(t, err)
				dir := make([]float64, len(v0))
				var an float64
				for i := range dir {
					dir[i] = r.NormFloat64()
					an += dir[i] * float64(grads[name][i])
				}
				h := 1e-2 / math.Sqrt(float64(len(v0)))
				at := func(s float64) float64 {
					v := make([]float32, len(v0))
					for i := range v {
						v[i] = v0[i] + float32(s*h*dir[i])
					}
					require.NoError(t, tt.SetFloat32(v))
					return loss()
				}
				fd := (at(1) - at(-1)) / (2 * h)
				require.NoError(t, tt.SetFloat32(v0))
				require.Greater(t, math.Abs(an), 1e-4, "%s: the gradient is ~0, the check proves nothing", name)
				require.InDelta(t, fd, an, 0.03*math.Abs(an)+2e-4, "%s: autodiff %g, finite difference %g", name, an, fd)
				checked++
			}
			require.GreaterOrEqual(t, checked, 9)
		})
	}
}

// Save and Load keep every parameter and the config; the loaded network generates the same
// adapter. Bad files are errors naming what is wrong.
func TestSaveLoadRoundTrip(t *testing.T) {
	m := tinyModel(t, cpu.New())
	for _, head := range []string{HeadL, HeadM} {
		n, err := New(smallConfig(head), m.Cfg, m.Backend, 1)
		require.NoError(t, err)
		randomize(t, n, 11, 1)
		dir := t.TempDir()
		require.NoError(t, n.Save(dir))
		l, err := Load(dir, m.Cfg, m.Backend)
		require.NoError(t, err)
		require.Equal(t, n.Cfg, l.Cfg)
		emb := randomEmb(12, 8)
		A1, B1, err := n.Forward(emb)
		require.NoError(t, err)
		A2, B2, err := l.Forward(emb)
		require.NoError(t, err)
		require.Equal(t, A1, A2)
		require.Equal(t, B1, B2)
		n.Release()
		l.Release()

		raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
		require.NoError(t, err)
		var c map[string]any
		require.NoError(t, json.Unmarshal(raw, &c))
		c["r"] = 5
		bad, _ := json.Marshal(c)
		require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), bad, 0o644))
		_, err = Load(dir, m.Cfg, m.Backend)
		require.ErrorContains(t, err, "has shape")
	}
	_, err := New(Config{Latent: 10, HeadIn: 8, Head: "L", R: 2, Alpha: 2, Targets: []string{"q_proj"}, EmbDim: 4}, m.Cfg, m.Backend, 1)
	require.ErrorContains(t, err, "multiple of 4")
	_, err = New(Config{Latent: 8, HeadIn: 8, Head: "S", R: 2, Alpha: 2, Targets: []string{"q_proj"}, EmbDim: 4}, m.Cfg, m.Backend, 1)
	require.ErrorContains(t, err, "not L or M")
}

// Both training modes lower their loss: SFT through the generated adapters of two tasks, and
// reconstruction of two given LoRAs (L1 on A and B, and on ΔW), on the CPU and the GPU.
func TestTrainingModesLowerTheLoss(t *testing.T) {
	for _, be := range []struct {
		name string
		b    func(t *testing.T) engine.Backend
	}{{"cpu", func(*testing.T) engine.Backend { return cpu.New() }}, {"webgpu", func(t *testing.T) engine.Backend { return testdevice.WebGPU(t) }}} {
		t.Run(be.name, func(t *testing.T) {
			m := tinyModel(t, be.b(t))
			dir := t.TempDir()
			var tasks []Task
			for k := range 2 {
				data := filepath.Join(dir, fmt.Sprintf("t%d.jsonl", k))
				var lines []byte
				for i := range 24 {
					ids := []int{5 + k, 9, 10 + i%3, 30 + 7*k, 31 + 7*k, 32 + 7*k}
					raw, _ := json.Marshal(map[string]any{"input_ids": ids})
					lines = append(append(lines, raw...), '\n')
				}
				require.NoError(t, os.WriteFile(data, lines, 0o644))
				lora := filepath.Join(dir, fmt.Sprintf("lora%d", k))
				lc := peft.LoRAConfig()
				lc.R, lc.LoraAlpha, lc.TargetModules = 4, 8, peft.Names("q_proj", "v_proj")
				a, err := peft.New(lc, m.Cfg, m.Backend, uint64(20+k))
				require.NoError(t, err)
				for _, key := range a.Keys() {
					tt, _ := a.Tensor(key)
					v := randomEmb(uint64(len(key)+k), tt.Shape().Numel())
					for i := range v {
						v[i] *= 0.1
					}
					require.NoError(t, tt.SetFloat32(v))
				}
				require.NoError(t, a.Save(lora))
				a.Release()
				tasks = append(tasks, Task{Description: fmt.Sprintf("task %d", k), Data: data, Adapter: lora})
			}
			embs := [][]float32{randomEmb(1, 8), randomEmb(2, 8)}
			cfg := TrainConfig{Steps: 30, Batch: 2, Seq: 12, LR: 3e-3, MaxGradNorm: 1, Seed: 1, EvalFraction: 0.2, ReconLoss: "ab"}
			n, err := New(smallConfig(HeadL), m.Cfg, m.Backend, 1)
			require.NoError(t, err)
			res, err := TrainSFT(m, n, tasks, embs, cfg, nil)
			require.NoError(t, err)
			t.Logf("SFT %+v", res)
			require.Less(t, res.LossEnd, 0.7*res.LossStart, "SFT: %+v", res)
			require.NotNil(t, res.EvalLoss)
			n.Release()
			for _, loss := range []string{"ab", "delta"} {
				if be.name == "webgpu" && loss == "ab" {
					continue // the same program as delta's, but for the generated tensors; keep lavapipe's time short
				}
				n, err := New(smallConfig(HeadM), m.Cfg, m.Backend, 1)
				require.NoError(t, err)
				randomize(t, n, 3, 0.3)
				cfg.ReconLoss = loss
				cfg.LR = 1e-2
				res, err := TrainRecon(m, n, tasks, embs, cfg, nil)
				require.NoError(t, err)
				t.Logf("recon %+v", res)
				require.Less(t, res.LossEnd, 0.8*res.LossStart, "recon %s: %+v", loss, res)
				n.Release()
			}
		})
	}
}

func TestReadTasks(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tasks.jsonl")
	require.NoError(t, os.WriteFile(p, []byte(`{"description":"reverse the list","data":"rev.jsonl"}`+"\n\n"+`{"description":"copy","adapter":"/abs/lora"}`+"\n"), 0o644))
	ts, err := ReadTasks(p)
	require.NoError(t, err)
	require.Equal(t, []Task{{Description: "reverse the list", Data: filepath.Join(dir, "rev.jsonl")}, {Description: "copy", Adapter: "/abs/lora"}}, ts)
	for _, bad := range []string{`{"description":"","data":"x"}`, `{"description":"x"}`, `{"description":"x","data":"a","adapter":"b"}`, `{"description":"x","data":"a","extra":1}`, ``} {
		require.NoError(t, os.WriteFile(p, []byte(bad), 0o644))
		_, err := ReadTasks(p)
		require.Error(t, err, bad)
	}
}

// The generated task family: each family's answer for a known list, and the held-out family left
// out of tasks.jsonl (its files are still written, for evaluation).
func TestFamilies(t *testing.T) {
	want := map[string]string{"reverse": "ball sun cat", "copy": "cat sun ball", "first": "cat", "last": "ball",
		"twice": "cat cat sun sun ball ball", "sort": "ball cat sun"}
	for _, f := range Families() {
		if w, ok := want[f.Name]; ok {
			require.Equal(t, w, strings.Join(f.Do([]string{"cat", "sun", "ball"}), " "), f.Name)
		}
	}
	fs := Families()
	require.Equal(t, "hat fun", strings.Join(fs[6].Do([]string{"cat", "sun"}), " "))
	require.Equal(t, "cold down", strings.Join(fs[7].Do([]string{"hot", "up"}), " "))
	dir := t.TempDir()
	require.NoError(t, WriteFamilies(dir, 1, 5, 3, "last"))
	ts, err := ReadTasks(filepath.Join(dir, "tasks.jsonl"))
	require.NoError(t, err)
	require.Len(t, ts, len(fs)-1)
	for _, tk := range ts {
		require.NotEqual(t, "say the last word of the list", tk.Description)
	}
	require.FileExists(t, filepath.Join(dir, "last-eval.jsonl"))
	ex := fs[0].Examples(1, 4)
	require.Equal(t, ex, fs[0].Examples(1, 4), "deterministic")
	require.ErrorContains(t, WriteFamilies(dir, 1, 5, 3, "nope"), "no family")
}
