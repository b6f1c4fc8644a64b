// Command mutate checks that the test suite catches deliberate bugs. It copies the working tree
// (tracked and untracked files that git does not ignore) into a temporary folder, plants each bug
// of its table there in turn, runs the tests of the packages the bug concerns, and reports which
// tests failed. A bug that no test catches, or one whose code is no longer where the table says,
// is an error: the exit status is 1. The working tree itself is never modified.
//
//	go run ./internal/mutate            # every bug (scripts/mutate)
//	go run ./internal/mutate norm-swap  # some
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// edit replaces old, which must occur exactly once in the file, with new.
type edit struct{ file, old, new string }

// mutation is one planted bug and the packages whose tests must catch it.
type mutation struct {
	name, what string
	edits      []edit
	pkgs       []string
}

var mutations = []mutation{
	{"norm-swap", "input_layernorm and post_attention_layernorm swapped", []edit{
		{"model/llama.go", "x := g.RMSNorm(h, l.AttnNorm, eps)", "x := g.RMSNorm(h, l.MLPNorm, eps)"},
		{"model/llama.go", "x = g.RMSNorm(h, l.MLPNorm, eps)", "x = g.RMSNorm(h, l.AttnNorm, eps)"},
	}, []string{"./model/", "./peft/"}},
	{"rope-sign", "RoPE rotates by −angle (the sign of sin flipped)", []edit{
		{"engine/cpu/kernels/rope.go", "yr[i] = float32(a*cos[i] - b*sin[i])", "yr[i] = float32(a*cos[i] + b*sin[i])"},
		{"engine/cpu/kernels/rope.go", "yr[i+half] = float32(b*cos[i] + a*sin[i])", "yr[i+half] = float32(b*cos[i] - a*sin[i])"},
	}, []string{"./engine/cpu/...", "./model/"}},
	{"rope-llama3-smooth", "llama3 scaling's smooth band interpolates the wrong way", []edit{
		{"model/config.go", "inv[i] = (1-s)*f/rs.Factor + s*f", "inv[i] = s*f/rs.Factor + (1-s)*f"},
	}, []string{"./model/"}},
	{"rope-yarn-attention", "YaRN's attention factor square-rooted", []edit{
		{"model/config.go", "attn = 0.1*math.Log(rs.Factor) + 1", "attn = math.Sqrt(0.1*math.Log(rs.Factor) + 1)"},
	}, []string{"./model/"}},
	{"dropout-scale", "dropout without its 1/(1−p) scaling", []edit{
		{"engine/cpu/backend.go", "scale := 1 / (1 - op.P)", "scale := 1 / (1 - 0*op.P)"},
	}, []string{"./engine/cpu/...", "./peft/"}},
	{"dropout-grad-mask", "dropout's gradient ignores the mask", []edit{
		{"engine/autodiff.go", "return []*Node{g.Apply1(o, dout[0], n.src[1]), nil}", "return []*Node{dout[0], nil}"},
	}, []string{"./engine/", "./peft/"}},
	{"kv-cache-off-by-one", "tokens written one row past their position in the KV cache", []edit{
		{"model/generate.go", "int32(s.Slot*c.MaxLen+p)", "int32(s.Slot*c.MaxLen+p+1)"},
	}, []string{"./model/", "./serve/"}},
	{"attention-softmax-max", "the attention softmax (GEMM path) without its max", []edit{
		{"engine/cpu/attention.go", "e := math.Exp(float64(x - mx))", "e := math.Exp(float64(x))"},
		{"engine/cpu/attention.go", "lse[i] = mx + float32(math.Log(sum))", "lse[i] = float32(math.Log(sum))"},
	}, []string{"./engine/cpu/..."}},
	{"softmax-max", "Softmax without its max", []edit{
		{"engine/cpu/kernels/activation.go", "e[i] = math.Exp(float64(v) - m)", "e[i] = math.Exp(float64(v))"},
	}, []string{"./engine/cpu/..."}},
	{"bias-dropped", "linear layers' biases left out", []edit{
		{"model/llama.go", "return g.AddBias(y, l.Bias)", "return y"},
	}, []string{"./model/", "./peft/"}},
	{"lora-scale", "LoRA scaled by alpha instead of alpha/r", []edit{
		{"peft/config.go", "return float32(c.LoraAlpha / float64(c.R))", "return float32(c.LoraAlpha)"},
	}, []string{"./peft/"}},
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

func run(only []string) error {
	root, err := gitOutput(".", "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	root = strings.TrimSpace(root)
	if os.Getenv("LATHE_TESTDATA") == "" {
		if dir := filepath.Join(root, "..", "shared", "testdata"); exists(dir) {
			os.Setenv("LATHE_TESTDATA", dir) // the scratch copy is elsewhere: pass the absolute path
		}
	}
	scratch, err := os.MkdirTemp("", "lathe-mutate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := copyTree(root, scratch); err != nil {
		return err
	}
	fmt.Printf("scratch copy of %s in %s\n", root, scratch)

	var rows [][3]string
	failed := false
	for _, m := range mutations {
		if len(only) > 0 && !slices.Contains(only, m.name) {
			continue
		}
		start := time.Now()
		caught, err := try(scratch, m)
		verdict := "caught"
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "%s: %v\n", m.name, err)
			verdict, failed = "ERROR: "+strings.SplitN(err.Error(), "\n", 2)[0], true
		case len(caught) == 0:
			verdict, failed = "NOT CAUGHT", true
		}
		fmt.Printf("%-22s %-10s %4.0fs  %s\n", m.name, verdict, time.Since(start).Seconds(), strings.Join(caught, ", "))
		rows = append(rows, [3]string{m.name + ": " + m.what, verdict, strings.Join(caught, ", ")})
	}
	fmt.Println()
	fmt.Println("| planted bug | result | failing tests |")
	fmt.Println("| --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s |\n", r[0], r[1], r[2])
	}
	if failed {
		return fmt.Errorf("not every planted bug was caught")
	}
	return nil
}

