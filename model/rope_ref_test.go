package model_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model"
)

// refRope is a float64 reference of the rotary embedding's inverse frequencies and attention
// factor for a forward pass over seqLen positions, written from transformers'
// modeling_rope_utils.py (the _compute_*_parameters functions and dynamic_rope_update) and read
// straight from config.json: it shares no code with model.Config.Rope.
func refRope(raw map[string]any, seqLen int) (invFreq []float64, attention float64) {
	num := func(m map[string]any, k string) (float64, bool) {
		v, ok := m[k].(float64)
		return v, ok
	}
	base, ok := num(raw, "rope_theta")
	if !ok {
		base = 10000
	}
	hidden, _ := num(raw, "hidden_size")
	heads, _ := num(raw, "num_attention_heads")
	dim := int(hidden) / int(heads)
	if hd, ok := num(raw, "head_dim"); ok {
		dim = int(hd)
	}
	maxPos, _ := num(raw, "max_position_embeddings")
	rs, _ := raw["rope_scaling"].(map[string]any)
	kind := "default"
	if rs != nil {
		if s, ok := rs["rope_type"].(string); ok {
			kind = s
		} else if s, ok := rs["type"].(string); ok {
			kind = s
		}
	}
	factor, _ := num(rs, "factor")
	// inv_freq = 1 / base^(arange(0, dim, 2) / dim)
	defaults := func(base float64) []float64 {
		f := make([]float64, 0, dim/2)
		for i := 0; i < dim; i += 2 {
			f = append(f, 1/math.Pow(base, float64(i)/float64(dim)))
		}
		return f
	}
	switch kind {
	case "default":
		return defaults(base), 1
	case "linear":
		f := defaults(base)
		for i := range f {
			f[i] /= factor
		}
		return f, 1
	case "dynamic":
		// dynamic_rope_update recomputes with the current length once it exceeds the trained one.
		seq := math.Max(float64(seqLen), maxPos)
		base *= math.Pow(factor*seq/maxPos-(factor-1), float64(dim)/float64(dim-2))
		return defaults(base), 1
	case "llama3":
		f := defaults(base)
		low, _ := num(rs, "low_freq_factor")
		high, _ := num(rs, "high_freq_factor")
		old, _ := num(rs, "original_max_position_embeddings")
		lowWave, highWave := old/low, old/high
		out := make([]float64, len(f))
		for i := range f {
			wave := 2 * math.Pi / f[i]
			scaled := f[i]
			if wave > lowWave {
				scaled = f[i] / factor
			}
			out[i] = scaled
			if !(wave < highWave) && !(wave > lowWave) {
				smooth := (old/wave - low) / (high - low)
				out[i] = (1-smooth)*scaled/factor + smooth*scaled
			}
		}
		return out, 1
	case "yarn":
		orig, ok := num(rs, "original_max_position_embeddings")
		if !ok {
			orig = maxPos
		}
		mscale := func(scale, m float64) float64 {
			if scale <= 1 {
				return 1
			}
			return 0.1*m*math.Log(scale) + 1
		}
		attention, ok = num(rs, "attention_factor")
		if !ok {
			attention = mscale(factor, 1)
		}
		betaFast, ok := num(rs, "beta_fast")
		if !ok || betaFast == 0 {
			betaFast = 32
		}
		betaSlow, ok := num(rs, "beta_slow")
		if !ok || betaSlow == 0 {
			betaSlow = 1
		}
		corrDim := func(rot float64) float64 {
			return float64(dim) * math.Log(orig/(rot*2*math.Pi)) / (2 * math.Log(base))
		}
		lo := math.Max(math.Floor(corrDim(betaFast)), 0)
		hi := math.Min(math.Ceil(corrDim(betaSlow)), float64(dim-1))
		if lo == hi {
			hi += 0.001
		}
		out := make([]float64, dim/2)
		for i := range out {
			posFreq := math.Pow(base, float64(2*i)/float64(dim))
			extra, inter := 1/posFreq, 1/(factor*posFreq)
			ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
			extraFactor := 1 - ramp
			out[i] = inter*(1-extraFactor) + extra*extraFactor
		}
		return out, attention
	}
	panic("refRope: unknown rope type " + kind)
}

// rawConfig reads a folder's config.json as JSON (what refRope takes).
func rawConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	return raw
}

