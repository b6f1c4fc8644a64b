package shaders

import (
	"fmt"
	"strings"
	"testing"
)

func TestCompose(t *testing.T) {
	names := WGSLNames()
	if len(names) < 10 {
		t.Fatalf("only %d WGSL files embedded: %v", len(names), names)
	}
	for _, n := range names {
		if n == Common {
			continue
		}
		src, err := Compose(n, []Const{{"WG", "64u"}, {"FLAG", "true"}, {"S", "1.5"}, {"I", "-2i"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"const WG: u32 = 64u;", "const FLAG: bool = true;", "const S: f32 = 1.5;", "const I: i32 = -2i;", "fn block_sum", "fn main"} {
			if !strings.Contains(src, want) {
				t.Errorf("%s: composed module lacks %q", n, want)
			}
		}
	}
	if _, err := WGSL("no_such_kernel"); err == nil {
		t.Error("WGSL found a kernel that does not exist")
	}
}

// The row helpers of common.wgsl go only into kernels that use them (they read the kernel's x).
func TestSections(t *testing.T) {
	soft, err := Compose("softmax", []Const{{"WG", "64u"}})
	if err != nil {
		t.Fatal(err)
	}
	fill, err := Compose("fill", []Const{{"WG", "64u"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(soft, "fn row_max_sumexp") || strings.Contains(fill, "fn row_max_sumexp") {
		t.Error("the rows section is not included exactly where used")
	}
	if strings.Contains(soft, "//! section") || !strings.Contains(fill, "fn block_sum") {
		t.Error("section markers left in, or the unsectioned helpers dropped")
	}
	if _, err := sections("//! section a\nfn f() {}\n", "//! use a\n"); err == nil {
		t.Error("a section without its end was accepted")
	}
}

// A kernel's "//! enable" lines become directives ahead of every declaration.
func TestEnables(t *testing.T) {
	src, err := Compose("subgroup_probe", []Const{{"WG", "64u"}})
	if err != nil {
		t.Fatal(err)
	}
	if sub, f16 := Enables(src); !sub || f16 {
		t.Errorf("subgroup_probe: enables subgroups %v, f16 %v", sub, f16)
	}
	if SubgroupsEnable != "" && !strings.HasPrefix(src, SubgroupsEnable+"\n") {
		t.Errorf("subgroup_probe does not start with %q", SubgroupsEnable)
	}
	if !strings.HasPrefix(src, "const WG: u32 = 64u;") && SubgroupsEnable == "" {
		t.Errorf("subgroup_probe has something before its constants: %.60q", src)
	}
	if fill, _ := Compose("fill", []Const{{"WG", "64u"}}); strings.Contains(fill, "enable ") {
		t.Error("fill got an enable directive it does not ask for")
	}
}

// A kernel marked "//! subgroups" composes to two modules: the tree reductions, or the subgroup
// ones with main given the subgroup builtins (and their values handed over first thing).
func TestSubgroupVariant(t *testing.T) {
	for _, n := range WGSLNames() {
		if n == Common || !HasSubgroupVariant(n) {
			continue
		}
		plain, err := Compose(n, []Const{{"WG", "64u"}})
		if err != nil {
			t.Fatal(err)
		}
		sg, err := ComposeVariant(n, []Const{{"WG", "64u"}}, true)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(plain, "subgroupAdd") || !strings.Contains(plain, "red[lid] = red[lid] + red[lid + s]") {
			t.Errorf("%s: the plain module is not the tree variant", n)
		}
		if !strings.Contains(sg, "subgroupAdd") || strings.Contains(sg, "red[lid] = red[lid] + red[lid + s]") {
			t.Errorf("%s: the subgroup module is not the subgroup variant", n)
		}
		if !strings.Contains(sg, sgParams+") {"+sgInit) {
			t.Errorf("%s: main lacks the subgroup builtins", n)
		}
	}
	if !HasSubgroupVariant("qgemv") || HasSubgroupVariant("fill") {
		t.Error("the subgroup markers are not where expected")
	}
	if _, err := ComposeVariant("fill", []Const{{"WG", "64u"}}, true); err == nil {
		t.Error("composed a subgroup variant of a kernel without one")
	}
	if _, err := addSubgroupBuiltins("fn main(a: u32"); err == nil {
		t.Error("an unclosed main was accepted")
	}
}

// A kernel marked "//! f16" composes to two modules by its F16 constant: `enable f16;` first and
// the f16 staging type, or neither (f32 staging); others have no such variant.
func TestF16Variant(t *testing.T) {
	if !HasF16Variant("matmul") || HasF16Variant("fill") {
		t.Fatal("matmul should have an f16 variant, fill none")
	}
	for _, on := range []bool{false, true} {
		src, err := Compose("matmul", []Const{{"WG", "256u"}, {F16Const, fmt.Sprint(on)}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(src, F16Enable+"\n") != on || strings.Contains(src, "alias ST = f16;") != on || strings.Contains(src, "alias ST = f32;") == on {
			t.Errorf("F16=%v: wrong directive or staging type:\n%.200s", on, src)
		}
	}
}
