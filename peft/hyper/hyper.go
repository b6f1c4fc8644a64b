// Package hyper is a hypernetwork that generates LoRA adapters from a task description, after
// Text-to-LoRA (Sakana AI, arXiv 2506.06105, SakanaAI/text-to-lora's hyper_modulator.py).
//
// Its inputs are a task embedding (an Encoder's vector of the description, passed through
// Linear→LayerNorm to latent/2), a learned layer-depth embedding (latent/4) and a learned
// module-type embedding (latent/4). Their concatenation goes through a mixer (Linear to 4×latent,
// SiLU, Linear back, SiLU), two residual blocks (x + SiLU(Linear(SiLU(Linear(LayerNorm x))))),
// and LayerNorm→Linear→SiLU to the head input. A head emits the LoRA of one (layer, module):
//   - L: a full head per module type, r·in values for A and r·out for B;
//   - M: one head shared by A and B (and all module types), told apart by learned A/B embeddings
//     added to its input; it emits r·max(in, out) values, of which A takes its r×in corner and B
//     the transpose of its r×out corner.
//
// The whole network is recorded in the engine's graph, so it runs, and trains through its
// generated adapter by the engine's autodiff, on every backend. Generate writes an ordinary PEFT
// LoRA adapter.
package hyper

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"sync"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// The heads.
const (
	HeadL = "L"
	HeadM = "M"
)

// Config is a hypernetwork's shape and the adapters it generates; it is saved as hyper_config.json.
type Config struct {
	// Latent is the width of the mixer and residual blocks (T2L's default 128); a multiple of 4.
	Latent int `json:"latent_size"`
	// HeadIn is the width of the head's input (T2L's default 512).
	HeadIn int `json:"head_in_size"`
	// Head is "L" or "M".
	Head string `json:"head"`
	// R and Alpha are the generated LoRA's rank and lora_alpha; Targets its module names.
	R       int      `json:"r"`
	Alpha   float64  `json:"lora_alpha"`
	Targets []string `json:"target_modules"`
	// EmbDim is the task embedding's size; Encoder names the encoder that made it.
	EmbDim  int    `json:"task_emb_size"`
	Encoder string `json:"encoder"`
	// BaseModel is the model folder the hypernetwork was trained for.
	BaseModel string `json:"base_model_name_or_path"`
	// Layers is the model's decoder layer count.
	Layers int `json:"num_layers"`
}

// DefaultConfig is T2L's default: latent 128, head input 512, the L head, rank 8 on q_proj and
// v_proj.
func DefaultConfig() Config {
	return Config{Latent: 128, HeadIn: 512, Head: HeadL, R: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}
}

func (c *Config) validate() error {
	switch {
	case c.Latent <= 0 || c.Latent%4 != 0:
		return fmt.Errorf("hyper: latent_size %d must be a positive multiple of 4", c.Latent)
	case c.HeadIn <= 0:
		return fmt.Errorf("hyper: head_in_size %d must be positive", c.HeadIn)
	case c.Head != HeadL && c.Head != HeadM:
		return fmt.Errorf("hyper: head %q is not L or M (the S head, one rank at a time, is not built)", c.Head)
	case c.R <= 0:
		return fmt.Errorf("hyper: rank %d must be positive", c.R)
	case !(c.Alpha > 0):
		return fmt.Errorf("hyper: lora_alpha %v must be positive", c.Alpha)
	case len(c.Targets) == 0:
		return fmt.Errorf("hyper: no target modules")
	case c.EmbDim <= 0:
		return fmt.Errorf("hyper: task_emb_size %d must be positive", c.EmbDim)
	case c.Layers <= 0:
		return fmt.Errorf("hyper: num_layers %d must be positive", c.Layers)
	}
	return nil
}

