package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// lathe devices --json lists each WebGPU adapter with the caps kernel variants are chosen from;
// lavapipe (CI) has f16, subgroups and timestamps.
func TestDevicesShowCaps(t *testing.T) {
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"devices", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var devs []struct {
		Backend string `json:"backend"`
		Name    string `json:"name"`
		Caps    *struct {
			F16        bool `json:"shader_f16"`
			Subgroups  bool `json:"subgroups"`
			Timestamps bool `json:"timestamps"`
		} `json:"caps"`
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &devs); err != nil {
		t.Fatalf("last line is not a JSON array: %v: %q", err, out.String())
	}
	webgpu := 0
	for _, d := range devs {
		if d.Backend != "webgpu" {
			continue
		}
		webgpu++
		if d.Caps == nil {
			t.Errorf("%s: no caps", d.Name)
			continue
		}
		if strings.Contains(strings.ToLower(d.Name), "llvmpipe") && !(d.Caps.F16 && d.Caps.Subgroups && d.Caps.Timestamps) {
			t.Errorf("lavapipe's caps lack what it has: %+v", *d.Caps)
		}
	}
	if os.Getenv("LATHE_REQUIRE_GPU") == "1" && webgpu == 0 {
		t.Fatalf("LATHE_REQUIRE_GPU=1 but no WebGPU device listed: %s", out.String())
	}
}
