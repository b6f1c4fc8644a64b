package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// torchRef is bench/reference/torch_ref.py, carried inside the binary so that --reference works
// from a bare binary on a device machine.
//
//go:embed reference/torch_ref.py
var torchRef []byte

// ReferenceReport is what the PyTorch reference measured.
type ReferenceReport struct {
	Python string `json:"python,omitempty"`
	// Error says why no reference ran (PyTorch missing); then no ratio is reported.
	Error string         `json:"error,omitempty"`
	Runs  []ReferenceRun `json:"runs,omitempty"`
}

// ReferenceRun is one run of torch_ref.py on one torch device.
type ReferenceRun struct {
	Device     string `json:"device"`
	DeviceName string `json:"device_name,omitempty"`
	Torch      string `json:"torch,omitempty"`
	DType      string `json:"dtype,omitempty"`
	Threads    int    `json:"threads,omitempty"`
	// BLASInfo is torch's BLAS_INFO ("generic" is the slow reference BLAS); CPUMatmul says whether
	// CPU matmuls went through oneDNN or BLAS.
	BLASInfo     string             `json:"blas_info,omitempty"`
	CPUMatmul    string             `json:"cpu_matmul,omitempty"`
	Bitsandbytes *string            `json:"bitsandbytes"`
	PEFT         *string            `json:"peft"`
	Cases        map[string]RefCase `json:"cases"`
	Errors       map[string]string  `json:"errors,omitempty"`
	Notes        []string           `json:"notes,omitempty"`
	Error        string             `json:"error,omitempty"`
	Seconds      float64            `json:"seconds"`
}

// RefCase is one reference timing, in seconds.
type RefCase struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
	N      int     `json:"n"`
	Impl   string  `json:"impl"`
}

// refCase is one case of the spec sent to torch_ref.py.
type refCase struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	M    int    `json:"m"`
	N    int    `json:"n"`
	K    int    `json:"k"`
	R    int    `json:"r"`
	// A train_step case: the method and the model's geometry.
	Method string `json:"method,omitempty"`
	TrainShape
	Batch int `json:"batch,omitempty"`
	Seq   int `json:"seq,omitempty"`
}

// trainRefID names the reference case of a training measurement.
func trainRefID(t TrainResult) string {
	s := t.Shape
	return fmt.Sprintf("train_step/%s/%d,%d,%d,%d,%d,%d/%dx%d/r%d", t.Method, s.Hidden, s.Intermediate, s.Heads, s.KVHeads, s.Layers, s.Vocab, t.Batch, t.Seq, t.Rank)
}

// refKind maps a lathe kernel to the reference computation of the same shape ("" if none).
func refKind(kernel string) string {
	switch kernel {
	case KernelGEMV, KernelGEMVBF16, KernelGEMVI8, KernelGEMM, KernelGEMMBF16, KernelGEMMI8:
		return "nf4_matmul"
	case KernelLoRAFwd, KernelLoRAFwdUnfuse:
		return "lora_fwd"
	case KernelLoRABwd, KernelLoRABwdUnfuse:
		return "lora_bwd"
	}
	return ""
}

// refID names the reference case of a kernel result: fused and unfused LoRA share one.
func refID(k KernelResult) string {
	kind := refKind(k.Kernel)
	if kind == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d,%d,%d,%d", kind, k.Dims.M, k.Dims.N, k.Dims.K, k.Dims.R)
}

// torchDevice is the torch device comparable with a lathe device: the CPU for the CPU backend,
// CUDA for a GPU, none for a software adapter (lavapipe), whose speed is not the point.
func torchDevice(d Device) string {
	switch {
	case isSoftware(d.DeviceInfo):
		return ""
	case d.Type == "cpu":
		return "cpu"
	}
	return "cuda"
}