// LoRAConfig is the PEFT config of the adapters the network generates.
func (c *Config) LoRAConfig() peft.Config {
	lc := peft.LoRAConfig()
	lc.R, lc.LoraAlpha, lc.LoraDropout = c.R, c.Alpha, 0
	lc.TargetModules = peft.Names(c.Targets...)
	lc.BaseModelNameOrPath = c.BaseModel
	return lc
}

// target is one generated module.
type target struct {
	peft.Module
	layer, kind int
}

// kind is one module type (q_proj, ...): its shapes, the same in every layer.
type kind struct {
	name    string
	in, out int
}

// Net is a hypernetwork on a backend: its f32 parameters, the task embedding it reads (an input
// set with SetTask) and the constants its graph binds.
type Net struct {
	Cfg     Config
	model   *model.Config
	backend engine.Backend
	targets []target
	kinds   []kind
	maxDim  int
	names   []string
	shapes  map[string]engine.Shape
	tensors map[string]*engine.Tensor
	// consts are the bound non-trainable leaves: index vectors, LayerNorm's centring matrices, the
	// M head's corner selectors, the task embedding.
	consts map[string]*engine.Tensor

	mu    sync.Mutex
	nodes map[string]*engine.Node
}

var layerRe = regexp.MustCompile(`\.layers\.(\d+)\.`)

// taskKey is the task embedding's input leaf.
const taskKey = "hyper.task_embedding"

// layout resolves the targets against the model and lists the parameters and their shapes.
func layout(cfg Config, m *model.Config, b engine.Backend) (*Net, error) {
	if m == nil || b == nil {
		return nil, fmt.Errorf("hyper: no model config or backend")
	}
	if cfg.Layers == 0 {
		cfg.Layers = m.NumLayers
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Layers != m.NumLayers {
		return nil, fmt.Errorf("hyper: the network was made for %d layers, the model has %d", cfg.Layers, m.NumLayers)
	}
	// The adapter's own resolution finds the modules (and refuses unknown names).
	probe, err := peft.New(cfg.LoRAConfig(), m, b, 0)
	if err != nil {
		return nil, fmt.Errorf("hyper: %w", err)
	}
	mods := probe.Modules()
	probe.Release()
	n := &Net{Cfg: cfg, model: m, backend: b, shapes: map[string]engine.Shape{}, tensors: map[string]*engine.Tensor{},
		consts: map[string]*engine.Tensor{}, nodes: map[string]*engine.Node{}}
	kindOf := map[string]int{}
	for _, md := range mods {
		sm := layerRe.FindStringSubmatch(md.Name)
		if sm == nil {
			return nil, fmt.Errorf("hyper: module %s is not in a decoder layer", md.Name)
		}
		layer, _ := strconv.Atoi(sm[1])
		name := lastPart(md.Name)
		k, ok := kindOf[name]
		if !ok {
			k = len(n.kinds)
			kindOf[name] = k
			n.kinds = append(n.kinds, kind{name: name, in: md.In, out: md.Out})
		} else if n.kinds[k].in != md.In || n.kinds[k].out != md.Out {
			return nil, fmt.Errorf("hyper: %s is %d×%d, other %s layers %d×%d: a module type must have one shape", md.Name, md.Out, md.In, name, n.kinds[k].out, n.kinds[k].in)
		}
		n.targets = append(n.targets, target{Module: md, layer: layer, kind: k})
		n.maxDim = max(n.maxDim, md.In, md.Out)
	}
	lat, r := cfg.Latent, cfg.R
	add := func(name string, s ...int) {
		n.names = append(n.names, name)
		n.shapes[name] = engine.Shape(s)
	}
	add("task.weight", lat/2, cfg.EmbDim)
	add("task.bias", lat/2)
	add("task_norm.weight", lat/2)
	add("task_norm.bias", lat/2)
	add("layer_emb.weight", cfg.Layers, lat/4)
	add("module_emb.weight", len(n.kinds), lat/4)
	// The mixer's first Linear acts on concat(task, layer, module): kept as its three column blocks.
	add("mixer.0.weight_task", 4*lat, lat/2)
	add("mixer.0.weight_layer", 4*lat, lat/4)
	add("mixer.0.weight_module", 4*lat, lat/4)
	add("mixer.0.bias", 4*lat)
	add("mixer.2.weight", lat, 4*lat)
	add("mixer.2.bias", lat)
	for _, blk := range []string{"res1", "res2"} {
		add(blk+".norm.weight", lat)
		add(blk+".norm.bias", lat)
		add(blk+".0.weight", 4*lat, lat)
		add(blk+".0.bias", 4*lat)
		add(blk+".2.weight", lat, 4*lat)
		add(blk+".2.bias", lat)
	}
	add("to_head.norm.weight", lat)
	add("to_head.norm.bias", lat)
	add("to_head.0.weight", cfg.HeadIn, lat)
	add("to_head.0.bias", cfg.HeadIn)
	if cfg.Head == HeadL {
		for _, k := range n.kinds {
			add("head."+k.name+".A.weight", r*k.in, cfg.HeadIn)
			add("head."+k.name+".A.bias", r*k.in)
			add("head."+k.name+".B.weight", r*k.out, cfg.HeadIn)
			add("head."+k.name+".B.bias", r*k.out)
		}
	} else {
		add("head.weight", r*n.maxDim, cfg.HeadIn)
		add("head.bias", r*n.maxDim)
		add("head.emb_A", cfg.HeadIn)
		add("head.emb_B", cfg.HeadIn)
	}
	return n, nil
}

func lastPart(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '.' {
			return path[i+1:]
		}
	}
	return path
}

