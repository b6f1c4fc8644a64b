package model

import (
	"container/list"
	"fmt"
	"strings"

	"github.com/lathe-ml/lathe/engine"
)

// Adapter is what inference needs of an adapter (peft.Adapter satisfies it): the linear layers it
// wraps, the binding of its parameters, and its changes layer by layer for a pool of adapters.
type Adapter interface {
	LinearFunc(g *engine.Graph, dropoutSeed *engine.Node) LinearFunc
	Bind(p *engine.Program) error
	// Signature describes the adapter's structure (its kind, the layers it wraps, their shapes
	// and scales): adapters of one signature share step programs, their parameters bound at
	// each step.
	Signature() string
	// Layers lists the adapter's change to each layer it wraps. A step that mixes adapters
	// reads copies of them, taken when the adapter enters the cache's pool: an adapter whose
	// weights change afterwards (training) is served in mixed steps as it was.
	Layers() []AdapterLayer
}

// Cache is the key/value cache of up to Slots sequences of up to MaxLen positions each, on the
// model's backend, with the step programs compiled for it. A sequence lives in one slot; a step
// feeds tokens to any set of slots, each at its own position and with its own adapter. When every
// sequence of a step uses one adapter (or none), the step runs its fused layers; when they differ,
// the step reads each row's adapter from the cache's pool, which holds copies of up to Slots
// adapters stacked layer by layer (two launches a layer whatever the mix, as S-LoRA and Punica
// do). A serving loop keeps one cache for its lifetime; the cache is not safe for concurrent use.
type Cache struct {
	K, V          []*engine.Tensor
	Slots, MaxLen int

	m     *Model
	progs map[string]*list.Element // of *stepProgram, most recently used first
	lru   *list.List
	last  *stepProgram
	pool  *pool
}

// A cache keeps at most maxPrograms step programs, holding at most programBytes of activation
// buffers between them (the most recent is always kept): long prompts' programs are large.
const (
	maxPrograms  = 24
	programBytes = 1 << 30
)

// NewCache allocates a cache of slots sequences of up to maxLen positions each.
func (m *Model) NewCache(slots, maxLen int) (*Cache, error) {
	if maxLen <= 0 || slots <= 0 {
		return nil, fmt.Errorf("cache: %d slots of %d positions: both must be positive", slots, maxLen)
	}
	if limit := m.Cfg.MaxPositionEmbeddings; limit > 0 && maxLen > limit {
		maxLen = limit
	}
	c := &Cache{Slots: slots, MaxLen: maxLen, m: m, progs: map[string]*list.Element{}, lru: list.New()}
	kv := engine.Shape{slots * maxLen, m.Cfg.NumKVHeads * m.Cfg.HeadDim}
	for range m.Cfg.NumLayers {
		for _, dst := range []*[]*engine.Tensor{&c.K, &c.V} {
			t, err := engine.NewTensor(m.Backend, engine.F32, kv)
			if err != nil {
				c.Release()
				return nil, fmt.Errorf("cache of %d×%d positions: %w", slots, maxLen, err)
			}
			*dst = append(*dst, t)
		}
	}
	return c, nil
}

// Release frees the cache and its programs.
func (c *Cache) Release() {
	for _, t := range append(c.K, c.V...) {
		t.Release()
	}
	c.K, c.V = nil, nil
	for c.lru.Len() > 0 {
		c.drop(c.lru.Front())
	}
	if c.pool != nil {
		c.pool.release()
		c.pool = nil
	}
}

// dropOldPooled drops the row-wise programs compiled for an older pool layout.
func (c *Cache) dropOldPooled() {
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if sp := e.Value.(*stepProgram); sp.rowwise && sp.gen != c.pool.gen {
			c.drop(e)
		}
		e = next
	}
}

func (c *Cache) drop(e *list.Element) {
	sp := c.lru.Remove(e).(*stepProgram)
	if c.last == sp {
		c.last = nil
	}
	delete(c.progs, sp.key)
	sp.p.Release()
	for _, t := range sp.inputs {
		t.Release()
	}
}

