package shaders

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tool finds a shader tool. Without it the test skips, unless LATHE_REQUIRE_GPU=1 (CI, where
// scripts/test installs glslc and spirv-tools with lavapipe): then it fails.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1 but %s is not installed (apt-get install %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	}
	return p
}

// Every committed spv/*.spv is what glslc makes of its GLSL now (go generate ./shaders was run
// after the last edit), spirv-val accepts it, and no module is left over from a removed build.
func TestSPIRVCurrent(t *testing.T) {
	glslc := tool(t, "glslc", "glslc")
	val := tool(t, "spirv-val", "spirv-tools")
	dir := t.TempDir()
	want := map[string]bool{}
	for _, b := range GLSLBuilds {
		if b.Needs != "" && !GLSLCKnows(glslc, b.Needs) {
			if _, err := SPIRV(b.Name); err == nil {
				t.Errorf("%s is committed but this glslc cannot build it (it does not know %s)", b.Name, b.Needs)
			}
			continue
		}
		want[b.Name+".spv"] = true
		out := filepath.Join(dir, b.Name+".spv")
		cmd := exec.Command(glslc, GLSLCArgs(b, out)...)
		cmd.Dir = "."
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("glslc %s: %v\n%s", b.Name, err, msg)
			continue
		}
		if msg, err := exec.Command(val, "--target-env", TargetEnv, out).CombinedOutput(); err != nil {
			t.Errorf("spirv-val %s: %v\n%s", b.Name, err, msg)
		}
		fresh, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := files.ReadFile("spv/" + b.Name + ".spv")
		if err != nil || !bytes.Equal(fresh, committed) {
			t.Errorf("spv/%s.spv is stale or missing: run go generate ./shaders (%d bytes committed, %d compiled)", b.Name, len(committed), len(fresh))
		}
	}
	ents, _ := files.ReadDir("spv")
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("spv/%s has no build in GLSLBuilds", e.Name())
		}
	}
	if len(want) < 4 {
		t.Errorf("only %d modules built", len(want))
	}
}

// The KHR cooperative-matrix module is the NV source under other macros. Debian's glslang 11.13
// does not know GL_KHR_cooperative_matrix: when a glslc that does comes, this test says so, and
// go generate adds the module.
func TestCoopmatKHRIsASecondCompile(t *testing.T) {
	glslc := tool(t, "glslc", "glslc")
	var nv, khr *GLSLBuild
	for i, b := range GLSLBuilds {
		switch b.Name {
		case "qgemm_coopmat_nv":
			nv = &GLSLBuilds[i]
		case "qgemm_coopmat_khr":
			khr = &GLSLBuilds[i]
		}
	}
	if nv == nil || khr == nil || nv.Source != khr.Source {
		t.Fatal("the NV and KHR coopmat modules are not one source")
	}
	src, err := files.ReadFile("glsl/" + nv.Source)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"coopMatMulAddNV", "coopMatMulAdd(", "gl_MatrixUseAccumulator", "fcoopmatNV<32"} {
		if !strings.Contains(string(src), w) {
			t.Errorf("%s lacks %q", nv.Source, w)
		}
	}
	if GLSLCKnows(glslc, khr.Needs) {
		t.Logf("this glslc knows %s: go generate ./shaders builds %s", khr.Needs, khr.Name)
		if _, err := SPIRV(khr.Name); err != nil {
			t.Error(err)
		}
	} else {
		t.Logf("this glslc does not know %s: %s is not built", khr.Needs, khr.Name)
	}
	if !GLSLCKnows(glslc, "GL_NV_cooperative_matrix") || GLSLCKnows(glslc, "GL_LATHE_no_such_extension") {
		t.Error("GLSLCKnows does not tell a known extension from an unknown one")
	}
}

func TestSPIRVEmbedded(t *testing.T) {
	for _, n := range []string{"gemm", "gemm_f16", "qgemv_sg", "qgemm_coopmat_nv"} {
		w, err := SPIRV(n)
		if err != nil || len(w) < 100 {
			t.Errorf("%s: %d words, %v", n, len(w), err)
		}
	}
	if _, err := SPIRV("no_such_module"); err == nil {
		t.Error("SPIRV found a module that does not exist")
	}
}