// New creates a hypernetwork for model config m on b, initialised deterministically from seed:
// Linear layers as torch's nn.Linear (U(±1/√fan_in) weights and biases), LayerNorms to the
// identity, embeddings N(0, 1). The L head starts where a PEFT LoRA starts: A's head has zero
// weights and biases drawn as LoRA's A (U(±1/√in)), B's head is zero, so every generated adapter
// is the identity until training moves it. The M head, shared by A and B, starts small (weights
// U(±0.01/√head_in), zero bias).
func New(cfg Config, m *model.Config, b engine.Backend, seed uint64) (*Net, error) {
	n, err := layout(cfg, m, b)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x4e7))
	values := map[string][]float32{}
	fill := func(v []float32, bound float64) {
		for i := range v {
			v[i] = float32((2*rng.Float64() - 1) * bound)
		}
	}
	fanIn := map[string]int{}
	for _, name := range n.names {
		if s := n.shapes[name]; len(s) == 2 && isWeight(name) {
			fanIn[name] = s[1]
			fanIn[biasOf(name)] = s[1]
		}
	}
	fanIn["mixer.0.bias"] = n.Cfg.Latent
	for _, name := range n.names {
		v := make([]float32, n.shapes[name].Numel())
		switch {
		case name == "task_norm.weight" || hasSuffix(name, ".norm.weight"):
			for i := range v {
				v[i] = 1
			}
		case hasSuffix(name, "norm.bias"):
		case hasSuffix(name, "_emb.weight"):
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
		case n.Cfg.Head == HeadL && hasSuffix(name, ".A.bias"):
			fill(v, 1/math.Sqrt(float64(n.shapes[name][0]/n.Cfg.R)))
		case n.Cfg.Head == HeadL && (hasSuffix(name, ".A.weight") || hasSuffix(name, ".B.weight") || hasSuffix(name, ".B.bias")):
		case name == "head.weight":
			fill(v, 0.01/math.Sqrt(float64(n.Cfg.HeadIn)))
		case name == "head.bias":
		case name == "head.emb_A" || name == "head.emb_B":
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
		case name == "mixer.0.weight_task" || name == "mixer.0.weight_layer" || name == "mixer.0.weight_module":
			fill(v, 1/math.Sqrt(float64(n.Cfg.Latent))) // one Linear over the concatenation
		default:
			fill(v, 1/math.Sqrt(float64(fanIn[name])))
		}
		values[name] = v
	}
	if err := n.upload(values); err != nil {
		return nil, err
	}
	return n, nil
}

