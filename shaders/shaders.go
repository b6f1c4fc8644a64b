// Package shaders holds lathe's GPU kernels: WGSL for the portable tier under wgsl/ (WebGPU, and
// Vulkan through naga), and the Vulkan performance tier's GLSL under glsl/ with its SPIR-V, compiled
// by go generate, under spv/ (glsl.go).
//
// A WGSL kernel file is not a complete module: the backend prepends a header of specialisation
// constants (`const WG: u32 = 256u;` and the like, chosen from device limits) and the shared helpers
// of wgsl/common.wgsl, then compiles the result. This keeps every variant of a kernel one file, with
// its tile sizes and flags as plain WGSL constants that the compiler folds.
package shaders

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed wgsl/*.wgsl glsl/*.comp glsl/*.glsl spv/*.spv
var files embed.FS

// FS returns the embedded shader tree (wgsl/*.wgsl, glsl/*, spv/*.spv), read-only.
func FS() fs.FS { return files }

// Common is the name of the WGSL file every kernel is compiled with.
const Common = "common"

// WGSL returns the source of wgsl/<name>.wgsl.
func WGSL(name string) (string, error) {
	b, err := files.ReadFile("wgsl/" + name + ".wgsl")
	if err != nil {
		return "", fmt.Errorf("shaders: no WGSL kernel %q", name)
	}
	return string(b), nil
}

// WGSLNames lists the WGSL kernels (file names without the extension), sorted.
func WGSLNames() []string {
	ents, _ := files.ReadDir("wgsl")
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".wgsl"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Const is one specialisation constant of a kernel.
type Const struct {
	Name string
	// Value is a WGSL literal: "64u", "1.5", "true".
	Value string
}

// SubgroupsEnable is the directive a kernel with a line "//! enable subgroups" is compiled with.
// Naga (wgpu-native v29) does not implement WGSL's `enable subgroups;` yet: the backend requests
// wgpu's native subgroup feature instead, under which the subgroup builtins need no directive.
// When naga implements it, this line becomes "enable subgroups;" and nothing else changes.
const SubgroupsEnable = ""

// F16Enable is the directive a kernel with a line "//! enable f16" is compiled with.
const F16Enable = "enable f16;"

// Enables lists the directives a kernel's source asks for ("//! enable subgroups", "//! enable
// f16"): the device features it needs.
func Enables(body string) (subgroups, f16 bool) {
	return strings.Contains(body, "//! enable subgroups\n"), strings.Contains(body, "//! enable f16\n")
}

// F16Const is the constant that selects the f16-arithmetic variant of a kernel marked "//! f16"
// (HasF16Variant): with the value true the module is composed with `enable f16;` and common.wgsl's
// "f16" section (alias ST = f16: tiles staged in f16), otherwise with its "f32" section (ST = f32),
// so one kernel file holds both and the device's pipeline cache keys them by the constant.
const F16Const = "F16"

// HasF16Variant reports whether a kernel has an f16-arithmetic variant: its source has the line
// "//! f16" and its staging type is the alias ST.
func HasF16Variant(name string) bool {
	body, err := WGSL(name)
	return err == nil && strings.Contains(body, "//! f16\n")
}

// Compose returns the full WGSL module for a kernel: its enable directives, the constants, then
// common.wgsl, then the kernel. common.wgsl's sections ("//! section NAME" to "//! end") are
// helpers that read a storage buffer the kernel declares; they are included only in kernels with
// a line "//! use NAME". The workgroup reductions (block_sum, block_max) are the "tree" section.
func Compose(name string, consts []Const) (string, error) {
	return ComposeVariant(name, consts, false)
}

// HasSubgroupVariant reports whether a kernel has a subgroup variant: its source has the line
// "//! subgroups" (its workgroup reductions may run on subgroup operations).
func HasSubgroupVariant(name string) bool {
	body, err := WGSL(name)
	return err == nil && strings.Contains(body, "//! subgroups\n")
}

// sgParams are the entry point builtins the subgroup variant adds to a kernel's main; sgInit
// hands them to common.wgsl's subgroup reductions.
const (
	sgParams = ", @builtin(subgroup_invocation_id) sg_lane_in: u32, @builtin(subgroup_id) sg_id_in: u32, @builtin(num_subgroups) sg_n_in: u32, @builtin(subgroup_size) sg_size_in: u32"
	sgInit   = "\n    sg_lane = sg_lane_in;\n    sg_id = sg_id_in;\n    sg_n = sg_n_in;\n    sg_size = sg_size_in;"
)

// ComposeVariant is Compose, or with subgroups the kernel's subgroup variant: common.wgsl's
// "subgroups" section replaces the "tree" section (block_sum and block_max on subgroup
// operations), and main gets the subgroup builtins. Only kernels marked "//! subgroups" have one.
func ComposeVariant(name string, consts []Const, subgroups bool) (string, error) {
	src, err := WGSL(Common)
	if err != nil {
		return "", err
	}
	body, err := WGSL(name)
	if err != nil {
		return "", err
	}
	// The staging type of a kernel with an f16 variant: common.wgsl's "f16" or "f32" section.
	sel, f16 := "", false
	if strings.Contains(body, "//! f16\n") {
		sel = "//! use f32\n"
		for _, c := range consts {
			if c.Name == F16Const && c.Value == "true" {
				sel, f16 = "//! use f16\n", true
			}
		}
	}
	uses := body + sel + "//! use tree\n"
	if subgroups {
		if !strings.Contains(body, "//! subgroups\n") {
			return "", fmt.Errorf("shaders: %s has no subgroup variant", name)
		}
		if body, err = addSubgroupBuiltins(body); err != nil {
			return "", fmt.Errorf("shaders: %s: %w", name, err)
		}
		uses = body + sel + "//! use subgroups\n"
	}
	common, err := sections(src, uses)
	if err != nil {
		return "", fmt.Errorf("shaders: %s: %w", name, err)
	}
	var sb strings.Builder
	// Directives come before every declaration.
	sub, enableF16 := Enables(body)
	if (sub || subgroups) && SubgroupsEnable != "" {
		sb.WriteString(SubgroupsEnable + "\n")
	}
	if enableF16 || f16 {
		sb.WriteString(F16Enable + "\n")
	}
	for _, c := range consts {
		ty := "u32"
		switch {
		case c.Value == "true" || c.Value == "false":
			ty = "bool"
		case strings.HasSuffix(c.Value, "i"):
			ty = "i32"
		case strings.ContainsAny(c.Value, ".e") || strings.HasSuffix(c.Value, "f"):
			ty = "f32"
		}
		fmt.Fprintf(&sb, "const %s: %s = %s;\n", c.Name, ty, c.Value)
	}
	sb.WriteString(common)
	sb.WriteString("\n")
	sb.WriteString(body)
	return sb.String(), nil
}

// addSubgroupBuiltins appends sgParams to the parameters of the kernel's `fn main(` and puts
// sgInit first in its body.
func addSubgroupBuiltins(body string) (string, error) {
	i := strings.Index(body, "fn main(")
	if i < 0 {
		return "", fmt.Errorf("no fn main(")
	}
	depth := 0
	for j := i + len("fn main"); j < len(body); j++ {
		switch body[j] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				k := strings.IndexByte(body[j:], '{')
				if k < 0 {
					return "", fmt.Errorf("fn main has no body")
				}
				open := j + k + 1
				return body[:j] + sgParams + body[j:open] + sgInit + body[open:], nil
			}
		}
	}
	return "", fmt.Errorf("fn main's parameters are not closed")
}

// sections returns common without the sections body does not use.
func sections(common, body string) (string, error) {
	var out strings.Builder
	keep, in := true, ""
	for _, line := range strings.SplitAfter(common, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "//! section "):
			in = strings.TrimSpace(strings.TrimPrefix(t, "//! section "))
			keep = strings.Contains(body, "//! use "+in+"\n")
			continue
		case t == "//! end":
			if in == "" {
				return "", fmt.Errorf("//! end outside a section")
			}
			in, keep = "", true
			continue
		}
		if keep {
			out.WriteString(line)
		}
	}
	if in != "" {
		return "", fmt.Errorf("section %s has no //! end", in)
	}
	return out.String(), nil
}
