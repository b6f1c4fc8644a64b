// Command spvgen compiles the GLSL tier (shaders.GLSLBuilds) with glslc to shaders/spv/*.spv and
// checks each module with spirv-val. It runs from `go generate ./shaders` (in the shaders
// directory). A build that needs a GLSL extension this glslc does not know is reported and left
// out (its module removed), so that a newer glslang adds it by regenerating.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/shaders"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "spvgen:", err)
		os.Exit(1)
	}
}

func run() error {
	glslc, err := exec.LookPath("glslc")
	if err != nil {
		return fmt.Errorf("glslc not found (apt-get install glslc): %w", err)
	}
	val, err := exec.LookPath("spirv-val")
	if err != nil {
		return fmt.Errorf("spirv-val not found (apt-get install spirv-tools): %w", err)
	}
	tmp, err := os.MkdirTemp("", "spvgen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, b := range shaders.GLSLBuilds {
		dst := filepath.Join("spv", b.Name+".spv")
		if b.Needs != "" && !shaders.GLSLCKnows(glslc, b.Needs) {
			fmt.Fprintf(os.Stderr, "spvgen: %s left out: this glslc does not know %s\n", b.Name, b.Needs)
			if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		out := filepath.Join(tmp, b.Name+".spv")
		if msg, err := exec.Command(glslc, shaders.GLSLCArgs(b, out)...).CombinedOutput(); err != nil {
			return fmt.Errorf("glslc %s: %v\n%s", b.Name, err, msg)
		}
		if msg, err := exec.Command(val, "--target-env", shaders.TargetEnv, out).CombinedOutput(); err != nil {
			return fmt.Errorf("spirv-val %s: %v\n%s", b.Name, err, msg)
		}
		code, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(dst, code, 0o644); err != nil {
			return err
		}
	}
	return nil
}
