package lathe

import (
	"fmt"

	"github.com/lathe-ml/lathe/peft"
)

// LoadAdapter loads the PEFT adapter folder dir (adapter_config.json, adapter_model.safetensors:
// LoRA or IA3, as lathe train or Hugging Face PEFT writes it) under name, for Request.Adapter.
// It replaces an adapter of that name: generations already running keep the one they started
// with, which is freed when they end.
func (lm *Model) LoadAdapter(name, dir string) error {
	if err := lm.check(); err != nil {
		return err
	}
	return lm.reg.Load(name, dir)
}

// UnloadAdapter removes the adapter of that name, freeing it once no generation uses it; it
// reports whether there was one.
func (lm *Model) UnloadAdapter(name string) bool {
	return lm.reg.Unload(name)
}

// Adapters lists the names of the loaded adapters, sorted.
func (lm *Model) Adapters() []string { return lm.reg.Names() }

// Weighted is one part of a combination: an adapter folder and its weight.
type Weighted struct {
	Dir    string
	Weight float64
}

// CombineAdapters loads under name one LoRA adapter whose delta is the weighted sum of the
// parts' (their ranks concatenated, so the sum is exact: PEFT's add_weighted_adapter "cat"),
// at most 16 parts.
func (lm *Model) CombineAdapters(name string, parts ...Weighted) error {
	if err := lm.check(); err != nil {
		return err
	}
	dirs := make([]string, len(parts))
	weights := make([]float64, len(parts))
	for i, p := range parts {
		dirs[i], weights[i] = p.Dir, p.Weight
	}
	return lm.reg.LoadCombined(name, dirs, weights)
}

// SaveAdapter writes the loaded adapter of that name (a combination, say) to dir as a PEFT
// folder, atomically.
func (lm *Model) SaveAdapter(name, dir string) error {
	if err := lm.check(); err != nil {
		return err
	}
	a, release, ok := lm.reg.Acquire(name)
	if !ok {
		return fmt.Errorf("lathe: no adapter named %q is loaded", name)
	}
	defer release()
	pa, ok := a.(*peft.Adapter)
	if !ok {
		return fmt.Errorf("lathe: adapter %q cannot be saved", name)
	}
	return pa.Save(dir)
}