// event is a line of go test -json.
type event struct {
	Action, Package, Test, Output string
	FailedBuild                   string
}

// try plants m in the scratch copy, runs its packages' tests, restores the files and returns the
// failing tests as package.Test (top-level tests only: a failing subtest fails its parent).
func try(scratch string, m mutation) ([]string, error) {
	saved := map[string][]byte{}
	defer func() {
		for f, b := range saved {
			_ = os.WriteFile(filepath.Join(scratch, f), b, 0o644)
		}
	}()
	for _, e := range m.edits {
		path := filepath.Join(scratch, e.file)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if _, ok := saved[e.file]; !ok {
			saved[e.file] = b
		}
		if n := bytes.Count(b, []byte(e.old)); n != 1 {
			return nil, fmt.Errorf("%s: %q occurs %d times, not once: update the table", e.file, e.old, n)
		}
		if err := os.WriteFile(path, bytes.Replace(b, []byte(e.old), []byte(e.new), 1), 0o644); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command("go", append([]string{"test", "-json", "-count=1", "-timeout", "20m"}, m.pkgs...)...)
	cmd.Dir = scratch
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	var caught []string
	var pkgFailed []string
	for _, line := range bytes.Split(out, []byte("\n")) {
		var e event
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		if e.FailedBuild != "" || e.Action == "build-fail" {
			return nil, fmt.Errorf("the mutant does not build: fix the table\n%s%s", stderr.String(), e.Output)
		}
		if e.Action != "fail" {
			continue
		}
		short := strings.TrimPrefix(e.Package, "github.com/lathe-ml/lathe/")
		switch {
		case e.Test == "":
			pkgFailed = append(pkgFailed, short)
		case !strings.Contains(e.Test, "/"):
			caught = append(caught, short+"."+e.Test)
		}
	}
	if strings.Contains(stderr.String(), "build failed") || strings.Contains(stderr.String(), "[setup failed]") {
		return nil, fmt.Errorf("the mutant does not build: fix the table\n%s", stderr.String())
	}
	for _, p := range pkgFailed {
		if !slices.ContainsFunc(caught, func(c string) bool { return strings.HasPrefix(c, p+".") }) {
			// A panic or a timeout fails the package without a failing test to name.
			caught = append(caught, p+" (package failed: panic or timeout)")
		}
	}
	return caught, nil
}

// copyTree copies the files git knows of in root (tracked, and untracked ones it does not ignore)
// to dst.
func copyTree(root, dst string) error {
	list, err := gitOutput(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return err
	}
	for _, f := range strings.Split(list, "\x00") {
		if f == "" {
			continue
		}
		src := filepath.Join(root, f)
		info, err := os.Lstat(src)
		if err != nil || !info.Mode().IsRegular() {
			continue // deleted in the working tree, or a link
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(to, b, info.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func gitOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
