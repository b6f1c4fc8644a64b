package hyper

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/peft"
)

// The files of a hypernetwork folder.
const (
	ConfigFile  = "hyper_config.json"
	WeightsFile = "hyper_model.safetensors"
)

// Save writes dir/hyper_config.json and dir/hyper_model.safetensors (F32, the parameter names of
// this package), each atomically.
func (n *Net) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save hypernetwork: %w", err)
	}
	tensors := map[string]checkpoint.Tensor{}
	for _, name := range n.names {
		t, ok := n.tensors[name]
		if !ok {
			return fmt.Errorf("save hypernetwork: %s has been released", name)
		}
		v, err := t.Float32()
		if err != nil {
			return fmt.Errorf("save hypernetwork: read %s: %w", name, err)
		}
		tensors[name] = checkpoint.FromFloat32(v, []int(n.shapes[name]))
	}
	raw, err := json.MarshalIndent(n.Cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("save hypernetwork: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("save hypernetwork: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ConfigFile), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("save hypernetwork: %w", err)
	}
	return nil
}

// LoadConfig reads dir/hyper_config.json; unknown fields are an error.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load hypernetwork: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("load %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("load %s: %w", path, err)
	}
	return c, nil
}

// Load reads a hypernetwork folder for model config m onto b. A missing, unexpected, misshapen
// or non-finite tensor is an error naming the file and the tensor.
func Load(dir string, m *model.Config, b engine.Backend) (*Net, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	n, err := layout(cfg, m, b)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("load hypernetwork: %w", err)
	}
	defer f.Close()
	values := map[string][]float32{}
	for _, name := range f.Names() {
		s, ok := n.shapes[name]
		if !ok {
			return nil, fmt.Errorf("load %s: unexpected tensor %s", path, name)
		}
		t, _ := f.Tensor(name)
		if !engine.Shape(t.Shape).Equal(s) {
			return nil, fmt.Errorf("load %s: tensor %s has shape %v, the config needs %v", path, name, t.Shape, s)
		}
		v, err := checkpoint.ToFloat32(t)
		if err != nil {
			return nil, fmt.Errorf("load %s: tensor %s: %w", path, name, err)
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("load %s: tensor %s holds a non-finite value (%v at element %d)", path, name, x, i)
			}
		}
		values[name] = v
	}
	for _, name := range n.names {
		if _, ok := values[name]; !ok {
			return nil, fmt.Errorf("load %s: missing tensor %s", path, name)
		}
	}
	if err := n.upload(values); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return n, nil
}

// Forward runs the network for a task embedding and returns every generated module's A [r, in]
// and B [out, r] (row-major, PEFT's shapes) by module path.
func (n *Net) Forward(emb []float32) (A, B map[string][]float32, err error) {
	if err := n.SetTask(emb); err != nil {
		return nil, nil, err
	}
	g := engine.NewGraph()
	an, bn := n.Record(g)
	var outs []*engine.Node
	for _, t := range n.targets {
		outs = append(outs, an[t.Name], bn[t.Name])
	}
	p, err := engine.Compile(g, n.backend, outs, engine.CompileOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("hyper: %w", err)
	}
	defer p.Release()
	if err := n.Bind(p); err != nil {
		return nil, nil, err
	}
	if err := p.Run(); err != nil {
		return nil, nil, fmt.Errorf("hyper: %w", err)
	}
	A, B = map[string][]float32{}, map[string][]float32{}
	for _, t := range n.targets {
		if A[t.Name], err = p.Float32(an[t.Name]); err != nil {
			return nil, nil, fmt.Errorf("hyper: %w", err)
		}
		if B[t.Name], err = p.Float32(bn[t.Name]); err != nil {
			return nil, nil, fmt.Errorf("hyper: %w", err)
		}
	}
	return A, B, nil
}

// Generate runs the network for a task embedding and returns the generated adapter, an ordinary
// PEFT LoRA on the network's backend (Save writes it as PEFT does).
func (n *Net) Generate(emb []float32) (*peft.Adapter, error) {
	A, B, err := n.Forward(emb)
	if err != nil {
		return nil, err
	}
	a, err := peft.New(n.Cfg.LoRAConfig(), n.model, n.backend, 0)
	if err != nil {
		return nil, fmt.Errorf("hyper: %w", err)
	}
	for _, key := range a.Keys() {
		var v []float32
		switch {
		case strings.HasSuffix(key, ".lora_A.weight"):
			v = A[modulePath(key, ".lora_A.weight")]
		case strings.HasSuffix(key, ".lora_B.weight"):
			v = B[modulePath(key, ".lora_B.weight")]
		}
		t, _ := a.Tensor(key)
		if v == nil || t == nil {
			a.Release()
			return nil, fmt.Errorf("hyper: the generated adapter has no values for %s", key)
		}
		if err := t.SetFloat32(v); err != nil {
			a.Release()
			return nil, fmt.Errorf("hyper: %w", err)
		}
	}
	return a, nil
}

// modulePath turns a PEFT key into its module path.
func modulePath(key, suffix string) string {
	return strings.TrimPrefix(strings.TrimSuffix(key, suffix), "base_model.model.")
}
