// Package gpuplan decides, for every engine op, how a GPU backend runs it: which kernel (and which
// variant of it), the grid of workgroups, the specialisation constants, the parameter (uniform)
// block and the order of the buffers each dispatch binds, and the scratch buffers it needs. It
// knows no graphics API: a backend (engine/webgpu, engine/vulkan) turns a Plan into its own
// buffers, bindings and submissions, so both run the same kernels the same way and differ only in
// how they allocate, bind and submit (tinygrad's allocator + program split).
//
// Adding an op to the GPU backends is one case in Launch and one in Supports, plus its kernel.
package gpuplan

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// Kernel shape constants. WG is the invocation count of the 1D kernels; the matmul tile is BM×BN
// outputs over BK-deep slices of k, TM×TN per invocation (256 invocations).
const (
	WG       = 256
	MaxHead  = 256 // largest head dim of attention (private accumulators) and of RoPE
	TileM    = 64
	TileN    = 64
	TileK    = 16
	ThreadsM = 4
	ThreadsN = 4
	// ReducePerGroup is the most elements a full reduction sums in one workgroup; beyond it a
	// second pass pays off.
	ReducePerGroup = 16 * WG
	// GatherRows is the rows of a batch GatherLoRA handles together.
	GatherRows = 8
	// AttentionQueries is the query block of the tiled attention kernels (see attention).
	AttentionQueries = 64
	// DecodeQueries is the most queries for which attention runs the per-query kernels (decode, rows).
	DecodeQueries = 8
)

// Device is what planning needs to know of a device: its limits and which kernel variants it runs.
type Device struct {
	// MaxGroups is the most workgroups per grid dimension (0: 65535).
	MaxGroups uint32
	// WorkgroupStorage is the bytes of workgroup memory a kernel may declare.
	WorkgroupStorage int
	// MaxBinding is the largest storage buffer binding in bytes.
	MaxBinding int64
	// Subgroups selects the subgroup variants of the kernels that have one.
	Subgroups bool
	// PerQueryRows makes cached attention always run the per-query kernel (benchmarks compare).
	PerQueryRows bool
	// F16 selects the f16-arithmetic variants (shaders.HasF16Variant: the tiled matmul stages its
	// tiles in f16 and accumulates in f32); only for a device with engine.Caps.ShaderF16.
	F16 bool
}

// Tiles are the block sizes the plans cut work into on d (engine.Caps.Tiles).
func (d Device) Tiles() engine.Tiles {
	return engine.Tiles{MatMul: [3]int{TileM, TileN, TileK}, Group: WG, Reduce: ReducePerGroup, RowChunk: GatherRows,
		AttentionQ: AttentionQueries, AttentionKV: d.keyTile(64, AttentionQueries), DecodeQueries: DecodeQueries}
}

func (d Device) maxGroups() uint32 {
	if d.MaxGroups > 0 {
		return d.MaxGroups
	}
	return 65535
}

// Kind says what a Ref binds.
type Kind uint8

// The kinds of buffer a dispatch binds.
const (
	None  Kind = iota // unset
	In                // the launch's operand In[Index]
	Out               // the launch's output Out[Index]
	Temp              // the plan's scratch buffer Temps[Index]
	Fault             // the backend's device-side fault flag (one u32; kernels raise it on a bad index)
)

// Ref is one buffer a dispatch binds, read-only or read-write. An operand is bound with exactly
// its bytes rounded up to whole words (BindSize).
type Ref struct {
	Kind  Kind
	Index int
	RW    bool
}

// Cmd is one dispatch of Kernel, or a buffer-to-buffer copy when Kernel is empty.
type Cmd struct {
	Kernel string
	// Consts are the kernel's specialisation constants (shaders.Compose).
	Consts []shaders.Const
	// Subgroups selects the kernel's subgroup variant (shaders.ComposeVariant).
	Subgroups bool
	Grid      [3]uint32
	// Params is the uniform block, bound after the storage buffers; nil when the kernel has none.
	Params []byte
	// Binds are the storage buffers in binding order (binding i is Binds[i]).
	Binds []Ref
	// A copy of CopyBytes (whole words) from the start of Src to the start of Dst.
	Src, Dst  Ref
	CopyBytes int64
}

// Plan is the commands of one launch and the scratch buffers they use (bytes each).
type Plan struct {
	Cmds  []Cmd
	Temps []int64
}

// BindSize is the bytes a binding of an n-byte operand covers: whole words, at least one.
func BindSize(n int64) int64 {
	if n < 4 {
		return 4
	}
	return (n + 3) &^ 3
}

// CeilDiv is ⌈a/b⌉ for positive b.
func CeilDiv(a, b int) int { return (a + b - 1) / b }

