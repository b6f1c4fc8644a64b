package vulkan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/shaders"
)

// openTest opens the best Vulkan device. Without one the test skips, unless LATHE_REQUIRE_GPU=1,
// when it fails: CI sets it where lavapipe is installed.
func openTest(t testing.TB) *Backend {
	t.Helper()
	b, err := OpenBest()
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v", err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	d := b.Device()
	t.Logf("device: %s (%s, %s, %s, %s) features %v", d.Name, d.Vendor, d.Type, d.API, d.Driver, d.Features)
	return b
}

// TestConformance runs the whole suite on the kernels the device's caps choose (on lavapipe: the
// subgroup variants), then on the base set ("plain"), on one backend so that the kernels both sets
// share are compiled once (llvmpipe compiles each at its first dispatch, seconds to minutes on a
// loaded CI machine), and checks every SPIR-V module naga made for them with spirv-val.
func TestConformance(t *testing.T) {
	b := openTest(t)
	if !b.Caps().Subgroups {
		t.Logf("no subgroups: the base kernel set only (%+v)", b.Caps())
	}
	dir := t.TempDir()
	var mods []string
	b.compiled = func(name string, code []uint32) {
		raw := make([]byte, 4*len(code))
		for i, w := range code {
			binary.LittleEndian.PutUint32(raw[4*i:], w)
		}
		f := filepath.Join(dir, fmt.Sprintf("%s_%d.spv", name, len(mods)))
		if err := os.WriteFile(f, raw, 0o644); err != nil {
			t.Error(err)
		}
		mods = append(mods, f)
	}
	enginetest.Run(t, b, cpu.New())
	t.Run("plain", func(t *testing.T) {
		b.plain = true
		defer func() { b.plain = false }()
		enginetest.Run(t, b, cpu.New())
	})
	// The f16-arithmetic set (engine.F16Arithmetic), first against its float64 reference.
	t.Run("f16", func(t *testing.T) {
		if !b.Caps().ShaderF16 {
			if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
				t.Fatalf("LATHE_REQUIRE_GPU=1 and %s has no shaderFloat16", b.Device().Name)
			}
			t.Skip("no shaderFloat16")
		}
		if err := b.SetF16Arithmetic(true); err != nil {
			t.Fatal(err)
		}
		defer b.SetF16Arithmetic(false)
		if b.Device().Type == "cpu" {
			// llvmpipe takes minutes to compile each f16 module (Backend.planDevice): a software
			// device keeps f32 tiles, and the f16 modules are checked by spirv-val only.
			if b.planDevice().F16 {
				t.Fatal("a software device planned the f16 matmul")
			}
			mods = append(mods, f16Modules(t, dir)...)
			return
		}
		if err := enginetest.VerifyF16MatMul(b); err != nil {
			t.Fatal(err)
		}
		enginetest.RunWith(t, b, cpu.New(), enginetest.F16Options)
	})
	validate(t, mods)
}

// f16Modules translates the matmul's f16 variant in each of its forms (transposes, dense f32,
// f16 and bf16 B, 4-bit B, LoRA epilogue, accumulation) to SPIR-V files in dir.
func f16Modules(t *testing.T, dir string) []string {
	var out []string
	for i := range 64 {
		ta, tb, bq, epi, acc := i&1 != 0, i&2 != 0, i&4 != 0, i&8 != 0, i&16 != 0
		for bh := range 3 {
			if bq && bh > 0 {
				continue
			}
			v := func(x bool) string { return fmt.Sprint(x) }
			consts := []shaders.Const{{Name: "WG", Value: "256u"}, {Name: "BM", Value: "64u"}, {Name: "BN", Value: "64u"}, {Name: "BK", Value: "16u"},
				{Name: "TM", Value: "4u"}, {Name: "TN", Value: "4u"}, {Name: "ASZ", Value: "1024u"}, {Name: "BSZ", Value: "1024u"}, {Name: "TMN", Value: "16u"},
				{Name: "TA", Value: v(ta)}, {Name: "TB", Value: v(tb)}, {Name: "BQ", Value: v(bq)}, {Name: "EPI", Value: v(epi)}, {Name: "EPIT", Value: v(i&32 != 0)},
				{Name: "ACC", Value: v(acc)}, {Name: "BH", Value: fmt.Sprintf("%du", bh)}, {Name: shaders.F16Const, Value: "true"}}
			code, err := SPIRV("matmul", consts, false)
			if err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 4*len(code))
			for k, w := range code {
				binary.LittleEndian.PutUint32(raw[4*k:], w)
			}
			f := filepath.Join(dir, fmt.Sprintf("matmul_f16_%d_%d.spv", i, bh))
			if err := os.WriteFile(f, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
	}
	return out
}

// validate runs spirv-val (SPIRV-Tools) on each module for Vulkan 1.1. Without spirv-val the check
// skips, unless LATHE_REQUIRE_GPU=1 (CI installs spirv-tools).
func validate(t *testing.T, mods []string) {
	t.Helper()
	val, err := exec.LookPath("spirv-val")
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1 but spirv-val is not installed (apt-get install spirv-tools): %v", err)
		}
		t.Skipf("spirv-val not installed: %d modules not validated", len(mods))
	}
	if len(mods) == 0 {
		t.Fatal("no kernel was compiled")
	}
	for _, m := range mods {
		if out, err := exec.Command(val, "--target-env", "vulkan1.1", m).CombinedOutput(); err != nil {
			t.Errorf("spirv-val %s: %v\n%s", filepath.Base(m), err, out)
		}
	}
	t.Logf("spirv-val accepted all %d SPIR-V modules naga made", len(mods))
}

// A machine without the Vulkan loader gets ErrNoVulkan, which says what to install, not a crash.
func TestNoLoaderIsAClearError(t *testing.T) {
	_, err := openLoader([]string{"liblathe-no-such-vulkan.so.1"})
	if !errors.Is(err, ErrNoVulkan) {
		t.Fatalf("err = %v, want ErrNoVulkan", err)
	}
	if !strings.Contains(err.Error(), "install") || !strings.Contains(err.Error(), "liblathe-no-such-vulkan") {
		t.Errorf("error does not say what is missing and what to install: %v", err)
	}
}

// The sub-allocator's free list: aligned first fit, splits, and frees that coalesce back into one
// span whatever their order.
func TestBlockSubAllocation(t *testing.T) {
	bl := &block{size: 1 << 20, free: []span{{0, 1 << 20}}}
	type got struct{ off, n int64 }
	var taken []got
	for _, n := range []int64{100, 4096, 7, 300000, 64} {
		off, ok := bl.take(n, 256)
		if !ok || off%256 != 0 {
			t.Fatalf("take(%d) = %d, %v", n, off, ok)
		}
		for _, g := range taken {
			if off < g.off+g.n && g.off < off+n {
				t.Fatalf("take(%d) at %d overlaps [%d, %d)", n, off, g.off, g.off+g.n)
			}
		}
		taken = append(taken, got{off, n})
	}
	if _, ok := bl.take(1<<20, 256); ok {
		t.Fatal("a full-block request fit a block in use")
	}
	for _, i := range []int{3, 0, 4, 1, 2} {
		bl.give(taken[i].off, taken[i].n)
	}
	if !bl.empty() {
		t.Fatalf("after freeing everything the free list is %v", bl.free)
	}
}