func (c *Cache) programBytes() int64 {
	var n int64
	for e := c.lru.Front(); e != nil; e = e.Next() {
		n += e.Value.(*stepProgram).p.PlannedBytes()
	}
	return n
}

// Evict drops adapter a's copy from the cache's pool (before a is freed, or after its weights
// change); a later step that mixes it in copies it again.
func (c *Cache) Evict(a Adapter) {
	if c.pool != nil {
		c.pool.evict(a)
	}
}

// Launches is the number of kernel launches of the last step (0 before any).
func (c *Cache) Launches() int {
	if c.last == nil {
		return 0
	}
	return c.last.p.Launches()
}

// Programs is the number of compiled step programs the cache holds.
func (c *Cache) Programs() int { return c.lru.Len() }

// Seq is one sequence's part of a step.
type Seq struct {
	// Slot is the sequence's slot in the cache.
	Slot int
	// Pos is the position of the first fed token: how many of the sequence's tokens are cached.
	Pos int
	// IDs are the tokens fed (at least one). Sequences of a step may feed different numbers
	// (prompts of different lengths); all but the longest are then padded.
	IDs []int32
	// Adapter applies to this sequence only; nil is the base model.
	Adapter Adapter
}

// Step feeds each sequence's tokens at its positions, writes their keys and values into its slot,
// and returns the logits of each sequence's last fed token, [len(seqs)·vocab].
func (c *Cache) Step(seqs []Seq) ([]float32, error) { return c.step(seqs, false, 0, nil) }

// StepTopK is Step returning, instead of the logits, each sequence's k largest logits with their
// token ids: [len(seqs)·k·2] as (logit, id) pairs, best first, ties by the lower id (engine.TopK),
// computed on the device. Reading back k candidates instead of the vocabulary is all that greedy
// decoding (k = 1) and top-k sampling need.
func (c *Cache) StepTopK(seqs []Seq, k int) ([]float32, error) {
	if k < 1 || k > c.m.Cfg.VocabSize {
		return nil, fmt.Errorf("step: top %d of a vocabulary of %d", k, c.m.Cfg.VocabSize)
	}
	return c.step(seqs, false, k, nil)
}

// StepSample is StepTopK with engine.TopK's sampling control: ctl holds engine.SampleCtlWords
// words a sequence (1/T, the Gumbel flag and keys), and each sequence's k+1 pairs come back,
// [len(seqs)·(k+1)·2]: its k candidates (by logit, or by Gumbel score for a Gumbel row) and then
// (mass, 0), mass = Σ exp((logit − max)/T) over the vocabulary. Top-p and temperature sampling
// decode from these without reading the vocabulary back.
func (c *Cache) StepSample(seqs []Seq, k int, ctl []int32) ([]float32, error) {
	if k < 1 || k > c.m.Cfg.VocabSize {
		return nil, fmt.Errorf("step: top %d of a vocabulary of %d", k, c.m.Cfg.VocabSize)
	}
	if len(ctl) != len(seqs)*engine.SampleCtlWords {
		return nil, fmt.Errorf("step: %d sampling control words for %d sequences, want %d a sequence", len(ctl), len(seqs), engine.SampleCtlWords)
	}
	return c.step(seqs, false, k, ctl)
}

// StepAll is Step returning the logits of every fed token, [len(seqs)·n·vocab], sequence-major;
// every sequence must feed the same number of tokens, n.
func (c *Cache) StepAll(seqs []Seq) ([]float32, error) { return c.step(seqs, true, 0, nil) }

