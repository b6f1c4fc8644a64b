package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model/synth"
)

// TrainRequest asks a TrainFunc for timed training steps of one adapter method.
type TrainRequest struct {
	// Method is "lora" (f32 base weights) or "qlora" (NF4 base weights, quantized at load).
	Method string
	// ModelDir is a synthetic checkpoint (config.json + model.safetensors) described by Label.
	ModelDir string
	Label    string
	// Batch sequences of Seq tokens a step; Rank is the LoRA rank (alpha = 2·Rank), applied to
	// the attention and MLP projections.
	Batch, Seq, Rank int
	// Warmup untimed steps, then Steps timed ones.
	Warmup, Steps int
	// Bases16 are the same weights stored 16-bit, by dtype ("BF16", "F16"): a "lora" request
	// also plans its step's memory over each, the base kept 16-bit.
	Bases16 map[string]string
}

// TrainMeasurement is what a TrainFunc reports.
type TrainMeasurement struct {
	// StepSeconds holds the wall time of each timed step: forward, backward and optimizer update,
	// ending with the loss read back (which waits for the device).
	StepSeconds []float64
	// TokensPerStep is the number of tokens one step trains on (Batch·Seq).
	TokensPerStep int
	// PeakBytes is the step program's engine.Program.PeakBytes (activations and gradients;
	// weights, adapter parameters and optimizer state not included).
	PeakBytes int64
	// Loss is the last step's loss (to show that training ran); 0 or NaN if unknown.
	Loss float64
	// Submissions, Reads and Launches are per timed step: submissions to the device, host reads
	// and kernel launches (engine.Counting); 0 when not counted.
	Submissions, Reads, Launches float64
	// Memory is the step's planned device memory with each optimizer (AdamW, 8-bit, paged).
	Memory []MemoryRow
}

// MemoryRow is a training step's device memory with one optimizer, by part, against the floor
// (the same values with ideal buffer reuse), from the compiled plan.
type MemoryRow struct {
	// Base is how the frozen weights are held: "f32", "bf16", "f16" or "nf4".
	Base        string `json:"base"`
	Optimizer   string `json:"optimizer"`
	Weights     int64  `json:"weights"`
	Adapters    int64  `json:"adapters"`
	State       int64  `json:"optimizer_state"`
	Gradients   int64  `json:"gradients"`
	Activations int64  `json:"activations"`
	Floor       int64  `json:"floor"`
	Peak        int64  `json:"peak"`
	// HostState is the state kept in host memory (paged) and Moved the bytes a step streams.
	HostState int64 `json:"host_state,omitempty"`
	Moved     int64 `json:"moved_per_step,omitempty"`
}

// TrainFunc runs training steps on be as req asks. bench calls it once for "lora" and once for
// "qlora" (after the end-to-end figures, on the same device) and summarises StepSeconds. It is
// plugged in from outside (cmd/lathe sets Options.Train) so that bench does not follow the
// trainer's API. A TrainFunc loads req.ModelDir on be (quantized to NF4 for "qlora"), attaches a
// LoRA of req.Rank to the projections, builds batches of req.Batch×req.Seq token ids (any ids
// below the checkpoint's vocabulary), runs req.Warmup untimed and req.Steps timed steps, each
// ending with the loss read back, and returns the step program's PeakBytes.
type TrainFunc func(ctx context.Context, be engine.Backend, req TrainRequest) (TrainMeasurement, error)

