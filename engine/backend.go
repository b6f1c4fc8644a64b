package engine

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Buffer is a block of device memory owned by one Backend.
type Buffer interface {
	// Bytes is the buffer's capacity in bytes; a value may use a prefix of it.
	Bytes() int64
}

// Arg is one operand of a kernel launch: a buffer and the value it holds.
type Arg struct {
	Buf  Buffer
	Meta Meta
}

// Launch is one kernel call: what a GPU runs as one dispatch (or a few).
type Launch struct {
	Op  Op
	In  []Arg
	Out []Arg
}

// DeviceInfo describes one device a backend can run on, as `lathe devices --json` prints it.
type DeviceInfo struct {
	Backend string `json:"backend"`
	Index   int    `json:"index"`
	Name    string `json:"name"`
	Vendor  string `json:"vendor"`
	// Type is "discrete", "integrated", "virtual", "cpu" or "other".
	Type string `json:"type"`
	// API is the native API under the backend (Vulkan, Metal, D3D12) or "go" for the CPU.
	API         string            `json:"api,omitempty"`
	Driver      string            `json:"driver,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Cores       int               `json:"cores,omitempty"`
	Features    []string          `json:"features,omitempty"`
	Limits      map[string]uint64 `json:"limits,omitempty"`
	// Caps are what the device offers before it is opened (features and limits; no tiles, and
	// no subgroup size, which needs a kernel to measure), when the provider knows them.
	Caps *Caps `json:"caps,omitempty"`
}

// F16Arithmetic is implemented by backends whose kernels have f16-arithmetic variants (the tiled
// matmul staging its tiles in f16 and accumulating in f32). SetF16Arithmetic(true) makes programs
// prepared after it run them; it is an error on a device without Caps.ShaderF16. Mixed-precision
// training (train.Options.Precision f16) turns it on; results then differ from the f32 kernels by
// f16 rounding of the matmul operands.
type F16Arithmetic interface {
	SetF16Arithmetic(on bool) error
}

// Caps are what a backend sets from its device to decide which kernel variants it runs, and what
// callers may plan with. Variants are chosen from these, never by vendor name.
type Caps struct {
	// Timestamps: the device can time its kernels.
	Timestamps bool `json:"timestamps"`
	// ShaderF16: kernels may use f16 storage and arithmetic.
	ShaderF16 bool `json:"shader_f16"`
	// Subgroups: kernels may use subgroup operations (subgroupAdd and the like).
	Subgroups bool `json:"subgroups"`
	// SubgroupSize is the subgroup size compute kernels run with, as measured on the opened
	// device (0: no subgroups, or not opened).
	SubgroupSize int `json:"subgroup_size,omitempty"`
	// Weights16: the kernels of MatMul16, Embedding16, LoRA and LoRABackward read frozen f16 and
	// bf16 weights. Without it, Compile decomposes every op that has a 16-bit operand (other than
	// Cast) into a Cast to f32 and the f32 op.
	Weights16 bool `json:"weights16"`
	// CheapPrograms: compiling a program costs little beside running it (no pipelines or device
	// buffers to create), so a caller may compile one for every shape it meets instead of padding
	// shapes so that they share programs (padded rows cost as much as real ones).
	CheapPrograms bool `json:"cheap_programs,omitempty"`
	// MaxBufferBytes is the largest buffer a kernel can use.
	MaxBufferBytes int64 `json:"max_buffer_bytes"`
	// Tiles are the block sizes the backend's kernels cut work into; the backend picks its
	// variants by them and the conformance suite derives its shapes from them.
	Tiles Tiles `json:"tiles,omitzero"`
}

// Tiles are the block sizes a backend's kernels divide their work into, and the sizes at which
// they switch variants. The conformance suite (engine/enginetest) derives its shapes from them:
// below, at and above a multiple, and odd, so that every edge of every tile is exercised.
type Tiles struct {
	// MatMul is the M, N and K block of the matrix product.
	MatMul [3]int `json:"matmul"`
	// Group is the number of elements a 1D kernel's workgroup (or task) covers.
	Group int `json:"group"`
	// Reduce is the largest full reduction (Sum, SumSquares) done in one pass; larger ones sum
	// partials in a second pass.
	Reduce int `json:"reduce"`
	// RowChunk is the rows a gathering kernel (GatherLoRA, EmbeddingBackward) handles together.
	RowChunk int `json:"row_chunk"`
	// AttentionQ and AttentionKV are attention's query block and key tile.
	AttentionQ  int `json:"attention_q"`
	AttentionKV int `json:"attention_kv"`
	// DecodeQueries is the most queries a sequence for which attention runs its decoding variant.
	DecodeQueries int `json:"decode_queries"`
}

// Backend runs kernels on one device. Every backend computes the functions engine/cpu computes: it
// implements at least the core op set (IsCore) and passes engine/enginetest, the whole contract. It
// says at graph-compile time, through Supports, which ops it lacks; Compile rewrites the fast paths
// it refuses into core ops. A launch with a bad index (a cache row, a token id) is an error from Run
// or, on a backend that runs asynchronously, from the next Read.
type Backend interface {
	// Device describes the device this backend runs on.
	Device() DeviceInfo
	// Caps reports what the device offers.
	Caps() Caps
	// Supports returns nil when the backend has a kernel for op with these operands, else an error
	// saying what is missing.
	Supports(op Op, in []Meta) error
	// Alloc returns a buffer of at least n bytes.
	Alloc(n int64) (Buffer, error)
	// Free returns a buffer to the backend; the buffer must not be used afterwards.
	Free(Buffer)
	// Write copies src into the buffer at byte offset off.
	Write(dst Buffer, off int64, src []byte) error
	// Read copies from the buffer at byte offset off into dst, waiting for pending work.
	Read(src Buffer, off int64, dst []byte) error
	// Run executes the launches in order as one submission.
	Run(launches []Launch) error
	// Close releases the device.
	Close() error
}

// GPUTimer is implemented by backends whose device can time its own work (Caps.Timestamps):
// kernel time measured by the device, without the submission and wait a wall clock includes.
type GPUTimer interface {
	// SetGPUTiming turns timing on or off; while on, the backend times every submission's kernels.
	SetGPUTiming(on bool) error
	// GPUTime returns the device time of the kernels submitted since the last call (or since
	// timing was turned on), waiting for them.
	GPUTime() (time.Duration, error)
}

// CheckLaunch checks a launch against its op's own shape rules, as every backend must before its
// kernels index operands by position: the op accepts the operands, and the launch has the outputs
// the op infers (dtype and element count).
func CheckLaunch(l Launch) error {
	if l.Op == nil {
		return fmt.Errorf("launch without an op")
	}
	metas := make([]Meta, len(l.In))
	for i, a := range l.In {
		metas[i] = a.Meta
	}
	want, err := l.Op.Infer(metas)
	if err != nil {
		return err
	}
	if len(want) != len(l.Out) {
		return fmt.Errorf("want %d outputs, got %d", len(want), len(l.Out))
	}
	for i, m := range want {
		if got := l.Out[i].Meta; got.DType != m.DType || got.Shape.Numel() != m.Shape.Numel() {
			return fmt.Errorf("output %d is %s, want %s", i, got, m)
		}
	}
	return nil
}

// Executable is a launch list a backend has prepared once: kernels chosen, launches validated,
// pipelines, bindings and parameters resolved. Run submits it again as one submission, with no
// per-launch work on the host; the buffers it was prepared over must stay allocated until Release.
type Executable interface {
	// Run submits the prepared launches in order as one submission.
	Run() error
	// Release frees what Prepare created (bindings, scratch buffers); not the operands' buffers.
	Release()
}

// Preparer is implemented by backends that can prepare a launch list once and resubmit it (a
// recorded command list, ggml's graph plan). Prepare validates every launch; the Executable's Run
// does not validate again. Backends without it run through Prepare's default (Run each time).
type Preparer interface {
	Prepare(launches []Launch) (Executable, error)
}

// Prepare prepares launches on b: b's own Prepare when it has one, else an Executable that hands
// the same launch list to b.Run on every Run.
func Prepare(b Backend, launches []Launch) (Executable, error) {
	if p, ok := b.(Preparer); ok {
		return p.Prepare(launches)
	}
	return runEach{b, launches}, nil
}

type runEach struct {
	b        Backend
	launches []Launch
}

func (r runEach) Run() error { return r.b.Run(r.launches) }
func (r runEach) Release()   {}

// Provider discovers the devices of one kind of backend and opens them.
type Provider interface {
	// Name is the backend's name in device specs: "cpu", "webgpu", "vulkan".
	Name() string
	// Devices lists the devices found; none is not an error.
	Devices() ([]DeviceInfo, error)
	// Open opens the device with the given index from Devices.
	Open(index int) (Backend, error)
}

// DeviceSpec is a parsed --device value: "auto", "cpu", "webgpu", "webgpu:1", "vulkan:0".
type DeviceSpec struct {
	Backend string // "" means auto
	Index   int    // -1 means the best device of that backend
}

// ParseDeviceSpec parses a --device value.
func ParseDeviceSpec(s string) (DeviceSpec, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" || s == "auto" {
		return DeviceSpec{Index: -1}, nil
	}
	name, idx, hasIdx := strings.Cut(s, ":")
	spec := DeviceSpec{Backend: name, Index: -1}
	if hasIdx {
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 {
			return DeviceSpec{}, fmt.Errorf("device %q: index must be a non-negative integer", s)
		}
		spec.Index = i
	}
	return spec, nil
}

// Rank orders devices for automatic selection: discrete GPUs first, then integrated, virtual and
// other GPUs, then the native CPU backend, and last a GPU API running on the CPU (lavapipe,
// llvmpipe, SwiftShader), which computes the same results 20-60x slower than the CPU backend.
func Rank(d DeviceInfo) int {
	switch d.Type {
	case "discrete":
		return 0
	case "integrated":
		return 1
	case "virtual", "other":
		return 2
	}
	if d.Backend == "cpu" {
		return 3
	}
	return 4
}

// ErrNoDevice is returned by Select when no device matches the spec.
var ErrNoDevice = errors.New("no device found")

// Select opens the device a spec names. "auto" takes the best device over all providers: by type
// (discrete, integrated, other, cpu), then by the providers' order, then by index.
func Select(spec DeviceSpec, providers []Provider) (Backend, error) {
	type cand struct {
		p    Provider
		info DeviceInfo
		prio int
	}
	var cands []cand
	var errs []error
	for pi, p := range providers {
		if spec.Backend != "" && p.Name() != spec.Backend {
			continue
		}
		devs, err := p.Devices()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
			continue
		}
		for _, d := range devs {
			if spec.Index >= 0 && d.Index != spec.Index {
				continue
			}
			cands = append(cands, cand{p, d, Rank(d)*1000 + pi})
		}
	}
	if len(cands) == 0 {
		name := spec.Backend
		if name == "" {
			name = "auto"
		}
		if spec.Index >= 0 {
			name += ":" + strconv.Itoa(spec.Index)
		}
		return nil, fmt.Errorf("device %s: %w", name, errors.Join(append([]error{ErrNoDevice}, errs...)...))
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].prio < cands[j].prio })
	for _, c := range cands {
		b, err := c.p.Open(c.info.Index)
		if err == nil {
			return b, nil
		}
		errs = append(errs, fmt.Errorf("open %s:%d: %w", c.p.Name(), c.info.Index, err))
		if spec.Backend != "" && spec.Index >= 0 {
			break
		}
	}
	return nil, errors.Join(errs...)
}