// stepProgram is a compiled step with its per-step inputs, kept for reuse: a step's graph depends
// only on the number of sequences and tokens and on the adapters' signatures, not on slots,
// positions or which adapters of those signatures (bound at each step).
type stepProgram struct {
	key                 string
	rowwise             bool
	gen                 int // the pool layout a row-wise program reads
	p                   *engine.Program
	ids, pos, rows, sel *engine.Node
	last, selLast       *engine.Node
	ctl                 *engine.Node // TopK's sampling control, when sampling on the device
	logits              *engine.Node
	inputs              map[*engine.Node]*engine.Tensor
}

func (c *Cache) step(seqs []Seq, all bool, topK int, ctl []int32) ([]float32, error) {
	if c.K == nil {
		return nil, fmt.Errorf("step: the cache was released")
	}
	if len(seqs) == 0 {
		return nil, fmt.Errorf("step: no sequences")
	}
	n := 0
	for _, s := range seqs {
		n = max(n, len(s.IDs))
	}
	used := map[int]bool{}
	kvLen := 0
	for i, s := range seqs {
		switch {
		case len(s.IDs) == 0 || (all && len(s.IDs) != n):
			return nil, fmt.Errorf("step: sequence %d feeds %d tokens, another %d (StepAll: want the same, at least 1)", i, len(s.IDs), n)
		case s.Slot < 0 || s.Slot >= c.Slots || used[s.Slot]:
			return nil, fmt.Errorf("step: sequence %d: slot %d is outside the cache's %d or taken twice", i, s.Slot, c.Slots)
		case s.Pos < 0 || s.Pos+len(s.IDs) > c.MaxLen:
			return nil, fmt.Errorf("step: sequence %d: %d cached + %d new tokens exceed the cache's %d positions", i, s.Pos, len(s.IDs), c.MaxLen)
		}
		used[s.Slot] = true
		kvLen = max(kvLen, s.Pos+len(s.IDs))
	}
	// Every sequence's tokens are padded to one width: the longest's, and on a device where
	// programs are costly to compile (Caps.CheapPrograms false: GPUs) its Bucket, so that prompts
	// of many lengths share few programs. A sequence's padding lands past its tokens in its own
	// slot, where its next tokens overwrite it before anything reads it, and no real token
	// attends to it. On the CPU a 70-token prompt of four Llama-3.2-1B layers took 116 ms instead
	// of 131 at its bucket's 80 rows, and compiling its program cost no measurable time.
	width := n
	if !all && n > 1 {
		if !c.m.Backend.Caps().CheapPrograms {
			width = Bucket(n)
		}
		for _, s := range seqs {
			width = min(width, c.MaxLen-s.Pos)
		}
		if width < n {
			return nil, fmt.Errorf("step: the sequences' %d tokens do not fit the cache together", n)
		}
	}
	adapters, slotOf := distinctAdapters(seqs)
	// Rows take the pool when they do not all use the same adapter: each picks its own.
	rowwise := len(adapters) > 1
	for _, k := range slotOf {
		rowwise = rowwise || (k < 0 && len(adapters) > 0)
	}
	if rowwise {
		if c.pool == nil {
			c.pool = newPool(c.m, c.Slots)
		}
		slots, err := c.pool.place(adapters)
		if err != nil {
			// Start the next mixed step from an empty pool rather than a half-built one.
			c.pool.release()
			c.pool.gen++
			c.dropOldPooled()
			c.pool = nil
			return nil, fmt.Errorf("step: %w", err)
		}
		for b, k := range slotOf {
			if k >= 0 {
				slotOf[b] = slots[k]
			}
		}
		c.dropOldPooled()
	}
	sp, err := c.program(len(seqs), width, all, topK, ctl != nil, adapters, rowwise, kvLen)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	// This step's adapters: the program may have run with others of the same signatures.
	if err := sp.bindAdapters(adapters); err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	nt := len(seqs) * width
	ids, pos, rows, sel := make([]int32, nt), make([]int32, nt), make([]int32, nt), make([]int32, nt)
	last, selLast := make([]int32, len(seqs)), make([]int32, len(seqs))
	for b, s := range seqs {
		for i := range width {
			t := b*width + i
			p := s.Pos + i
			if i < len(s.IDs) {
				ids[t] = s.IDs[i]
			}
			pos[t], rows[t], sel[t] = int32(p), int32(s.Slot*c.MaxLen+p), slotOf[b]
		}
		last[b], selLast[b] = int32(b*width+len(s.IDs)-1), slotOf[b]
	}
	for node, v := range map[*engine.Node][]int32{sp.ids: ids, sp.pos: pos, sp.rows: rows, sp.sel: sel, sp.last: last, sp.selLast: selLast, sp.ctl: ctl} {
		if node == nil {
			continue
		}
		if err := sp.inputs[node].SetInt32(v); err != nil {
			return nil, fmt.Errorf("step: %w", err)
		}
	}
	if err := sp.p.Run(); err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	c.last = sp
	out, err := sp.p.Float32(sp.logits)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	return out, nil
}

