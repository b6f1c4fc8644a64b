package model

import (
	"encoding/json"
	"testing"

	"github.com/lathe-ml/lathe/engine"
)

// FuzzParseConfig feeds mutated config.json files to ParseConfig: bad input must give an error,
// never a panic, and an accepted config must keep its counts within the bounds, so that building
// the model's graph and its RoPE tables stays small.
func FuzzParseConfig(f *testing.F) {
	for _, c := range []map[string]any{
		{"architectures": []string{"LlamaForCausalLM"}, "vocab_size": 384, "hidden_size": 64, "intermediate_size": 176,
			"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
			"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
		{"architectures": []string{"Qwen2ForCausalLM"}, "vocab_size": 100, "hidden_size": 32, "intermediate_size": 48,
			"num_hidden_layers": 1, "num_attention_heads": 2, "tie_word_embeddings": true, "eos_token_id": []int{1, 2},
			"rope_scaling": map[string]any{"type": "yarn", "factor": 4.0}},
		{"architectures": []string{"MistralForCausalLM"}, "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
			"num_hidden_layers": 1000000, "num_attention_heads": 2, "rope_scaling": map[string]any{"type": "dynamic", "factor": 2.0}, "max_position_embeddings": 16},
	} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"architectures": ["LlamaForCausalLM"], "vocab_size": 1e300}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil {
			return
		}
		if c.NumLayers > MaxLayers || c.VocabSize > MaxVocab || c.HiddenSize > MaxHidden || c.HeadDim > MaxHeadDim ||
			c.NumHeads > MaxHeads || c.NumKVHeads > MaxHeads || c.IntermediateSize > MaxIntermediate {
			t.Fatalf("accepted counts beyond the bounds: %+v", c)
		}
		inv, _ := c.Rope(min(c.MaxPositionEmbeddings, 1<<12) + 1)
		if len(inv) != c.HeadDim/2 {
			t.Fatalf("%d frequencies for head dim %d", len(inv), c.HeadDim)
		}
		if c.NumLayers <= 8 {
			// Declaring the graph allocates no weights: it must work for any accepted config.
			NewGraph(c, engine.NewGraph(), nil)
		}
	})
}