func isWeight(name string) bool {
	return hasSuffix(name, ".weight") || hasSuffix(name, ".weight_task")
}

func biasOf(name string) string {
	if hasSuffix(name, ".weight_task") {
		return name[:len(name)-len(".weight_task")] + ".bias"
	}
	return name[:len(name)-len(".weight")] + ".bias"
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

// upload puts the parameters and the constants on the backend.
func (n *Net) upload(values map[string][]float32) error {
	ok := false
	defer func() {
		if !ok {
			n.Release()
		}
	}()
	for _, name := range n.names {
		v, have := values[name]
		if !have || len(v) != n.shapes[name].Numel() {
			return fmt.Errorf("hyper: parameter %s: %d values for shape %v", name, len(v), n.shapes[name])
		}
		t, err := engine.FromFloat32(n.backend, n.shapes[name], v)
		if err != nil {
			return fmt.Errorf("hyper: upload %s: %w", name, err)
		}
		n.tensors[name] = t
	}
	f32 := func(name string, s engine.Shape, v []float32) error {
		t, err := engine.FromFloat32(n.backend, s, v)
		if err == nil {
			n.consts[name] = t
		}
		return err
	}
	i32 := func(name string, v []int32) error {
		t, err := engine.FromInt32(n.backend, engine.Shape{len(v)}, v)
		if err == nil {
			n.consts[name] = t
		}
		return err
	}
	lat := n.Cfg.Latent
	layers := make([]int32, n.Cfg.Layers)
	for i := range layers {
		layers[i] = int32(i)
		if err := i32(fmt.Sprintf("hyper.const.layer%d", i), []int32{int32(i)}); err != nil {
			return err
		}
	}
	if err := i32("hyper.const.layers", layers); err != nil {
		return err
	}
	for k := range n.kinds {
		ids := make([]int32, n.Cfg.Layers)
		for i := range ids {
			ids[i] = int32(k)
		}
		if err := i32(fmt.Sprintf("hyper.const.kind%d", k), ids); err != nil {
			return err
		}
	}
	for _, d := range []int{lat / 2, lat} {
		if err := f32(fmt.Sprintf("hyper.const.center%d", d), engine.Shape{d, d}, centering(d)); err != nil {
			return err
		}
	}
	if n.Cfg.Head == HeadM {
		for _, d := range n.dims() {
			if err := f32(fmt.Sprintf("hyper.const.corner%d", d), engine.Shape{n.maxDim, d}, corner(n.maxDim, d)); err != nil {
				return err
			}
		}
	}
	if err := f32(taskKey, engine.Shape{1, n.Cfg.EmbDim}, make([]float32, n.Cfg.EmbDim)); err != nil {
		return err
	}
	ok = true
	return nil
}

// dims are the in and out sizes of the module types, without repeats.
func (n *Net) dims() []int {
	seen := map[int]bool{}
	var ds []int
	for _, k := range n.kinds {
		for _, d := range []int{k.in, k.out} {
			if !seen[d] {
				seen[d] = true
				ds = append(ds, d)
			}
		}
	}
	sort.Ints(ds)
	return ds
}

// centering is I − 11ᵀ/d: x·C subtracts each row's mean (LayerNorm's centring, as a matmul).
func centering(d int) []float32 {
	v := make([]float32, d*d)
	for i := range d {
		for j := range d {
			v[i*d+j] = -1 / float32(d)
		}
		v[i*d+i] += 1
	}
	return v
}

// corner is the [big, small] matrix that keeps a row's first small columns.
func corner(big, small int) []float32 {
	v := make([]float32, big*small)
	for i := range small {
		v[i*small+i] = 1
	}
	return v
}

// SetTask sets the task embedding the network's graphs read (an Encoder's vector).
func (n *Net) SetTask(emb []float32) error {
	if len(emb) != n.Cfg.EmbDim {
		return fmt.Errorf("hyper: task embedding of %d values, the network takes %d", len(emb), n.Cfg.EmbDim)
	}
	for i, x := range emb {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("hyper: task embedding value %d is %v", i, x)
		}
	}
	return n.consts[taskKey].SetFloat32(emb)
}