// TrainResult is one training measurement in the report.
type TrainResult struct {
	Method       string  `json:"method"`
	Model        string  `json:"model"`
	Batch        int     `json:"batch"`
	Seq          int     `json:"seq"`
	Rank         int     `json:"rank"`
	StepTime     Stats   `json:"step_time"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	PeakBytes    int64   `json:"peak_bytes"`
	Loss         float64 `json:"loss"`
	// Submissions, Reads and Launches are per step (see TrainMeasurement).
	Submissions float64 `json:"submissions_per_step"`
	Reads       float64 `json:"reads_per_step"`
	Launches    float64 `json:"launches_per_step"`
	// Memory is the step's planned device memory with each optimizer.
	Memory []MemoryRow `json:"memory,omitempty"`
	// Shape is the checkpoint's geometry, for the reference to build the same model.
	Shape TrainShape `json:"shape"`
	// RefSeconds is PyTorch's median step time on the same shapes (--reference), RefTokensPerSec
	// its tokens/s, RefRatio its step time over lathe's (above 1: lathe is faster) and RefImpl
	// how it ran (PEFT or LoRA by hand, bitsandbytes or a dense base).
	RefSeconds      float64 `json:"ref_seconds,omitempty"`
	RefTokensPerSec float64 `json:"ref_tokens_per_sec,omitempty"`
	RefRatio        float64 `json:"ref_ratio,omitempty"`
	RefImpl         string  `json:"ref_impl,omitempty"`
	Err             string  `json:"error,omitempty"`
}

// TrainShape is the geometry of a training measurement's checkpoint.
type TrainShape struct {
	Hidden       int `json:"hidden"`
	Intermediate int `json:"intermediate"`
	Heads        int `json:"heads"`
	KVHeads      int `json:"kv_heads"`
	Layers       int `json:"layers"`
	Vocab        int `json:"vocab"`
}

// trainSeq is the sequence length of training steps for a run's sizes.
func trainSeq(s Sizes) int { return min(s.Tokens, 256) }

func runTrain(ctx context.Context, be engine.Backend, s Sizes, o Options) []TrainResult {
	if s.E2E.Layers == 0 {
		return nil
	}
	out := trainSteps(ctx, be, s.E2E, []string{"lora", "qlora"}, trainSeq(s), true, s, o)
	if s.Qwen3Train.Layers > 0 {
		// QVAC Fabric's shape: a LoRA step of Qwen3-1.7B at context 128.
		out = append(out, trainSteps(ctx, be, s.Qwen3Train, []string{"lora"}, 128, false, s, o)...)
	}
	return out
}

// trainSteps writes the synthetic checkpoint e describes and times a training step of each method;
// with bases16 it also writes the checkpoint in bf16 and f16, for the memory table.
func trainSteps(ctx context.Context, be engine.Backend, e E2ESizes, methods []string, seq int, bases16 bool, s Sizes, o Options) []TrainResult {
	dir, err := os.MkdirTemp("", "lathe-bench-train-")
	if err != nil {
		return []TrainResult{{Method: methods[0], Model: e.Label, Err: err.Error()}}
	}
	defer os.RemoveAll(dir)
	if _, err := synth.Write(dir, synth.Options{Preset: e.Preset, Seed: 1}); err != nil {
		return []TrainResult{{Method: methods[0], Model: e.Label, Err: err.Error()}}
	}
	// The same weights stored 16-bit, for the memory of a LoRA step over a bf16 or f16 base.
	dirs16 := map[string]string{}
	for _, dt := range []string{"BF16", "F16"} {
		if !bases16 {
			break
		}
		d := filepath.Join(dir, strings.ToLower(dt))
		if _, err := synth.Write(d, synth.Options{Preset: e.Preset, Seed: 1, DType: dt}); err != nil {
			return []TrainResult{{Method: methods[0], Model: e.Label, Err: err.Error()}}
		}
		dirs16[dt] = d
	}
	var out []TrainResult
	for _, method := range methods {
		req := TrainRequest{Method: method, ModelDir: dir, Label: e.Label, Batch: 1, Seq: seq, Rank: s.Rank,
			Warmup: 1, Steps: max(s.Repeats.Min, 3), Bases16: dirs16}
		p := e.Preset
		tr := TrainResult{Method: method, Model: req.Label, Batch: req.Batch, Seq: req.Seq, Rank: req.Rank,
			Shape: TrainShape{Hidden: p.Hidden, Intermediate: p.Intermediate, Heads: p.Heads, KVHeads: p.KVHeads, Layers: p.Layers, Vocab: p.Vocab}}
		m, err := o.Train(ctx, be, req)
		if err == nil {
			tr.StepTime, err = Summarize(m.StepSeconds)
		}
		if err != nil {
			tr.Err = err.Error()
			fmt.Fprintf(o.Log, "  train %-5s error: %v\n", method, err)
		} else {
			tr.TokensPerSec = float64(m.TokensPerStep) / tr.StepTime.Median
			tr.PeakBytes = m.PeakBytes
			tr.Submissions, tr.Reads, tr.Launches = m.Submissions, m.Reads, m.Launches
			tr.Memory = m.Memory
			if !math.IsNaN(m.Loss) && !math.IsInf(m.Loss, 0) { // JSON has no NaN
				tr.Loss = m.Loss
			}
			fmt.Fprintf(o.Log, "  train %-5s %s a step, %.1f tokens/s, peak %.1f MiB, %g submissions, %g reads, %g launches a step\n", method, fmtDur(tr.StepTime.Median), tr.TokensPerSec, float64(tr.PeakBytes)/(1<<20), tr.Submissions, tr.Reads, tr.Launches)
		}
		out = append(out, tr)
	}
	return out
}
