package shaders

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
)

// The GLSL tier: kernels under glsl/ that need what WGSL cannot say (subgroup arithmetic without
// a naga feature gate, specialisation constants for tile sizes, f16 arithmetic, cooperative
// matrices), compiled by `go generate` with glslc (shaderc) to spv/*.spv, which are committed and
// embedded: building lathe needs no shader toolchain. TestSPIRVCurrent recompiles each and fails
// when a committed module is stale.
//
//go:generate go run ./internal/spvgen

// GLSLBuild is one SPIR-V module of the GLSL tier: a source compiled with some macros defined.
type GLSLBuild struct {
	// Name is the module's name: spv/<Name>.spv.
	Name string
	// Source is the file under glsl/.
	Source string
	// Defines are the macros the source is compiled with (-D).
	Defines []string
	// Needs names a GLSL extension the module needs that glslang may not know yet: the module is
	// built only by a glslc that knows it (spvgen probes), and is absent otherwise.
	Needs string
}

// GLSLBuilds are the modules of the GLSL tier. The KHR cooperative-matrix kernel is the NV one
// compiled with other macros: Debian's glslc (shaderc 2023.2, glslang 11.13) does not know
// GL_KHR_cooperative_matrix, so it is listed but built only once the generator's glslang does.
var GLSLBuilds = []GLSLBuild{
	{Name: "gemm", Source: "gemm.comp"},
	{Name: "gemm_f16", Source: "gemm.comp", Defines: []string{"F16"}},
	{Name: "qgemv_sg", Source: "qgemv.comp"},
	{Name: "qgemm_coopmat_nv", Source: "qgemm_coopmat.comp", Defines: []string{"COOP_NV"}},
	{Name: "qgemm_coopmat_khr", Source: "qgemm_coopmat.comp", Defines: []string{"COOP_KHR"}, Needs: "GL_KHR_cooperative_matrix"},
	// The coopmat kernel with its matrix operations emulated on shared memory: the tests run it
	// where no device has cooperative matrices (lavapipe), to check all but those operations.
	{Name: "qgemm_coopmat_emu", Source: "qgemm_coopmat.comp", Defines: []string{"COOP_EMU"}},
}

// TargetEnv is the Vulkan version the modules are compiled and validated for (SPIR-V 1.3).
const TargetEnv = "vulkan1.1"

// GLSLCArgs are glslc's arguments that compile build b (run in the shaders directory) to out.
func GLSLCArgs(b GLSLBuild, out string) []string {
	args := []string{"--target-env=" + TargetEnv, "-O", "-fshader-stage=compute", "-Iglsl"}
	for _, d := range b.Defines {
		args = append(args, "-D"+d)
	}
	return append(args, "-o", out, "glsl/"+b.Source)
}

// GLSLCKnows reports whether the glslc at path knows a GLSL extension: it compiles a module that
// requires it.
func GLSLCKnows(glslc, ext string) bool {
	cmd := exec.Command(glslc, "--target-env="+TargetEnv, "-fshader-stage=compute", "-o", "/dev/null", "-")
	cmd.Stdin = strings.NewReader("#version 450\n#extension " + ext + " : require\nlayout(local_size_x = 1) in;\nvoid main() {}\n")
	return cmd.Run() == nil
}

// SPIRV returns the embedded module spv/<name>.spv as words, or an error when it is absent (a
// build that needs an extension the generator's glslang did not know).
func SPIRV(name string) ([]uint32, error) {
	raw, err := files.ReadFile("spv/" + name + ".spv")
	if err != nil {
		return nil, fmt.Errorf("shaders: no SPIR-V module %q (go generate ./shaders builds it where glslc can)", name)
	}
	if len(raw)%4 != 0 || len(raw) < 20 || binary.LittleEndian.Uint32(raw) != 0x07230203 {
		return nil, fmt.Errorf("shaders: spv/%s.spv is not SPIR-V", name)
	}
	words := make([]uint32, len(raw)/4)
	for i := range words {
		words[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return words, nil
}
