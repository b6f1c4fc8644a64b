package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/ceiling"
)

// Repeats controls how often a measurement runs: Warmup untimed runs (pipeline compilation,
// first allocation), then timed runs until both Min runs and Budget of time are spent, at most Max.
type Repeats struct {
	Warmup int
	Min    int
	Max    int
	Budget time.Duration
}

// compiled is a case compiled on a backend with random inputs bound.
type compiled struct {
	be      engine.Backend
	prog    *engine.Program
	outs    []*engine.Node
	tensors []*engine.Tensor
	probe   []byte
}

// compileCase builds c replicas times over the same inputs in one graph (so one submission runs
// the kernel replicas times), except that each replica gets its own copy of the inputs named in
// cold, and binds random inputs.
func compileCase(be engine.Backend, build func(g *engine.Graph, in leafFunc) []*engine.Node, replicas int, cold []string, seed uint64) (*compiled, error) {
	g := engine.NewGraph()
	var outs []*engine.Node
	for r := range max(replicas, 1) {
		in := func(name string, dt engine.DType, shape engine.Shape) *engine.Node {
			if r > 0 && slices.Contains(cold, name) {
				name = fmt.Sprintf("%s#%d", name, r)
			}
			if n := g.Lookup(name); n != nil {
				return n
			}
			return g.Input(name, dt, shape)
		}
		outs = append(outs, build(g, in)...)
	}
	if err := g.Err(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	p, err := engine.Compile(g, be, outs, engine.CompileOptions{})
	if err != nil {
		return nil, err
	}
	c := &compiled{be: be, prog: p, outs: outs, probe: make([]byte, 4)}
	r := rand.New(rand.NewPCG(seed, 7))
	for _, n := range p.Leaves() {
		t, err := randomTensor(be, n.Meta(), r)
		if err != nil {
			c.release()
			return nil, fmt.Errorf("input %s: %w", n.Name(), err)
		}
		c.tensors = append(c.tensors, t)
		if err := p.Bind(n, t); err != nil {
			c.release()
			return nil, err
		}
	}
	return c, nil
}

// randomTensor uploads random data: uniform bytes for packed weights, values in [-0.5, 0.5) for
// floats (small enough that no exp overflows), small integers for ids.
func randomTensor(be engine.Backend, m engine.Meta, r *rand.Rand) (*engine.Tensor, error) {
	n := m.Shape.Numel()
	raw := make([]byte, m.Bytes())
	switch m.DType {
	case engine.U8:
		for i := 0; i < len(raw); i += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], r.Uint64())
			copy(raw[i:], w[:])
		}
	case engine.F32:
		for i := range n {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(r.Float32()-0.5))
		}
	case engine.I32:
		for i := range n {
			binary.LittleEndian.PutUint32(raw[4*i:], uint32(r.IntN(16)))
		}
	default:
		return nil, fmt.Errorf("no random data for %s", m.DType)
	}
	return engine.FromBytes(be, m.DType, m.Shape, raw)
}

// run executes the program once and waits for it: reading one word of the last output waits for
// the submission on every backend.
func (c *compiled) run() error {
	if err := c.prog.Run(); err != nil {
		return err
	}
	a, err := c.prog.Arg(c.outs[len(c.outs)-1])
	if err != nil {
		return err
	}
	return c.be.Read(a.Buf, 0, c.probe)
}

func (c *compiled) release() {
	c.prog.Release()
	for _, t := range c.tensors {
		t.Release()
	}
}

