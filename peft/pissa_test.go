package peft

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/mat"
)

// PiSSA against its definition in float64: s·B·A is W's best rank-r approximation (the residual
// W − s·B·A keeps exactly the energy of the singular values past r), A's rows and B's columns are
// orthogonal with squared norms S_k/s (PEFT's √(S_r/s) split); the model starts unchanged; and the
// adapter after training, saved as PEFT's path_initial_model_for_weight_conversion saves it (rank
// 2r over the untouched base), gives the trained model's logits.
func TestPiSSA(t *testing.T) {
	dir := tinyDir(t)
	orig := loadModel(t, dir, "")
	m := loadModel(t, dir, "")
	base := logits(t, m, nil, nil)
	c := loraConfig("q_proj", "down_proj")
	c.R, c.LoraAlpha = 4, 6
	c.InitLoraWeights = InitPiSSA
	_, err := New(c, m.Cfg, m.Backend, 1)
	require.ErrorContains(t, err, "NewFor")
	a, err := NewFor(c, m, 1)
	require.NoError(t, err)
	defer a.Release()
	requireClose(t, base, logits(t, m, a, nil), 1e-4, "PiSSA starts as the base")

	for _, md := range a.modules {
		keys := md.keys(TypeLoRA)
		A, B := f64s(tensor(t, a, keys[0])), f64s(tensor(t, a, keys[1]))
		W := f64s(denseWeight(t, orig, md.Name))
		res := f64s(denseWeight(t, m, md.Name))
		var svd mat.SVD
		require.True(t, svd.Factorize(mat.NewDense(md.Out, md.In, append([]float64(nil), W...)), mat.SVDThin))
		S := svd.Values(nil)
		s := float64(md.Scale)
		var tail, resE, diff float64
		for _, v := range S[md.R:] {
			tail += v * v
		}
		for o := 0; o < md.Out; o++ {
			for i := 0; i < md.In; i++ {
				var d float64
				for k := 0; k < md.R; k++ {
					d += B[o*md.R+k] * A[k*md.In+i]
				}
				r := W[o*md.In+i] - s*d
				resE += r * r
				diff = max(diff, math.Abs(r-res[o*md.In+i]))
			}
		}
		require.InDelta(t, tail, resE, 1e-4*tail, "%s: the residual holds the singular values past r", md.Name)
		require.Less(t, diff, 1e-5, "%s: the base keeps W − s·B·A", md.Name)
		for k := 0; k < md.R; k++ {
			for l := 0; l < md.R; l++ {
				var aa, bb float64
				for i := 0; i < md.In; i++ {
					aa += A[k*md.In+i] * A[l*md.In+i]
				}
				for o := 0; o < md.Out; o++ {
					bb += B[o*md.R+k] * B[o*md.R+l]
				}
				want := 0.0
				if k == l {
					want = S[k] / s
				}
				require.InDelta(t, want, aa, 1e-4*S[0]/s, "%s: A·Aᵀ[%d,%d]", md.Name, k, l)
				require.InDelta(t, want, bb, 1e-4*S[0]/s, "%s: Bᵀ·B[%d,%d]", md.Name, k, l)
			}
		}
	}

	// "Training": move A and B; the trained model is the residual base with the adapter.
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for i, x := range randVec(len(v), 77) {
			v[i] += 0.05 * x
		}
		require.NoError(t, p.Tensor.SetFloat32(v))
	}
	trained := logits(t, m, a, nil)
	out := filepath.Join(t.TempDir(), "pissa")
	require.NoError(t, a.Save(out))
	cfg := readJSON(t, filepath.Join(out, ConfigFile))
	require.Equal(t, float64(8), cfg["r"])
	require.Equal(t, float64(12), cfg["lora_alpha"])
	require.Equal(t, true, cfg["init_lora_weights"])
	b, err := Load(out, orig.Cfg, orig.Backend)
	require.NoError(t, err)
	defer b.Release()
	for _, md := range b.Modules() {
		require.Equal(t, 8, md.R)
	}
	requireClose(t, trained, logits(t, orig, b, nil), 2e-4, "converted PiSSA over the original base")

	q := loadModel(t, dir, "nf4")
	_, err = NewFor(c, q, 1)
	require.ErrorContains(t, err, "dense base")
}

// init_lora_weights "gaussian": A normal with standard deviation 1/r (PEFT's nn.init.normal_), B zero.
func TestGaussianInit(t *testing.T) {
	m := loadModel(t, tinyDir(t), "")
	c := loraConfig("q_proj", "v_proj", "up_proj")
	c.R = 4
	c.InitLoraWeights = "gaussian"
	a, err := New(c, m.Cfg, m.Backend, 2)
	require.NoError(t, err)
	defer a.Release()
	var n int
	var sum, sq float64
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for _, x := range v {
			if filepath.Ext(p.Key) == ".weight" && p.Key[len(p.Key)-len("lora_B.weight"):] == "lora_B.weight" {
				require.Zero(t, x, p.Key)
				continue
			}
			n++
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
	}
	mean := sum / float64(n)
	std := math.Sqrt(sq/float64(n) - mean*mean)
	require.InDelta(t, 0, mean, 4*0.25/math.Sqrt(float64(n)))
	require.InDelta(t, 0.25, std, 0.01, "std 1/r over %d values", n)
}
