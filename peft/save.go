package peft

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
)

// The files of a PEFT adapter folder.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// Save writes dir/adapter_config.json and dir/adapter_model.safetensors as PEFT's save_pretrained
// does (F32 tensors under PEFT's keys and shapes, metadata {"format": "pt"}, inference_mode true),
// each file atomically.
func (a *Adapter) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	values := map[string][]float32{}
	for _, md := range a.modules {
		for _, key := range md.keys(a.Config.PeftType) {
			t, ok := a.tensors[key]
			if !ok {
				return fmt.Errorf("save adapter: %s has been released", key)
			}
			v, err := t.Float32()
			if err != nil {
				return fmt.Errorf("save adapter: read %s: %w", key, err)
			}
			values[key] = v
		}
	}
	cfg := a.Config
	double := 1 // a PiSSA adapter is saved converted, at twice its rank
	if a.pissaInit != nil {
		var err error
		if cfg, values, err = a.converted(cfg, values); err != nil {
			return err
		}
		double = 2
	}
	tensors := map[string]checkpoint.Tensor{}
	for _, md := range a.modules {
		m := *md
		m.R *= double
		for _, key := range md.keys(a.Config.PeftType) {
			tensors[key] = checkpoint.FromFloat32(values[key], m.fileShape(key))
		}
	}
	// PEFT saves the config with inference_mode set, whatever it trained with.
	cfg.InferenceMode = true
	raw, err := cfg.MarshalJSON()
	if err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ConfigFile), raw, 0o644); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	return nil
}

// LoadConfig reads dir/adapter_config.json.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load adapter: %w", err)
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return Config{}, fmt.Errorf("load %s: %w", path, err)
	}
	return c, nil
}

// normalizeKey drops the adapter name some tools write into keys ("lora_A.default.weight",
// "ia3_l.default"), as PEFT does when it loads them.
func normalizeKey(k string) string {
	for _, s := range []string{".lora_A.", ".lora_B."} {
		if i := strings.Index(k, s); i >= 0 {
			rest := k[i+len(s):]
			if j := strings.LastIndex(rest, "."); j >= 0 && rest[j+1:] == "weight" && j > 0 {
				return k[:i+len(s)] + "weight"
			}
		}
	}
	// PEFT saves lora_magnitude_vector without ".weight"; an adapter name may follow it.
	if i := strings.Index(k, magnitudeSuffix+"."); i >= 0 {
		return k[:i+len(magnitudeSuffix)]
	}
	if i := strings.Index(k, ".ia3_l."); i >= 0 {
		return k[:i] + ".ia3_l"
	}
	return k
}

// Load reads a PEFT adapter folder for model config m onto b. Every tensor is checked against the
// model: a missing or unexpected key, a wrong shape, a non-float type or a NaN or infinite value is
// an error naming the file and the key.
func Load(dir string, m *model.Config, b engine.Backend) (*Adapter, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, ConfigFile)
	a, err := newAdapter(cfg, m, b)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", cfgPath, err)
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %w", err)
	}
	defer f.Close()
	found := map[string]checkpoint.Tensor{}
	for _, name := range f.Names() {
		key := normalizeKey(name)
		if _, dup := found[key]; dup {
			return nil, fmt.Errorf("load %s: tensor %s appears twice (as %s)", path, key, name)
		}
		t, _ := f.Tensor(name)
		found[key] = t
	}
	ok := false
	defer func() {
		if !ok {
			a.Release()
		}
	}()
	for _, md := range a.modules {
		for _, key := range md.keys(a.Config.PeftType) {
			t, present := found[key]
			if !present {
				return nil, fmt.Errorf("load %s: missing tensor %s (the config targets %s)", path, key, md.Name)
			}
			delete(found, key)
			want := md.fileShape(key)
			if !engine.Shape(t.Shape).Equal(want) {
				return nil, fmt.Errorf("load %s: tensor %s has shape %v, the config and model need %v", path, key, t.Shape, want)
			}
			v, err := checkpoint.ToFloat32(t)
			if err != nil {
				return nil, fmt.Errorf("load %s: tensor %s: %w", path, key, err)
			}
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return nil, fmt.Errorf("load %s: tensor %s holds a non-finite value (%v at element %d)", path, key, x, i)
				}
			}
			if err := a.upload(key, md.graphShape(key), v); err != nil {
				return nil, fmt.Errorf("load %s: %w", path, err)
			}
		}
	}
	if len(found) > 0 {
		return nil, fmt.Errorf("load %s: unexpected tensors %s (not targeted by %s)", path, strings.Join(sortedKeys(found), ", "), cfgPath)
	}
	ok = true
	return a, nil
}