// timeRuns warms up, then times runs of c as rp says; it returns the wall-clock seconds of each
// timed run and, given a timer, the seconds the device measured for its kernels. between, when
// set, runs after each timed run, untimed here.
func timeRuns(c *compiled, rp Repeats, timer engine.GPUTimer, between func()) (wall, gpu []float64, err error) {
	for i := 0; i < max(rp.Warmup, 1); i++ {
		if err := c.run(); err != nil {
			return nil, nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	if timer != nil {
		if err := timer.SetGPUTiming(true); err != nil {
			return nil, nil, err
		}
		defer timer.SetGPUTiming(false)
	}
	start := time.Now()
	for len(wall) < max(rp.Min, 1) || (time.Since(start) < rp.Budget && len(wall) < rp.Max) {
		t0 := time.Now()
		if err := c.run(); err != nil {
			return nil, nil, err
		}
		wall = append(wall, time.Since(t0).Seconds())
		if timer != nil {
			d, err := timer.GPUTime()
			if err != nil {
				return nil, nil, err
			}
			gpu = append(gpu, d.Seconds())
		}
		if between != nil {
			between()
		}
	}
	return wall, gpu, nil
}

// maxColdReplicas bounds the copies of a kernel with cold inputs (a tiny one would need
// thousands to fill ColdBytes).
const maxColdReplicas = 4096

// measureCase measures c with s.Replicas copies a submission, or on the CPU, where c has cold
// inputs, with as many copies (each with its own cold inputs) as read s.ColdBytes. There a
// streaming read of s.ColdBytes of other memory runs after each timed run: read is its median
// rate (bytes/s), the same moments' memory bandwidth beside the kernel's; 0 elsewhere.
func measureCase(be engine.Backend, c Case, s Sizes) (wall Stats, gpu *Stats, read float64, err error) {
	replicas, cold := s.Replicas, []string(nil)
	var between func()
	var reads []float64
	if len(c.cold) > 0 && s.ColdBytes > 0 && be.Device().Backend == "cpu" && c.Bytes > 0 {
		replicas = max(replicas, min(maxColdReplicas, int(math.Ceil(float64(s.ColdBytes)/c.Bytes))))
		cold = c.cold
		buf, u := coldReadBuffer(s.ColdBytes), widestUnit()
		between = func() {
			// The CPU backend's workers spin for a millisecond after a job (gemm's pool): the read
			// waits until they park, so that it has the cores to itself as the kernel had.
			time.Sleep(3 * time.Millisecond)
			if r := ceiling.ReadPass(u, buf, ceiling.Threads()); r > 0 {
				reads = append(reads, r)
			}
		}
	}
	wall, gpu, err = measureCold(be, c.build, replicas, cold, s.Repeats, between)
	if len(reads) > 0 {
		if st, e := Summarize(reads); e == nil {
			read = st.Median
		}
	}
	return wall, gpu, read, err
}

// coldRead is the buffer of the reads between a cold kernel's runs, allocated once a process
// (bench runs one after another, so it is never read by two at once).
var coldRead struct {
	sync.Mutex
	buf []float32
}

// coldReadBuffer is a buffer of at least bytes, its pages faulted in (filled with nonzero data).
func coldReadBuffer(bytes int) []float32 {
	coldRead.Lock()
	defer coldRead.Unlock()
	if n := bytes / 4; len(coldRead.buf) < n {
		coldRead.buf = make([]float32, n)
		for i := range coldRead.buf {
			coldRead.buf[i] = float32(i&1023) * 0x1p-10
		}
	}
	return coldRead.buf[:bytes/4]
}

// measure compiles build with replicas copies, times it and returns per-replica statistics of
// the wall clock and, on a device with timestamps (engine.GPUTimer), of the device's kernel time.
func measure(be engine.Backend, build func(g *engine.Graph, in leafFunc) []*engine.Node, replicas int, rp Repeats) (wall Stats, gpu *Stats, err error) {
	return measureCold(be, build, replicas, nil, rp, nil)
}

// measureCold is measure with each replica's own copy of the inputs named in cold, and between
// (when set) run after each timed run.
func measureCold(be engine.Backend, build func(g *engine.Graph, in leafFunc) []*engine.Node, replicas int, cold []string, rp Repeats, between func()) (wall Stats, gpu *Stats, err error) {
	c, err := compileCase(be, build, replicas, cold, 1)
	if err != nil {
		return Stats{}, nil, err
	}
	defer c.release()
	timer, _ := be.(engine.GPUTimer)
	if !be.Caps().Timestamps {
		timer = nil
	}
	ws, gs, err := timeRuns(c, rp, timer, between)
	if err != nil {
		return Stats{}, nil, err
	}
	for i := range ws {
		ws[i] /= float64(max(replicas, 1))
	}
	if wall, err = Summarize(ws); err != nil {
		return Stats{}, nil, err
	}
	if len(gs) > 0 {
		for i := range gs {
			gs[i] /= float64(max(replicas, 1))
		}
		g, err := Summarize(gs)
		if err != nil {
			return Stats{}, nil, fmt.Errorf("gpu time: %w", err)
		}
		gpu = &g
	}
	return wall, gpu, nil
}
