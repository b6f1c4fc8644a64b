package vulkan

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/lathe-ml/lathe/engine/gpuplan"
	"github.com/lathe-ml/lathe/shaders"
)

// The GLSL tier (shaders/glsl, compiled to the embedded shaders/spv): hand-written kernels that
// replace some of gpuplan's WGSL kernels where the device's queried properties allow, never by
// vendor. Each takes the same bindings and parameter block as the WGSL kernel it replaces, so a
// plan made for WebGPU runs unchanged; only the module, its specialisation constants and the grid
// differ. The rest of the kernels stay naga's translation of the WGSL.
//
//	matmul, 4-bit B  →  qgemm_coopmat_nv (khr): f16 tiles on cooperative matrices, f32 accumulate,
//	                    where the device has a 16×16×16 f16·f16+f32 subgroup shape, the feature and
//	                    the Vulkan memory model; else ↓
//	matmul           →  gemm: register tiles whose sizes are specialisation constants chosen from
//	                    the device's invocation and shared-memory limits
//	qgemv            →  qgemv_sg: a subgroup an output, reduced across K with subgroupAdd, where
//	                    compute kernels have subgroup arithmetic
//
// gemm_f16 (f16 operands, f32 accumulation) is compiled and run by the tests where the device has
// shaderFloat16 and 16-bit storage; no engine op plans an f16 product yet.

// glslTier is what the GLSL tier's choices read of a device.
type glslTier struct {
	// subgroupSize is the compute subgroup size where subgroup arithmetic is available, else 0.
	subgroupSize int
	// f16: shaderFloat16 and storageBuffer16BitAccess (enabled at device creation).
	f16 bool
	// coop is the cooperative-matrix module kind ("nv" or "khr") the device runs, "" for none: a
	// 16×16×16 f16·f16+f32 subgroup-scope shape, the feature, the memory model, an embedded module.
	coop string
	// maxInvocations and sharedBytes are the workgroup limits.
	maxInvocations int
	sharedBytes    int
	maxGroups      uint32
	// tiles, when set (tests), replaces the GEMM tiles chosen from the limits: BM, BN, BK, TM, TN.
	tiles [5]int
}

// Vulkan constants the choice reads.
const (
	componentF16  = 0
	componentF32  = 1
	scopeSubgroup = 3
	// coopmatShared is the shared memory of qgemm_coopmat (f16 A and B tiles, the f32 C tile,
	// the code table).
	coopmatShared = 64*40*2 + 32*72*2 + 64*68*4 + 16*4
)

// glslTier derives the tier from the device's queried properties.
func (d *device) glslTier() glslTier {
	t := glslTier{maxInvocations: int(d.limits.MaxComputeWorkGroupInvocations), sharedBytes: int(d.limits.MaxComputeSharedMemorySize),
		maxGroups: d.limits.MaxComputeWorkGroupCount[0]}
	if d.subgroups() {
		t.subgroupSize = d.ext.subgroupSize
	}
	t.f16 = d.f16Enable()
	t.coop = d.coopKind()
	return t
}

// f16Enable reports whether the device gets shaderFloat16 and 16-bit storage enabled (Vulkan 1.1
// instance: shaderFloat16 comes with VK_KHR_shader_float16_int8).
func (d *device) f16Enable() bool {
	return d.ext.f16 && d.ext.storage16 && d.exts["VK_KHR_shader_float16_int8"]
}

// coopKind is "nv" or "khr" where the device runs the cooperative-matrix GEMM, else "".
func (d *device) coopKind() string {
	if !d.subgroups() || !d.f16Enable() || !d.ext.coopFeature || !d.ext.memoryModel || !d.exts["VK_KHR_vulkan_memory_model"] {
		return ""
	}
	if 4*d.ext.subgroupSize > int(d.limits.MaxComputeWorkGroupInvocations) || coopmatShared > int(d.limits.MaxComputeSharedMemorySize) {
		return ""
	}
	for _, s := range d.ext.coop {
		if s.M != 16 || s.N != 16 || s.K != 16 || s.A != componentF16 || s.B != componentF16 || s.C != componentF32 || s.Scope != scopeSubgroup {
			continue
		}
		kind, ext := "nv", "VK_NV_cooperative_matrix"
		if s.KHR {
			kind, ext = "khr", "VK_KHR_cooperative_matrix"
		}
		if _, err := shaders.SPIRV("qgemm_coopmat_" + kind); err != nil || !d.exts[ext] {
			return "" // the module is not built (KHR: glslang too old) or the extension is not listed
		}
		return kind
	}
	return ""
}

