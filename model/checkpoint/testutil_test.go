package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// tinyConfig is a Llama-like config.json with fields lathe does not know, which must survive.
const tinyConfig = `{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 40,
  "intermediate_size": 57,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "vocab_size": 50,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "custom_field": {"nested": [1, 2.50, null]}
}
`

// encode returns t's values in dtype as a Tensor, rounding to the dtype's precision; the
// returned float32 values are what the tensor decodes to.
func encode(dtype string, shape []int, v []float32) (Tensor, []float32) {
	exact := make([]float32, len(v))
	var b []byte
	switch dtype {
	case "F32":
		b = f32Bytes(v)
		copy(exact, v)
	case "F16":
		b = make([]byte, 2*len(v))
		for i, x := range v {
			h := float16.Fromfloat32(x)
			binary.LittleEndian.PutUint16(b[2*i:], h.Bits())
			exact[i] = h.Float32()
		}
	case "BF16":
		b = make([]byte, 2*len(v))
		for i, x := range v {
			u := uint16(math.Float32bits(x) >> 16) // truncation is fine for test data
			binary.LittleEndian.PutUint16(b[2*i:], u)
			exact[i] = math.Float32frombits(uint32(u) << 16)
		}
	}
	return Tensor{DType: dtype, Shape: shape, Data: b}, exact
}

type tinyModel struct {
	tensors map[string]Tensor
	values  map[string][]float32 // decoded values of every float tensor
	linear  []string             // names that QuantizeFolder must quantize
}

// buildTiny makes a random two-layer Llama-like model with odd shapes (13x40, 40x57: element
// counts that are not multiples of 64) and a mix of F32, F16 and BF16 weights.
func buildTiny(seed uint64) tinyModel {
	r := rand.New(rand.NewPCG(seed, 99))
	m := tinyModel{tensors: map[string]Tensor{}, values: map[string][]float32{}}
	add := func(name, dtype string, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.05)
			if v[i] == 0 {
				v[i] = 0.01
			}
		}
		t, exact := encode(dtype, shape, v)
		m.tensors[name], m.values[name] = t, exact
	}
	add("model.embed_tokens.weight", "BF16", 50, 40)
	for _, l := range []string{"0", "1"} {
		p := "model.layers." + l + "."
		add(p+"input_layernorm.weight", "BF16", 40)
		add(p+"post_attention_layernorm.weight", "BF16", 40)
		add(p+"self_attn.q_proj.weight", "BF16", 40, 40)
		add(p+"self_attn.q_proj.bias", "F32", 40)
		add(p+"self_attn.k_proj.weight", "F16", 13, 40)
		add(p+"self_attn.v_proj.weight", "F32", 13, 40)
		add(p+"self_attn.o_proj.weight", "BF16", 40, 40)
		add(p+"mlp.gate_proj.weight", "BF16", 57, 40)
		add(p+"mlp.up_proj.weight", "F16", 57, 40)
		add(p+"mlp.down_proj.weight", "F32", 40, 57)
		for _, s := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
			m.linear = append(m.linear, p+s+".weight")
		}
	}
	add("model.norm.weight", "BF16", 40)
	add("lm_head.weight", "BF16", 50, 40)
	return m
}

// writeTiny writes the model as a folder with config.json, model.safetensors and tokenizer files.
func writeTiny(t *testing.T, dir string, m tinyModel) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte(tinyConfig), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model":{"type":"BPE"}}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"do_sample":true}`), 0o644))
	require.NoError(t, WriteSafetensors(filepath.Join(dir, WeightsFile), m.tensors, map[string]string{"format": "pt"}))
}

// writeSharded writes the model in two shards with an index.
func writeSharded(t *testing.T, dir string, m tinyModel) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigFile), []byte(tinyConfig), 0o644))
	shards := [2]map[string]Tensor{{}, {}}
	wm := map[string]string{}
	i := 0
	for name, tt := range m.tensors {
		s := i % 2
		i++
		shards[s][name] = tt
		wm[name] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[s]
	}
	require.NoError(t, WriteSafetensors(filepath.Join(dir, "model-00001-of-00002.safetensors"), shards[0], nil))
	require.NoError(t, WriteSafetensors(filepath.Join(dir, "model-00002-of-00002.safetensors"), shards[1], nil))
	idx, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 1}, "weight_map": wm})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexFile), idx, 0o644))
}