// GroupsFor folds a count of workgroups into a 2D grid (x·y ≥ groups, x ≤ maxDim). Kernels
// recover the linear workgroup index as y·nx + x and skip the surplus of the last row.
func GroupsFor(groups int, maxDim uint32) ([3]uint32, error) {
	if groups <= 0 {
		return [3]uint32{0, 1, 1}, nil
	}
	if uint64(groups) <= uint64(maxDim) {
		return [3]uint32{uint32(groups), 1, 1}, nil
	}
	y := (uint64(groups) + uint64(maxDim) - 1) / uint64(maxDim)
	if y > uint64(maxDim) {
		return [3]uint32{}, fmt.Errorf("%d workgroups exceed the device's %d×%d grid", groups, maxDim, maxDim)
	}
	x := (uint64(groups) + y - 1) / y
	return [3]uint32{uint32(x), uint32(y), 1}, nil
}

// Params packs a kernel's uniform block: scalars of 4 bytes in declaration order, then optional
// vec4 arrays (16-byte aligned, as WGSL's uniform layout wants).
type Params struct{ w []uint32 }

// U appends unsigned scalars.
func (p *Params) U(v ...int) *Params {
	for _, x := range v {
		p.w = append(p.w, uint32(x))
	}
	return p
}

// I appends signed scalars.
func (p *Params) I(v ...int32) *Params {
	for _, x := range v {
		p.w = append(p.w, uint32(x))
	}
	return p
}

// F appends float scalars.
func (p *Params) F(v ...float32) *Params {
	for _, x := range v {
		p.w = append(p.w, math.Float32bits(x))
	}
	return p
}

// Vec4s pads to a 16-byte boundary and appends n floats (zero-filled past len(v)), n a multiple of 4.
func (p *Params) Vec4s(v []float32, n int) *Params {
	for len(p.w)%4 != 0 {
		p.w = append(p.w, 0)
	}
	for k := 0; k < n; k++ {
		var x float32
		if k < len(v) {
			x = v[k]
		}
		p.w = append(p.w, math.Float32bits(x))
	}
	return p
}

// Bytes is the block, padded to 16 bytes (uniform bindings are sized in 16-byte units).
func (p *Params) Bytes() []byte {
	for len(p.w)%4 != 0 {
		p.w = append(p.w, 0)
	}
	out := make([]byte, 4*len(p.w))
	for k, x := range p.w {
		binary.LittleEndian.PutUint32(out[4*k:], x)
	}
	return out
}

// planner builds the plan of one launch.
type planner struct {
	d Device
	l engine.Launch
	p *Plan
}

func (q *planner) items(n, per int) ([3]uint32, error) {
	return GroupsFor(CeilDiv(n, per), q.d.maxGroups())
}

func (q *planner) groups(n int) ([3]uint32, error) { return GroupsFor(n, q.d.maxGroups()) }

// temp is a new scratch buffer of n bytes bound read-write.
func (q *planner) temp(n int64) Ref {
	q.p.Temps = append(q.p.Temps, n)
	return Ref{Kind: Temp, Index: len(q.p.Temps) - 1, RW: true}
}

// dummy is a small read-only binding for kernel inputs a variant does not read.
func (q *planner) dummy() Ref {
	t := q.temp(16)
	t.RW = false
	return t
}

func (q *planner) dispatch(name string, consts []shaders.Const, grid [3]uint32, p *Params, binds ...Ref) {
	if grid[0] == 0 || grid[1] == 0 || grid[2] == 0 {
		return // nothing to do
	}
	var pb []byte
	if p != nil {
		pb = p.Bytes()
	}
	sg := q.d.Subgroups && shaders.HasSubgroupVariant(name)
	q.p.Cmds = append(q.p.Cmds, Cmd{Kernel: name, Consts: consts, Subgroups: sg, Grid: grid, Params: pb, Binds: binds})
}

// keyTile is how many keys (with their values) of head dim hd fit the workgroup memory left after
// the reduction scratch of wg floats, at most 64.
func (d Device) keyTile(hd, wg int) int {
	budget := d.WorkgroupStorage - 4*wg
	kt := budget / (2 * 4 * hd)
	return max(1, min(kt, 64))
}

func c(name string, v any) shaders.Const {
	switch x := v.(type) {
	case bool:
		return shaders.Const{Name: name, Value: fmt.Sprint(x)}
	case int:
		return shaders.Const{Name: name, Value: fmt.Sprintf("%du", x)}
	}
	return shaders.Const{Name: name, Value: fmt.Sprint(v)}
}

func metas(args []engine.Arg) []engine.Meta {
	m := make([]engine.Meta, len(args))
	for i, a := range args {
		m[i] = a.Meta
	}
	return m
}