// Release frees the parameters and constants.
func (n *Net) Release() {
	for _, m := range []map[string]*engine.Tensor{n.tensors, n.consts} {
		for k, t := range m {
			t.Release()
			delete(m, k)
		}
	}
}

// NumParams is the number of trainable values.
func (n *Net) NumParams() int64 {
	var s int64
	for _, name := range n.names {
		s += int64(n.shapes[name].Numel())
	}
	return s
}

// Backend is the backend the parameters live on.
func (n *Net) Backend() engine.Backend { return n.backend }

// Modules lists the generated adapter's modules (as peft.Adapter.Modules lists them).
func (n *Net) Modules() []peft.Module {
	out := make([]peft.Module, len(n.targets))
	for i, t := range n.targets {
		out[i] = t.Module
	}
	return out
}

// Params lists the trainable parameters in a stable order, with their nodes in the graph that
// last recorded the network.
func (n *Net) Params() []peft.Param {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := make([]peft.Param, len(n.names))
	for i, name := range n.names {
		ps[i] = peft.Param{Key: name, Node: n.nodes[name], Tensor: n.tensors[name]}
	}
	return ps
}

// Bind binds the parameters, constants and the task embedding in p.
func (n *Net) Bind(p *engine.Program) error {
	for _, leaf := range p.Leaves() {
		t, ok := n.tensors[leaf.Name()]
		if !ok {
			t, ok = n.consts[leaf.Name()]
		}
		if !ok {
			continue
		}
		if err := p.Bind(leaf, t); err != nil {
			return fmt.Errorf("hyper: %w", err)
		}
	}
	return nil
}

func (n *Net) param(g *engine.Graph, name string) *engine.Node {
	if nd := g.Lookup(name); nd != nil {
		return nd
	}
	nd := g.Param(name, engine.F32, n.shapes[name], true)
	n.mu.Lock()
	n.nodes[name] = nd
	n.mu.Unlock()
	return nd
}

func (n *Net) constant(g *engine.Graph, name string) *engine.Node {
	if nd := g.Lookup(name); nd != nil {
		return nd
	}
	t := n.consts[name]
	return g.Param(name, t.DType(), t.Shape(), false)
}

// linear records x·Wᵀ + b for the parameters prefix.weight and prefix.bias.
func (n *Net) linear(g *engine.Graph, prefix string, x *engine.Node) *engine.Node {
	return g.AddBias(g.MatMul(x, n.param(g, prefix+".weight"), false, true), n.param(g, prefix+".bias"))
}

// layerNorm records LayerNorm over rows of width d: centring (a matmul), RMSNorm of the centred
// rows (their mean square is the variance), then the bias. eps is torch's default.
func (n *Net) layerNorm(g *engine.Graph, prefix string, x *engine.Node, d int) *engine.Node {
	c := g.MatMul(x, n.constant(g, fmt.Sprintf("hyper.const.center%d", d)), false, false)
	return g.AddBias(g.RMSNorm(c, n.param(g, prefix+".weight"), 1e-5), n.param(g, prefix+".bias"))
}

