package peft

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"

	"github.com/lathe-ml/lathe/internal/torchrand"
)

// refPrune keeps the int(d·n) largest magnitudes, counted one value at a time (the values are
// random normals: no ties).
func refPrune(x []float64, d float64) []float64 {
	if d >= 1 {
		return x
	}
	k := int(d * float64(len(x)))
	out := make([]float64, len(x))
	for i, v := range x {
		bigger := 0
		for _, u := range x {
			if math.Abs(u) > math.Abs(v) {
				bigger++
			}
		}
		if bigger < k {
			out[i] = v
		}
	}
	return out
}

// refMerge is merge_utils' method over stacked task tensors, written as PEFT's torch code reads.
// DARE's masks are torch.bernoulli's (torchrand's own test holds them to torch's), the kept
// values rescaled by 1/d.
func refMerge(method string, tasks [][]float64, w []float64, d float64, rng *torchrand.MT19937) []float64 {
	n := len(tasks[0])
	stack := make([][]float64, len(tasks))
	for i, t := range tasks {
		switch method {
		case "ties", "magnitude_prune":
			stack[i] = refPrune(t, d)
		case "dare_linear", "dare_ties":
			if d >= 1 {
				stack[i] = t
				break
			}
			stack[i] = make([]float64, n)
			for j := range t {
				if rng.Float32() < float32(d) {
					stack[i][j] = t[j] / d
				}
			}
		default:
			stack[i] = t
		}
	}
	out := make([]float64, n)
	for j := 0; j < n; j++ {
		if method == "ties" || method == "dare_ties" {
			total := 0.0
			for i := range stack {
				total += stack[i][j]
			}
			maj := 1.0
			if total < 0 {
				maj = -1
			}
			sum, cnt := 0.0, 0.0
			for i := range stack {
				if (stack[i][j] > 0 && maj > 0) || (stack[i][j] < 0 && maj < 0) {
					sum += stack[i][j] * w[i]
					cnt++
				}
			}
			out[j] = sum / math.Max(cnt, 1)
			continue
		}
		for i := range stack {
			out[j] += stack[i][j] * w[i]
		}
	}
	return out
}

func randomAdapters(t *testing.T, ranks ...int) []*Adapter {
	m := loadModel(t, tinyDir(t), "")
	var as []*Adapter
	targets := [][]string{{"q_proj", "v_proj"}, {"q_proj", "up_proj"}, {"v_proj", "q_proj"}}
	for i, r := range ranks {
		c := loraConfig(targets[i%3]...)
		c.R, c.LoraAlpha = r, float64(2*r+i)
		a, err := New(c, m.Cfg, m.Backend, uint64(10+i))
		require.NoError(t, err)
		randomize(t, a, uint64(20+i))
		t.Cleanup(a.Release)
		as = append(as, a)
	}
	return as
}

func f64(t *testing.T, a *Adapter, key string) []float64 { return to64(tensor(t, a, key)) }

func requireClose64(t *testing.T, want []float64, got []float32, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		require.InDelta(t, want[i], float64(got[i]), 1e-5*(1+math.Abs(want[i])), "%s: element %d", what, i)
	}
}