// FindPython returns the first interpreter that imports torch: explicit, then LATHE_PYTHON, then
// python3 on PATH, then /usr/bin/python3 (Debian's python3-torch).
func FindPython(explicit string) (string, error) {
	cands := []string{explicit, os.Getenv("LATHE_PYTHON"), "python3", "/usr/bin/python3", "python"}
	var tried []string
	for _, c := range cands {
		if c == "" {
			continue
		}
		path, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		tried = append(tried, path)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err = exec.CommandContext(ctx, path, "-c", "import torch").Run()
		cancel()
		if err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w: no Python that imports torch (tried %s); set LATHE_PYTHON", errNoTorch, strings.Join(tried, ", "))
}

// runReference runs torch_ref.py once per torch device the measured backends need, on the shapes
// they measured.
func runReference(ctx context.Context, rep *Report, o Options) *ReferenceReport {
	rr := &ReferenceReport{}
	py, err := FindPython(o.Python)
	if err != nil {
		rr.Error = err.Error()
		fmt.Fprintln(o.Log, "reference:", rr.Error, "— no ratios reported")
		return rr
	}
	if ctx.Err() != nil {
		rr.Error = "interrupted before the reference ran"
		return rr
	}
	rr.Python = py
	dir, err := os.MkdirTemp("", "lathe-bench-ref-")
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "torch_ref.py")
	if err := os.WriteFile(script, torchRef, 0o644); err != nil {
		rr.Error = err.Error()
		return rr
	}
	// One spec per torch device, each case once.
	specs := map[string][]refCase{}
	var order []string
	seen := map[string]bool{}
	for _, b := range rep.Backends {
		dev := torchDevice(b.Device)
		if dev == "" {
			continue
		}
		for _, k := range b.Kernels {
			id := refID(k)
			if id == "" || k.Err != "" || seen[dev+id] {
				continue
			}
			seen[dev+id] = true
			if _, ok := specs[dev]; !ok {
				order = append(order, dev)
			}
			specs[dev] = append(specs[dev], refCase{ID: id, Kind: refKind(k.Kernel), M: k.Dims.M, N: k.Dims.N, K: k.Dims.K, R: k.Dims.R})
		}
		// The training steps, same shapes, in a torch run of their own (a slow device's kernel
		// shapes must not use up their time).
		for _, t := range b.Train {
			id := trainRefID(t)
			if t.Err != "" || t.Shape.Hidden == 0 || seen[dev+id] {
				continue
			}
			seen[dev+id] = true
			td := dev + " training"
			if _, ok := specs[td]; !ok {
				order = append(order, td)
			}
			specs[td] = append(specs[td], refCase{ID: id, Kind: "train_step", Method: t.Method, TrainShape: t.Shape, Batch: t.Batch, Seq: t.Seq, R: t.Rank})
		}
	}
	for _, key := range order {
		dev, _, _ := strings.Cut(key, " ")
		budget := 1.0
		if rep.Quick {
			budget = 0.15
		}
		spec := map[string]any{"device": dev, "warmup": 1, "min_repeats": 3, "max_repeats": 20, "budget_s": budget, "cases": specs[key]}
		if !rep.Quick {
			spec["min_repeats"], spec["max_repeats"] = 5, 50
		}
		fmt.Fprintf(o.Log, "reference: torch on %s, %d shapes (%s)\n", key, len(specs[key]), py)
		run := runTorch(ctx, py, script, spec)
		run.Device = dev
		if run.Error != "" {
			fmt.Fprintln(o.Log, "  reference error:", run.Error)
		}
		rr.Runs = append(rr.Runs, run)
	}
	return rr
}

func runTorch(ctx context.Context, py, script string, spec map[string]any) ReferenceRun {
	t0 := time.Now()
	var run ReferenceRun
	in, err := json.Marshal(spec)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	run.Seconds = time.Since(t0).Seconds()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := lines[len(lines)-1]
	if jerr := json.Unmarshal([]byte(last), &run); jerr != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = "…" + msg[len(msg)-500:]
		}
		run.Error = fmt.Sprintf("torch_ref.py: %v (exit: %v) %s", jerr, err, msg)
	}
	run.Seconds = time.Since(t0).Seconds()
	return run
}

// applyReference sets the reference time and ratio on every kernel whose shape the reference
// measured on a comparable device. A kernel without a measured reference gets no ratio.
func applyReference(rep *Report) {
	if rep.Reference == nil {
		return
	}
	for bi := range rep.Backends {
		b := &rep.Backends[bi]
		dev := torchDevice(b.Device)
		if dev == "" {
			continue
		}
		for _, run := range rep.Reference.Runs {
			if run.Device != dev || run.Error != "" {
				continue
			}
			for ki := range b.Kernels {
				k := &b.Kernels[ki]
				rc, ok := run.Cases[refID(*k)]
				if !ok || k.Err != "" || k.Time.Median <= 0 || rc.Median <= 0 {
					continue
				}
				k.RefSeconds, k.RefMin, k.RefImpl = rc.Median, rc.Min, rc.Impl
				k.RefRatio = rc.Median / k.Time.Median
			}
			for ti := range b.Train {
				t := &b.Train[ti]
				rc, ok := run.Cases[trainRefID(*t)]
				if !ok || t.Err != "" || t.StepTime.Median <= 0 || rc.Median <= 0 {
					continue
				}
				t.RefSeconds, t.RefImpl = rc.Median, rc.Impl
				t.RefTokensPerSec = float64(t.Batch*t.Seq) / rc.Median
				t.RefRatio = rc.Median / t.StepTime.Median
			}
		}
	}
}
