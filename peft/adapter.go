package peft

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
)

// keyPrefix is what PEFT puts before a module path in its state-dict keys (PeftModel wraps the
// model, whose own module is "model").
const keyPrefix = "base_model.model."

// Module is one linear layer an adapter wraps.
type Module struct {
	// Name is the module path, e.g. "model.layers.0.self_attn.q_proj".
	Name    string
	In, Out int
	// LoRA: rank and scale. IA3: Feedforward says the vector scales the input ([1, in] in PEFT's
	// file) rather than the output ([out, 1]).
	R           int
	Scale       float32
	Feedforward bool
	// DoRA: the module has a magnitude vector (use_dora).
	DoRA bool
}

// keys returns the module's PEFT state-dict keys.
func (m *Module) keys(peftType string) []string {
	p := keyPrefix + m.Name
	if peftType == TypeIA3 {
		return []string{p + ".ia3_l"}
	}
	if m.DoRA {
		return []string{p + ".lora_A.weight", p + ".lora_B.weight", p + magnitudeSuffix}
	}
	return []string{p + ".lora_A.weight", p + ".lora_B.weight"}
}

// graphShape is the shape of a parameter in lathe's graph: LoRA's as PEFT's, IA3's a [dim] vector.
func (m *Module) graphShape(key string) engine.Shape {
	switch {
	case strings.HasSuffix(key, ".lora_A.weight"):
		return engine.Shape{m.R, m.In}
	case strings.HasSuffix(key, ".lora_B.weight"):
		return engine.Shape{m.Out, m.R}
	case strings.HasSuffix(key, magnitudeSuffix):
		return engine.Shape{m.Out}
	case m.Feedforward:
		return engine.Shape{m.In}
	}
	return engine.Shape{m.Out}
}

// fileShape is the shape PEFT stores: IA3's vectors as [out, 1] or, feedforward, [1, in].
func (m *Module) fileShape(key string) []int {
	s := m.graphShape(key)
	if strings.HasSuffix(key, ".ia3_l") {
		if m.Feedforward {
			return []int{1, m.In}
		}
		return []int{m.Out, 1}
	}
	return []int(s.Clone())
}

// Adapter is a LoRA or IA3 adapter for one model architecture: its trainable f32 parameters on a
// backend, keyed by PEFT's state-dict keys. It is safe for concurrent use by graphs that only
// read it (generation); training updates its tensors in place.
type Adapter struct {
	// Config is the resolved config: target_modules expanded from "all-linear", IA3 defaults filled.
	Config  Config
	model   *model.Config
	backend engine.Backend
	modules []*Module
	byName  map[string]*Module
	keys    []string // every parameter key, in module order
	tensors map[string]*engine.Tensor
	// pissaInit holds a PiSSA adapter's initial A and B (A₀, B₀), which Save folds in.
	pissaInit map[string][]float32
	// consts are constants some graphs bind (DoRA's identity matrices), not parameters.
	consts map[string]*engine.Tensor

	mu    sync.Mutex
	nodes map[string]*engine.Node // the parameters' nodes in the graph built last

	signature string
}

var _ model.Adapter = (*Adapter)(nil)

// Param is one trainable tensor of an adapter.
type Param struct {
	// Key is PEFT's state-dict key.
	Key string
	// Node is the parameter in the graph that last called the adapter's LinearFunc (nil before).
	Node   *engine.Node
	Tensor *engine.Tensor
}

// llamaIA3Targets are PEFT's default IA3 targets for Llama, Mistral and Qwen2
// (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING).
var llamaIA3Targets, llamaIA3Feedforward = []string{"k_proj", "v_proj", "down_proj"}, []string{"down_proj"}

// llamaLoRATargets are PEFT's default LoRA targets for these models.
var llamaLoRATargets = []string{"q_proj", "v_proj"}

// linears lists the model's linear layers that an adapter may wrap: every decoder linear, then
// lm_head when it is not tied to the embedding.
func linears(m *model.Config) []*model.Linear {
	mg := model.NewGraph(m, engine.NewGraph(), nil)
	ls := mg.Linears()
	if mg.LMHead != nil {
		ls = append(ls, mg.LMHead)
	}
	return ls
}

func lastPart(path string) string { return path[strings.LastIndex(path, ".")+1:] }