// gemmTiles are the register-tiled GEMM's BM, BN, BK, TM, TN: 4×4 outputs an invocation, as many
// invocations as the device allows up to 256 (a square of them), and BK as deep as keeps both
// tiles within half the shared memory, at most 32.
func (t glslTier) gemmTiles() [5]int {
	if t.tiles != [5]int{} {
		return t.tiles
	}
	side := 16
	for side > 1 && side*side > t.maxInvocations {
		side /= 2
	}
	bm, bn, bk := 4*side, 4*side, 32
	for bk > 8 && 4*(bm+bn)*bk+64 > t.sharedBytes/2 {
		bk /= 2
	}
	return [5]int{bm, bn, bk, 4, 4}
}

// specConst is one specialisation constant: its constant_id and 32-bit value.
type specConst struct{ id, value uint32 }

// glslChoice is a planned dispatch run on a GLSL module.
type glslChoice struct {
	module string
	spec   []specConst
	grid   [3]uint32
}

// key identifies the pipeline.
func (c glslChoice) key() string {
	var sb strings.Builder
	sb.WriteString("glsl:" + c.module)
	for _, s := range c.spec {
		fmt.Fprintf(&sb, "|%d=%d", s.id, s.value)
	}
	return sb.String()
}

// specIDs and specValues are the specialisation constants' ids and 32-bit values, in spec order.
func (c glslChoice) specIDs() []uint32 {
	out := make([]uint32, len(c.spec))
	for i, s := range c.spec {
		out[i] = s.id
	}
	return out
}

func (c glslChoice) specValues() []uint32 {
	out := make([]uint32, len(c.spec))
	for i, s := range c.spec {
		out[i] = s.value
	}
	return out
}

// flags reads a planned command's boolean constants.
func flags(consts []shaders.Const) map[string]bool {
	f := map[string]bool{}
	for _, c := range consts {
		if c.Value == "true" || c.Value == "false" {
			f[c.Name] = c.Value == "true"
		}
	}
	return f
}

// constValue is a planned command's constant named name, "" when it has none.
func constValue(consts []shaders.Const, name string) string {
	for _, c := range consts {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// b32 is a boolean specialisation constant's value.
func b32(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}

// choose returns the GLSL module that runs a planned command, or false to run its WGSL.
func (t glslTier) choose(c gpuplan.Cmd) (glslChoice, bool, error) {
	if c.Kernel == "" || len(c.Params) < 8 {
		return glslChoice{}, false, nil
	}
	m := int(binary.LittleEndian.Uint32(c.Params[0:]))
	n := int(binary.LittleEndian.Uint32(c.Params[4:]))
	f := flags(c.Consts)
	var ch glslChoice
	var groups int
	switch c.Kernel {
	case "matmul":
		// The GLSL kernels read f32 (or 4-bit) weights in f32 arithmetic: a 16-bit weight (BH) or
		// the f16-arithmetic variant runs the WGSL kernel that has those forms.
		if f[shaders.F16Const] || constValue(c.Consts, "BH") != "0u" && constValue(c.Consts, "BH") != "" {
			return glslChoice{}, false, nil
		}
		common := []specConst{{6, b32(f["TA"])}, {7, b32(f["TB"])}, {9, b32(f["EPI"])}, {10, b32(f["EPIT"])}, {11, b32(f["ACC"])}}
		if f["BQ"] && t.coop != "" {
			ch = glslChoice{module: "qgemm_coopmat_" + t.coop, spec: append([]specConst{{0, uint32(4 * t.subgroupSize)}}, common...)}
			groups = gpuplan.CeilDiv(m, 64) * gpuplan.CeilDiv(n, 64)
			break
		}
		tl := t.gemmTiles()
		wg := (tl[0] / tl[3]) * (tl[1] / tl[4])
		ch = glslChoice{module: "gemm", spec: append([]specConst{{0, uint32(wg)}, {1, uint32(tl[0])}, {2, uint32(tl[1])}, {3, uint32(tl[2])},
			{4, uint32(tl[3])}, {5, uint32(tl[4])}, {8, b32(f["BQ"])}}, common...)}
		groups = gpuplan.CeilDiv(m, tl[0]) * gpuplan.CeilDiv(n, tl[1])
	case "qgemv":
		if t.subgroupSize == 0 {
			return glslChoice{}, false, nil
		}
		wg := min(128, t.maxInvocations)
		wg -= wg % t.subgroupSize
		if wg == 0 {
			return glslChoice{}, false, nil
		}
		rows := wg / t.subgroupSize
		ch = glslChoice{module: "qgemv_sg", spec: []specConst{{0, uint32(wg)}, {1, uint32(rows)}, {2, b32(f["EPI"])}}}
		groups = gpuplan.CeilDiv(n, rows)
	default:
		return glslChoice{}, false, nil
	}
	sort.Slice(ch.spec, func(i, j int) bool { return ch.spec[i].id < ch.spec[j].id })
	maxG := t.maxGroups
	if maxG == 0 {
		maxG = 65535
	}
	grid, err := gpuplan.GroupsFor(groups, maxG)
	if err != nil {
		return glslChoice{}, false, err
	}
	ch.grid = grid
	return ch, true, nil
}