func TestRopeMatchesTransformers(t *testing.T) {
	cases := []struct {
		name, cfg string
		seqs      []int
	}{
		{"default", `"rope_theta":10000`, []int{7}},
		{"default-no-theta", ``, []int{7}},
		{"linear", `"rope_theta":10000,"rope_scaling":{"type":"linear","factor":4.0}`, []int{7}},
		{"dynamic", `"rope_theta":10000,"rope_scaling":{"type":"dynamic","factor":2.0}`, []int{7, 64, 300, 2048}},
		// Llama 3.1's own values: every frequency band of the llama3 rule is present at head_dim 128.
		{"llama3", `"rope_theta":500000,"head_dim":128,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}`, []int{7}},
		{"llama3-small", `"rope_theta":10000,"rope_scaling":{"rope_type":"llama3","factor":4.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}`, []int{7}},
		// Qwen2.5's long-context setting.
		{"yarn-qwen", `"rope_theta":1000000,"head_dim":128,"rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}`, []int{7}},
		{"yarn-no-original", `"rope_theta":10000,"rope_scaling":{"rope_type":"yarn","factor":8.0}`, []int{7}},
		{"yarn-betas-attention", `"rope_theta":10000,"rope_scaling":{"rope_type":"yarn","factor":3.0,"beta_fast":16.0,"beta_slow":2.0,"attention_factor":1.3,"original_max_position_embeddings":48}`, []int{7}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			js := `{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":64,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":4,"max_position_embeddings":256`
			if c.cfg != "" {
				js += "," + c.cfg
			}
			js += "}"
			cfg, err := model.ParseConfig([]byte(js))
			require.NoError(t, err)
			var raw map[string]any
			require.NoError(t, json.Unmarshal([]byte(js), &raw))
			for _, seq := range c.seqs {
				want, wantAttn := refRope(raw, seq)
				got, gotAttn := cfg.Rope(seq)
				require.Len(t, got, len(want))
				for i := range want {
					require.InEpsilon(t, want[i], float64(got[i]), 1e-6, "seq %d, inv_freq[%d]", seq, i)
				}
				require.InEpsilon(t, wantAttn, float64(gotAttn), 1e-6, "seq %d, attention factor", seq)
			}
		})
	}

	// The cases above exercise every branch of the rules they test.
	t.Run("coverage", func(t *testing.T) {
		raw := map[string]any{"hidden_size": 512.0, "num_attention_heads": 4.0, "rope_theta": 500000.0, "max_position_embeddings": 256.0}
		def, _ := refRope(raw, 7)
		bands := map[string]int{}
		for _, f := range def {
			switch wave := 2 * math.Pi / f; {
			case wave < 8192/4.0:
				bands["high"]++
			case wave > 8192/1.0:
				bands["low"]++
			default:
				bands["medium"]++
			}
		}
		require.Len(t, bands, 3, "llama3's three frequency bands: %v", bands)
		raw["rope_scaling"] = map[string]any{"type": "dynamic", "factor": 2.0}
		short, _ := refRope(raw, 7)
		long, _ := refRope(raw, 1024)
		require.Equal(t, def, short)
		require.Less(t, long[5], def[5])
		raw["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192.0}
		yarn, attn := refRope(raw, 7)
		require.InDelta(t, 0.1*math.Log(4)+1, attn, 1e-12)
		interp, extrap := 0, 0
		for i := range yarn {
			if yarn[i] == def[i] {
				extrap++
			} else if math.Abs(yarn[i]-def[i]/4) < 1e-15 {
				interp++
			}
		}
		require.Positive(t, interp, "some frequencies interpolated")
		require.Positive(t, extrap, "some extrapolated")
		require.Less(t, interp+extrap, len(yarn), "and some ramped between")
	})
}

// TestRopeScaledLogits runs whole models with each scaling variant against the float64 reference
// forward pass, whose rotary frequencies come from refRope.
func TestRopeScaledLogits(t *testing.T) {
	for _, rs := range []string{
		`{"type":"linear","factor":2.0}`,
		`{"type":"dynamic","factor":2.0}`,
		`{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":4}`,
		`{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}`,
	} {
		t.Run(rs, func(t *testing.T) {
			dir := tinyModel(t, 11)
			editFolder(t, dir, func(c map[string]any) {
				var v map[string]any
				require.NoError(t, json.Unmarshal([]byte(rs), &v))
				c["rope_scaling"] = v
				c["max_position_embeddings"] = 4 // so that dynamic NTK stretches a 9-token sequence
			}, nil)
			compareWithReference(t, dir, 1, 9)
		})
	}
}