// Bucket is the width a step pads a prompt of n tokens to (when the cache has room): n rounded up
// to a multiple of an eighth of the next power of two, and of 16 (16, 32, 48, … 128, 160, 192, …
// 256, 320, …). Prompts of many lengths share few compiled programs, four widths an octave past
// 128, and padding stays under an eighth of that power of two (a quarter of the prompt at worst,
// 9% on average over lengths 128-4096). Prompts of one bucket can share a step at no extra
// padding.
//
// Padded rows cost as much as real ones: with the next power of two itself, a 70-token prompt ran
// as 128 rows, and its first token took 1.5 times as long on the CPU as at 80.
func Bucket(n int) int {
	p := 16
	for p < n {
		p *= 2
	}
	step := max(16, p/8)
	return (max(n, 1) + step - 1) / step * step
}

// distinctAdapters lists the step's adapters in order of first use and gives each sequence its
// adapter's index there (-1: none).
func distinctAdapters(seqs []Seq) ([]Adapter, []int32) {
	var list []Adapter
	slot := make([]int32, len(seqs))
	for i, s := range seqs {
		slot[i] = -1
		if s.Adapter == nil {
			continue
		}
		k := -1
		for j, a := range list {
			if a == s.Adapter {
				k = j
			}
		}
		if k < 0 {
			k = len(list)
			list = append(list, s.Adapter)
		}
		slot[i] = int32(k)
	}
	return list, slot
}

// program returns the compiled step for batch sequences of width tokens with these adapters
// (rowwise: each on its own rows), compiling it on first use.
func (c *Cache) program(batch, width int, all bool, topK int, sample bool, adapters []Adapter, rowwise bool, kvLen int) (*stepProgram, error) {
	var key strings.Builder
	fmt.Fprintf(&key, "%d×%d all=%v top=%d sample=%v", batch, width, all, topK, sample)
	if rowwise {
		fmt.Fprintf(&key, " pool=%d", c.pool.gen)
	} else if len(adapters) == 1 {
		fmt.Fprintf(&key, " [%s]", adapters[0].Signature())
	}
	if rs := c.m.Cfg.RopeScaling; rs.Kind() == "dynamic" && kvLen > c.m.Cfg.MaxPositionEmbeddings {
		fmt.Fprintf(&key, " rope=%d", kvLen) // dynamic RoPE depends on the length
	} else {
		kvLen = 0
	}
	if e, ok := c.progs[key.String()]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*stepProgram), nil
	}
	return c.compile(key.String(), batch, width, all, topK, sample, adapters, rowwise, kvLen)
}