// resolve validates c against the model and returns the modules it targets, with c's
// target_modules (and IA3's feedforward_modules) filled as PEFT fills them.
func resolve(c *Config, m *model.Config) ([]*Module, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("adapter: no model config")
	}
	all := linears(m)
	var names []string
	for _, l := range all {
		names = append(names, lastPart(l.Name))
	}
	names = sortedUnique(names)
	if c.TargetModules.IsZero() {
		if c.PeftType == TypeIA3 {
			c.TargetModules = Names(llamaIA3Targets...)
		} else {
			c.TargetModules = Names(llamaLoRATargets...)
		}
	}
	if c.PeftType == TypeIA3 && c.FeedforwardModules.IsZero() {
		c.FeedforwardModules = Names(llamaIA3Feedforward...)
	}
	if c.TargetModules.Pattern == AllLinear || (len(c.TargetModules.Names) == 1 && c.TargetModules.Names[0] == AllLinear) {
		// PEFT expands the shorthand to the layer names, leaving out the output layer.
		var exp []string
		for _, n := range names {
			if n != "lm_head" {
				exp = append(exp, n)
			}
		}
		c.TargetModules = Names(exp...)
	}
	target, err := newMatcher("target_modules", c.TargetModules)
	if err != nil {
		return nil, err
	}
	for _, n := range c.TargetModules.Names {
		found := false
		for _, l := range all {
			found = found || matchName(l.Name, n)
		}
		if !found {
			return nil, fmt.Errorf("adapter config: target module %q matches no module of the model (its linear layers: %s)", n, strings.Join(names, ", "))
		}
	}
	var ff *matcher
	if c.PeftType == TypeIA3 {
		if ff, err = newMatcher("feedforward_modules", c.FeedforwardModules); err != nil {
			return nil, err
		}
		if c.FeedforwardModules.Names != nil && c.TargetModules.Names != nil {
			for _, n := range c.FeedforwardModules.Names {
				if !contains(c.TargetModules.Names, n) {
					return nil, fmt.Errorf("adapter config: feedforward_modules must be a subset of target_modules: %q is not a target", n)
				}
			}
		}
	}
	var layers map[int]bool
	var layerRes []*regexp.Regexp
	var ranks, alphas *patterns
	if c.PeftType == TypeLoRA {
		if layers, err = c.layerIndexes(); err != nil {
			return nil, err
		}
		if layerRes, err = c.layerPatterns(); err != nil {
			return nil, err
		}
		if ranks, err = compilePatterns("rank_pattern", c.RankPattern, c.rankOrder); err != nil {
			return nil, err
		}
		if alphas, err = compilePatterns("alpha_pattern", c.AlphaPattern, c.alphaOrder); err != nil {
			return nil, err
		}
	}
	var mods []*Module
	for _, l := range all {
		if !target.match(l.Name) {
			continue
		}
		// layers_to_transform restricts a list of names, except a name that is the whole path
		// (PEFT's check_target_module_exists).
		if layers != nil && target.re == nil && !contains(c.TargetModules.Names, l.Name) {
			i, ok := layerOf(layerRes, l.Name)
			if !ok || !layers[i] {
				continue
			}
		}
		md := &Module{Name: l.Name, In: l.In, Out: l.Out}
		if c.PeftType == TypeIA3 {
			md.Feedforward = ff.match(l.Name)
		} else {
			r, alpha := c.R, c.LoraAlpha
			if v, ok := ranks.lookup(l.Name); ok {
				r = int(v)
			}
			if v, ok := alphas.lookup(l.Name); ok {
				alpha = v
			}
			md.R, md.Scale, md.DoRA = r, c.scaleOf(r, alpha), c.UseDoRA
		}
		mods = append(mods, md)
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("adapter config: target_modules %q matches no module of the model (its linear layers: %s)", c.TargetModules.Pattern, strings.Join(names, ", "))
	}
	return mods, nil
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// newAdapter resolves cfg and lays out the adapter's modules and keys; no tensors yet.
func newAdapter(cfg Config, m *model.Config, b engine.Backend) (*Adapter, error) {
	if b == nil {
		return nil, fmt.Errorf("adapter: no backend")
	}
	mods, err := resolve(&cfg, m)
	if err != nil {
		return nil, err
	}
	if cfg.PeftVersion == "" {
		cfg.PeftVersion = PEFTVersion
	}
	a := &Adapter{Config: cfg, model: m, backend: b, modules: mods, byName: map[string]*Module{},
		tensors: map[string]*engine.Tensor{}, consts: map[string]*engine.Tensor{}, nodes: map[string]*engine.Node{}}
	sig := sha256.New()
	fmt.Fprintf(sig, "%s", cfg.PeftType)
	for _, md := range mods {
		a.byName[md.Name] = md
		a.keys = append(a.keys, md.keys(cfg.PeftType)...)
		fmt.Fprintf(sig, "|%s %d %d %d %g %v %v", md.Name, md.In, md.Out, md.R, md.Scale, md.Feedforward, md.DoRA)
	}
	a.signature = fmt.Sprintf("%s/%x", cfg.PeftType, sig.Sum(nil)[:12])
	return a, nil
}