// Each of PEFT's combination types matches a float64 reference of add_weighted_adapter.
func TestCombineMethodsMatchReference(t *testing.T) {
	all := randomAdapters(t, 4, 4, 4, 3)
	as := all[:3]
	for _, tc := range []struct {
		method  string
		weights []float64
		density float64
	}{
		{"linear", []float64{0.7, 1.3, 0.4}, 1}, {"linear", []float64{0.7, -1.3, 0.4}, 1},
		{"ties", []float64{0.7, 1.3, 0.4}, 0.3}, {"ties", []float64{0.7, 1.3, 0.4}, 1},
		{"dare_linear", []float64{0.7, 1.3, 0.4}, 0.3}, {"dare_linear", []float64{0.7, 1.3, -0.4}, 0.65},
		{"dare_linear", []float64{0.7, 1.3, 0.4}, 1}, {"dare_ties", []float64{0.7, 1.3, 0.4}, 0.3},
		{"dare_ties", []float64{0.7, 1.3, 0.4}, 0.8}, {"magnitude_prune", []float64{0.7, 1.3, 0.4}, 0.3},
	} {
		method, weights, density := tc.method, tc.weights, tc.density
		{
			o := CombineOptions{Method: method, Density: density, Seed: 5}
			c, err := CombineWith(weights, o, as...)
			require.NoError(t, err, method)
			require.Equal(t, 4, c.Config.R, "%s keeps the rank", method)
			require.True(t, RankKeeping(method))
			// add_weighted_adapter after torch.manual_seed(5): the new adapter's initialization
			// (init_lora_weights true) draws first.
			rng := torchrand.New(5)
			if strings.HasPrefix(method, "dare") {
				for _, md := range c.modules {
					rng.Skip(2*4*md.In + md.Out*4)
				}
			}
			for _, md := range c.modules {
				var As, Bs [][]float64
				var ws, wsA []float64
				for i, a := range as {
					src := a.byName[md.Name]
					if src == nil {
						continue
					}
					k := src.keys(TypeLoRA)
					As, Bs = append(As, f64(t, a, k[0])), append(Bs, f64(t, a, k[1]))
					w := weights[i] * float64(src.Scale)
					ws, wsA = append(ws, math.Sqrt(math.Abs(w))), append(wsA, math.Sqrt(math.Abs(w))*math.Copysign(1, w))
				}
				k := md.keys(TypeLoRA)
				wantA := refMerge(method, As, wsA, density, rng)
				wantB := refMerge(method, Bs, ws, density, rng)
				requireClose64(t, wantA, tensor(t, c, k[0]), method+" "+k[0])
				requireClose64(t, wantB, tensor(t, c, k[1]), method+" "+k[1])
				if density < 1 && method != "linear" {
					kept := 0
					for _, v := range tensor(t, c, k[0]) {
						if v != 0 {
							kept++
						}
					}
					require.Less(t, kept, len(wantA), "%s prunes", method)
				}
			}
			c.Release()
		}
	}
	// Adapters of different ranks: only cat and svd combine them.
	mixed := []*Adapter{all[3], as[0], as[1]}
	_, err := CombineWith([]float64{1, 1, 1}, CombineOptions{Method: "ties", Density: 0.5}, mixed...)
	require.ErrorContains(t, err, "one rank")
	weights := []float64{0.7, 1.3, 0.4}
	_, err = CombineWith(weights, CombineOptions{Method: "average"}, as...)
	require.ErrorContains(t, err, "average")

	// svd: ΔW = Σ w_i·s_i·(s_i·B_i·A_i) truncated to the rank asked for.
	for _, rank := range []int{0, 12, 2} {
		c, err := CombineWith([]float64{0.7, 1.3, 0.4}, CombineOptions{Method: "svd", SVDRank: rank}, mixed...)
		require.NoError(t, err)
		want := rank
		if rank == 0 {
			want = 4
		}
		require.Equal(t, want, c.Config.R)
		require.False(t, RankKeeping("svd"))
		for _, md := range c.modules {
			dw := make([]float64, md.Out*md.In)
			for i, a := range mixed {
				src := a.byName[md.Name]
				if src == nil {
					continue
				}
				k := src.keys(TypeLoRA)
				A, B := f64(t, a, k[0]), f64(t, a, k[1])
				s := []float64{0.7, 1.3, 0.4}[i] * float64(src.Scale) * float64(src.Scale)
				for o := 0; o < md.Out; o++ {
					for j := 0; j < md.In; j++ {
						for r := 0; r < src.R; r++ {
							dw[o*md.In+j] += s * B[o*src.R+r] * A[r*md.In+j]
						}
					}
				}
			}
			k := md.keys(TypeLoRA)
			A, B := f64(t, c, k[0]), f64(t, c, k[1])
			var resid, total float64
			for o := 0; o < md.Out; o++ {
				for j := 0; j < md.In; j++ {
					ba := 0.0
					for r := 0; r < c.Config.R; r++ {
						ba += B[o*c.Config.R+r] * A[r*md.In+j]
					}
					resid += (dw[o*md.In+j] - ba) * (dw[o*md.In+j] - ba)
					total += dw[o*md.In+j] * dw[o*md.In+j]
				}
			}
			// The residual of the best rank-r approximation is the sum of the other squared
			// singular values: the eigenvalues of ΔWᵀΔW beyond the r largest.
			var eig mat.EigenSym
			d := mat.NewDense(md.Out, md.In, dw)
			var g mat.SymDense
			g.SymOuterK(1, d.T())
			require.True(t, eig.Factorize(&g, false))
			ev := eig.Values(nil) // ascending
			want := 0.0
			for i := 0; i < len(ev)-c.Config.R; i++ {
				want += math.Max(ev[i], 0)
			}
			require.InDelta(t, want, resid, 1e-4*total+1e-9, "svd r=%d %s residual", c.Config.R, md.Name)
		}
		c.Release()
	}
	c, err := CombineWith(weights, CombineOptions{Method: "cat"}, as...)
	require.NoError(t, err)
	require.Equal(t, 12, c.Config.R)
	c.Release()
}

// DARE's masks follow the module order of PEFT's model.named_modules(): layer by layer, and in a
// Llama layer q, k, v, o (self_attn) before gate, up, down (mlp), as the adapter lays them out.
func TestCombineModuleOrderIsPEFTs(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	a, err := New(loraConfig("down_proj", "q_proj", "up_proj", "k_proj", "o_proj", "gate_proj", "v_proj"), m.Cfg, m.Backend, 1)
	require.NoError(t, err)
	defer a.Release()
	order := map[string]int{"q_proj": 0, "k_proj": 1, "v_proj": 2, "o_proj": 3, "gate_proj": 4, "up_proj": 5, "down_proj": 6}
	prev := -1
	for _, md := range a.modules {
		parts := strings.Split(md.Name, ".")
		layer := -1
		for i, p := range parts {
			if p == "layers" && i+1 < len(parts) {
				layer, err = strconv.Atoi(parts[i+1])
				require.NoError(t, err)
			}
		}
		require.GreaterOrEqual(t, layer, 0, md.Name)
		key := layer*len(order) + order[parts[len(parts)-1]]
		require.Greater(t, key, prev, "%s after the module before it", md.Name)
		prev = key
	}
	require.Len(t, a.modules, m.Cfg.NumLayers*7)
}
