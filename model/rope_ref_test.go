package model_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/internal/reflm"
	"github.com/lathe-ml/lathe/model"
)

// rawConfig reads a folder's config.json as JSON (what reflm.Rope takes).
func rawConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	raw, err := reflm.Config(dir)
	require.NoError(t, err)
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
				want, wantAttn := reflm.Rope(raw, seq)
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
		def, _ := reflm.Rope(raw, 7)
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
		short, _ := reflm.Rope(raw, 7)
		long, _ := reflm.Rope(raw, 1024)
		require.Equal(t, def, short)
		require.Less(t, long[5], def[5])
		raw["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192.0}
		yarn, attn := reflm.Rope(raw, 7)
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
// forward pass, whose rotary frequencies come from reflm.Rope.
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