func (c *Cache) compile(key string, batch, width int, all bool, topK int, sample bool, adapters []Adapter, rowwise bool, kvLen int) (*stepProgram, error) {
	m := c.m
	g := engine.NewGraph()
	mg := m.Declare(g)
	nt := batch * width
	sp := &stepProgram{key: key, rowwise: rowwise, inputs: map[*engine.Node]*engine.Tensor{}}
	if rowwise {
		sp.gen = c.pool.gen
	}
	sp.ids = g.Input("ids", engine.I32, engine.Shape{nt})
	sp.pos = g.Input("pos", engine.I32, engine.Shape{nt})
	sp.rows = g.Input("rows", engine.I32, engine.Shape{nt})
	kv := &KVCache{Rows: sp.rows, Stride: c.MaxLen, KVLen: kvLen}
	shape := c.K[0].Shape()
	for l := range m.Cfg.NumLayers {
		kv.K = append(kv.K, g.Input(fmt.Sprintf("cache.%d.k", l), engine.F32, shape))
		kv.V = append(kv.V, g.Input(fmt.Sprintf("cache.%d.v", l), engine.F32, shape))
	}
	if !all {
		sp.last = g.Input("last", engine.I32, engine.Shape{batch})
	}
	var lin LinearFunc
	switch {
	case !rowwise && len(adapters) == 1:
		// Every row uses the adapter: its fused layers.
		lin = adapters[0].LinearFunc(g, nil)
	case rowwise:
		// Each row its own adapter: the base projection once, each row's change from the pool.
		sp.sel = g.Input("sel", engine.I32, engine.Shape{nt})
		rowsLin := c.pool.linear(sp.sel)
		lin = rowsLin
		if sp.last != nil {
			// The output layer sees the last tokens only: its rows select with their own vector.
			sp.selLast = g.Input("sel.last", engine.I32, engine.Shape{batch})
			lastLin := c.pool.linear(sp.selLast)
			lin = func(g *engine.Graph, l *Linear, x *engine.Node) *engine.Node {
				if l == mg.LMHead || l == mg.Out {
					return lastLin(g, l, x)
				}
				return rowsLin(g, l, x)
			}
		}
	}
	sp.logits = mg.ForwardCached(sp.ids, sp.pos, batch, width, lin, kv, sp.last)
	switch {
	case topK > 0 && sample:
		sp.ctl = g.Input("sample.ctl", engine.I32, engine.Shape{batch, engine.SampleCtlWords})
		sp.logits = g.SampleTopK(sp.logits, sp.ctl, topK) // the candidates are the step's only output
	case topK > 0:
		sp.logits = g.TopK(sp.logits, topK)
	}
	p, err := engine.Compile(g, m.Backend, []*engine.Node{sp.logits}, engine.CompileOptions{})
	if err != nil {
		return nil, err
	}
	sp.p = p
	fail := func(err error) (*stepProgram, error) {
		p.Release()
		for _, t := range sp.inputs {
			t.Release()
		}
		return nil, err
	}
	if err := m.Bind(p); err != nil {
		return fail(err)
	}
	if rowwise {
		if err := c.pool.bind(p); err != nil {
			return fail(err)
		}
	}
	for l := range m.Cfg.NumLayers {
		if err := p.Bind(kv.K[l], c.K[l]); err != nil {
			return fail(err)
		}
		if err := p.Bind(kv.V[l], c.V[l]); err != nil {
			return fail(err)
		}
	}
	for _, node := range []*engine.Node{sp.ids, sp.pos, sp.rows, sp.sel, sp.last, sp.selLast, sp.ctl} {
		if node == nil {
			continue
		}
		t, err := engine.NewTensor(m.Backend, engine.I32, node.Shape())
		if err != nil {
			return fail(err)
		}
		sp.inputs[node] = t
		if err := p.Bind(node, t); err != nil {
			return fail(err)
		}
	}
	c.progs[key] = c.lru.PushFront(sp)
	for c.lru.Len() > 1 && (c.lru.Len() > maxPrograms || c.programBytes() > programBytes) {
		c.drop(c.lru.Back())
	}
	return sp, nil
}

// bindAdapters binds the step's adapter when every row uses it (the fused layers); a row-wise
// program reads the pool, bound when it was compiled.
func (sp *stepProgram) bindAdapters(adapters []Adapter) error {
	if !sp.rowwise && len(adapters) == 1 {
		return adapters[0].Bind(sp.p)
	}
	return nil
}