// Signature describes the adapter's structure: its type and, for every wrapped layer, the shapes
// and scale. Adapters trained with one recipe share it, and so share compiled step programs.
func (a *Adapter) Signature() string { return a.signature }

// New creates an adapter for model config m with parameters on b, initialised as PEFT initialises
// them by default, deterministically from seed: LoRA's A kaiming-uniform (a=√5, i.e.
// U(−1/√in, 1/√in)) and B zero, so the adapter starts as the identity; IA3's vectors one.
//
// A DoRA adapter's magnitudes come from the base weights: NewFor creates it.
func New(cfg Config, m *model.Config, b engine.Backend, seed uint64) (*Adapter, error) {
	if cfg.UseDoRA {
		return nil, fmt.Errorf("adapter: DoRA (use_dora) initialises its magnitudes from the base weights: create it with NewFor")
	}
	if cfg.pissa() {
		return nil, fmt.Errorf("adapter: PiSSA (init_lora_weights \"pissa\") initialises from the base weights: create it with NewFor")
	}
	a, err := newAdapter(cfg, m, b)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x1a7e9ef7))
	uniform := func(v []float32, fanIn int) {
		bound := 1 / math.Sqrt(float64(fanIn))
		for i := range v {
			v[i] = float32((2*rng.Float64() - 1) * bound)
		}
	}
	for _, md := range a.modules {
		for _, key := range md.keys(a.Config.PeftType) {
			shape := md.graphShape(key)
			v := make([]float32, shape.Numel())
			switch {
			case strings.HasSuffix(key, ".ia3_l"):
				for i := range v {
					v[i] = 1
				}
			case strings.HasSuffix(key, ".lora_A.weight"):
				if s, _ := a.Config.InitLoraWeights.(string); s == "gaussian" {
					for i := range v {
						v[i] = float32(rng.NormFloat64() / float64(md.R))
					}
				} else {
					uniform(v, md.In)
				}
			case a.Config.InitLoraWeights == false:
				// init_lora_weights=False leaves B as nn.Linear initialises it.
				uniform(v, md.R)
			}
			if err := a.upload(key, shape, v); err != nil {
				a.Release()
				return nil, err
			}
		}
	}
	return a, nil
}

func (a *Adapter) upload(key string, shape engine.Shape, v []float32) error {
	t, err := engine.FromFloat32(a.backend, shape, v)
	if err != nil {
		return fmt.Errorf("adapter: upload %s: %w", key, err)
	}
	a.tensors[key] = t
	return nil
}

// Modules lists the wrapped layers in model order.
func (a *Adapter) Modules() []Module {
	out := make([]Module, len(a.modules))
	for i, m := range a.modules {
		out[i] = *m
	}
	return out
}

// Keys lists the parameters' PEFT keys in a stable order (model order; A before B).
func (a *Adapter) Keys() []string { return append([]string(nil), a.keys...) }

// Tensor returns the parameter with a PEFT key (IA3 vectors as [dim]).
func (a *Adapter) Tensor(key string) (*engine.Tensor, bool) {
	t, ok := a.tensors[key]
	return t, ok
}

// Params lists the adapter's parameters in a stable order, for the optimizer, with their nodes in
// the graph that last called LinearFunc.
func (a *Adapter) Params() []Param {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := make([]Param, len(a.keys))
	for i, k := range a.keys {
		ps[i] = Param{Key: k, Node: a.nodes[k], Tensor: a.tensors[k]}
	}
	return ps
}

// NumParams is the number of trainable values.
func (a *Adapter) NumParams() int64 {
	var n int64
	for _, t := range a.tensors {
		n += int64(t.Shape().Numel())
	}
	return n
}

// Backend is the backend the parameters live on.
func (a *Adapter) Backend() engine.Backend { return a.backend }

// Release frees the parameters.
func (a *Adapter) Release() {
	for _, t := range a.tensors {
		t.Release()
	}
	a.tensors = map[string]*engine.Tensor{}
	a.mu.Lock()
	for _, t := range a.consts {
		t.Release()
	}
	a.consts = map[string]*engine.Tensor{}
	a.mu.Unlock()
}

