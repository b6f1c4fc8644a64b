package peft

import (
	"encoding/json"
	"testing"
)

// FuzzAdapterConfig feeds mutated adapter_config.json files to ParseConfig: bad input must give an
// error, never a panic, and a config that parses and validates must write back (as PEFT writes
// it) to a file that parses to the same settings.
func FuzzAdapterConfig(f *testing.F) {
	lora := LoRAConfig()
	lora.R, lora.LoraAlpha, lora.TargetModules = 8, 16, Names("q_proj", "v_proj")
	ia3 := IA3Config()
	for _, c := range []Config{lora, ia3} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": "all-linear", "use_rslora": true, "layers_pattern": "layers"}`))
	f.Add([]byte(`{"peft_type": "LORA", "r": 1e9, "target_modules": ".*proj", "rank_pattern": {"q": 2}, "init_lora_weights": "gaussian"}`))
	f.Add([]byte(`{"peft_type": "IA3", "target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil || c.validate() != nil {
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("a valid config does not write: %v", err)
		}
		c2, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("a written config does not parse: %v\n%s", err, b)
		}
		if err := c2.validate(); err != nil {
			t.Fatalf("a written config does not validate: %v\n%s", err, b)
		}
		if c2.PeftType != c.PeftType || c2.R != c.R || (c.PeftType == TypeLoRA && c2.Scale() != c.Scale()) {
			t.Fatalf("round trip changed the adapter: %+v → %+v", c, c2)
		}
	})
}
