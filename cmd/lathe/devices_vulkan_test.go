package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/engine/backends"
)

// lathe devices lists Vulkan devices with the properties read through the cgo shim (driver,
// subgroup size, f16/int8, 8/16-bit storage); on lavapipe (a CPU device) --device auto still
// picks the CPU backend, as before the Vulkan backend existed.
func TestDevicesListVulkan(t *testing.T) {
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"devices", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var devs []struct {
		Backend  string   `json:"backend"`
		Name     string   `json:"name"`
		Type     string   `json:"type"`
		Driver   string   `json:"driver"`
		Features []string `json:"features"`
		Err      string   `json:"error"`
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &devs); err != nil {
		t.Fatalf("last line is not a JSON array: %v: %q", err, out.String())
	}
	n, lavapipe := 0, false
	for _, d := range devs {
		if d.Backend != "vulkan" {
			continue
		}
		if d.Err != "" {
			t.Logf("vulkan: %s", d.Err)
			continue
		}
		n++
		if d.Driver == "" {
			t.Errorf("%s: no driver name (VkPhysicalDeviceDriverProperties)", d.Name)
		}
		if strings.Contains(strings.ToLower(d.Name), "llvmpipe") {
			lavapipe = true
			f := strings.Join(d.Features, " ")
			for _, want := range []string{"subgroups(", "shader_f16", "storage_16bit", "storage_8bit"} {
				if !strings.Contains(f, want) {
					t.Errorf("lavapipe's features lack %s: %v", want, d.Features)
				}
			}
			if d.Type != "cpu" {
				t.Errorf("lavapipe listed as %q, want cpu", d.Type)
			}
		}
	}
	if os.Getenv("LATHE_REQUIRE_GPU") == "1" && n == 0 {
		t.Fatalf("LATHE_REQUIRE_GPU=1 but no Vulkan device listed: %s", out.String())
	}
	if !lavapipe {
		return
	}
	for _, d := range devs {
		if d.Type == "discrete" || d.Type == "integrated" {
			return // a real GPU is there: auto picks it, not the CPU
		}
	}
	be, err := backends.Open("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if got := be.Device().Backend; got != "cpu" {
		t.Errorf("--device auto on a machine with only lavapipe picked %s, want cpu", got)
	}
}