// param declares (once per graph) the trainable parameter key in g.
func (a *Adapter) param(g *engine.Graph, md *Module, key string) *engine.Node {
	if n := g.Lookup(key); n != nil {
		return n
	}
	n := g.Param(key, engine.F32, md.graphShape(key), true)
	a.mu.Lock()
	a.nodes[key] = n
	a.mu.Unlock()
	return n
}

// LinearFunc returns the model.LinearFunc that records the adapter's layers in g, declaring their
// parameters on first use. With dropoutSeed (i32 [1], fresh each step) and lora_dropout > 0 it
// records training-mode dropout on the adapter's input; nil means evaluation.
func (a *Adapter) LinearFunc(g *engine.Graph, dropoutSeed *engine.Node) model.LinearFunc {
	p := float32(a.Config.LoraDropout)
	return func(g *engine.Graph, l *model.Linear, x *engine.Node) *engine.Node {
		md := a.byName[l.Name]
		if md == nil {
			return l.Forward(g, x)
		}
		if a.Config.PeftType == TypeIA3 {
			vec := a.param(g, md, md.keys(TypeIA3)[0])
			if md.Feedforward {
				return l.Forward(g, g.ScaleCols(x, vec))
			}
			// PEFT scales the base layer's output, bias included.
			return g.ScaleCols(l.Forward(g, x), vec)
		}
		if md.DoRA {
			return a.doraLinear(g, l, md, x, dropoutSeed)
		}
		keys := md.keys(TypeLoRA)
		A, B := a.param(g, md, keys[0]), a.param(g, md, keys[1])
		return LoRALinear(g, l, x, A, B, md.Scale, p, dropoutSeed)
	}
}

// LoRALinear records PEFT's LoRA layer y = W·x + bias + scale·B·A·dropout(x) over base layer l
// (dense or 4-bit) in one fused op, for any A [r, in] and B [out, r] nodes: parameters, or the
// output of a network that generates them (gradients flow into whatever computed them). With
// dropout > 0 and a seed it draws the layer's own mask (salted by its name), as PEFT's per-layer
// nn.Dropout does; a nil seed is evaluation.
func LoRALinear(g *engine.Graph, l *model.Linear, x, A, B *engine.Node, scale, dropout float32, seed *engine.Node) *engine.Node {
	op := engine.LoRA{Scale: scale, Compute: l.Compute}
	in := []*engine.Node{x, l.W}
	if l.Quant != nil {
		q := *l.Quant
		op.Quant = &q
		in = []*engine.Node{x, l.Packed, l.Absmax}
	}
	in = append(in, A, B)
	if dropout > 0 && seed != nil {
		op.Dropout, op.Salt = dropout, salt(l.Name)
		in = append(in, seed)
	}
	return l.AddBias(g, g.Apply(op, in...)[0])
}

// Layers lists the adapter's change to each layer it wraps, in model order (for a pool of
// adapters that mixes them in one step).
func (a *Adapter) Layers() []model.AdapterLayer {
	out := make([]model.AdapterLayer, 0, len(a.modules))
	for _, md := range a.modules {
		l := model.AdapterLayer{Module: md.Name}
		if a.Config.PeftType == TypeIA3 {
			l.Vec, l.Feedforward = a.tensors[md.keys(TypeIA3)[0]], md.Feedforward
		} else {
			keys := md.keys(TypeLoRA)
			l.A, l.B, l.R, l.Scale = a.tensors[keys[0]], a.tensors[keys[1]], md.R, md.Scale
			if md.DoRA {
				l.Magnitude = a.tensors[md.magnitudeKey()]
			}
		}
		out = append(out, l)
	}
	return out
}

// Bind binds every leaf of p that is one of the adapter's parameters. A leaf named like an adapter
// parameter (PEFT's key prefix) that this adapter lacks is an error: the graph was built for
// another adapter.
func (a *Adapter) Bind(p *engine.Program) error {
	for _, n := range p.Leaves() {
		name := n.Name()
		t, ok := a.tensors[name]
		if !ok {
			a.mu.Lock()
			t, ok = a.consts[name]
			a.mu.Unlock()
		}
		if !ok {
			if strings.HasPrefix(name, keyPrefix) || strings.HasPrefix(name, eyePrefix) {
				return fmt.Errorf("adapter: bind %s: this adapter has no such parameter", n.Name())
			}
			continue
		}
		if err := p.Bind(n, t); err != nil {
			return fmt.Errorf("adapter: %w", err)
		}
	}
	return nil
}

// sortedKeys returns m's keys in order (for error messages).
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// salt is a layer's dropout salt: a hash of its module name (FNV-1a).
func salt(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}