// Record records the network in g and returns every generated module's A [r, in] and B [out, r]
// by module path.
func (n *Net) Record(g *engine.Graph) (A, B map[string]*engine.Node) {
	lat, r := n.Cfg.Latent, n.Cfg.R
	emb := n.constant(g, taskKey)
	t := n.layerNorm(g, "task_norm", n.linear(g, "task", emb), lat/2)
	tm := g.Reshape(g.MatMul(t, n.param(g, "mixer.0.weight_task"), false, true), 4*lat)
	layerIDs := n.constant(g, "hyper.const.layers")
	A, B = map[string]*engine.Node{}, map[string]*engine.Node{}
	var emA, emB *engine.Node
	if n.Cfg.Head == HeadM {
		emA, emB = n.param(g, "head.emb_A"), n.param(g, "head.emb_B")
	}
	for k, kd := range n.kinds {
		le := g.Embedding(n.param(g, "layer_emb.weight"), layerIDs)
		me := g.Embedding(n.param(g, "module_emb.weight"), n.constant(g, fmt.Sprintf("hyper.const.kind%d", k)))
		x := g.Add(g.MatMul(le, n.param(g, "mixer.0.weight_layer"), false, true), g.MatMul(me, n.param(g, "mixer.0.weight_module"), false, true))
		x = g.SiLU(g.AddBias(g.AddBias(x, tm), n.param(g, "mixer.0.bias")))
		x = g.SiLU(n.linear(g, "mixer.2", x))
		for _, blk := range []string{"res1", "res2"} {
			h := g.SiLU(n.linear(g, blk+".0", n.layerNorm(g, blk+".norm", x, lat)))
			x = g.Add(x, g.SiLU(n.linear(g, blk+".2", h)))
		}
		h := g.SiLU(n.linear(g, "to_head.0", n.layerNorm(g, "to_head.norm", x, lat)))
		var outA, outB *engine.Node
		if n.Cfg.Head == HeadL {
			outA = n.linear(g, "head."+kd.name+".A", h) // [layers, r·in]
			outB = n.linear(g, "head."+kd.name+".B", h) // [layers, r·out]
		} else {
			outA = n.linear(g, "head", g.AddBias(h, emA)) // [layers, r·max]
			outB = n.linear(g, "head", g.AddBias(h, emB))
		}
		for _, tg := range n.targets {
			if tg.kind != k {
				continue
			}
			id := n.constant(g, fmt.Sprintf("hyper.const.layer%d", tg.layer))
			ra, rb := g.Embedding(outA, id), g.Embedding(outB, id)
			if n.Cfg.Head == HeadL {
				A[tg.Name] = g.Reshape(ra, r, kd.in)
				B[tg.Name] = g.Reshape(rb, kd.out, r)
				continue
			}
			a := g.Reshape(ra, r, n.maxDim)
			if kd.in < n.maxDim {
				a = g.MatMul(a, n.constant(g, fmt.Sprintf("hyper.const.corner%d", kd.in)), false, false)
			}
			A[tg.Name] = a
			// B = (corner of the [r, max] block)ᵀ = Cᵀ·Xᵀ.
			B[tg.Name] = g.MatMul(n.constant(g, fmt.Sprintf("hyper.const.corner%d", kd.out)), g.Reshape(rb, r, n.maxDim), true, true)
		}
	}
	return A, B
}

// LinearFunc records the network in g and returns the model.LinearFunc that applies its generated
// LoRA to the targeted layers (train.Trainable). Training through it moves the network: the
// gradients of A and B flow back into it. The generated adapter has no dropout.
func (n *Net) LinearFunc(g *engine.Graph, _ *engine.Node) model.LinearFunc {
	A, B := n.Record(g)
	scale := map[string]float32{}
	for _, t := range n.targets {
		scale[t.Name] = t.Scale
	}
	return func(g *engine.Graph, l *model.Linear, x *engine.Node) *engine.Node {
		a, ok := A[l.Name]
		if !ok {
			return l.Forward(g, x)
		}
		return peft.LoRALinear(g, l, x, a, B[l.Name], scale[l.Name], 0, nil)
	}
}
