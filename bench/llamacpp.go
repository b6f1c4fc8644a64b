package bench

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/lathe-ml/lathe/model/gguf"
)

// llamaCppBench is bench/reference/llamacpp_bench.mjs, carried inside the binary.
//
//go:embed reference/llamacpp_bench.mjs
var llamaCppBench []byte

// LlamaCppResult is llama.cpp (through node-llama-cpp) on the checkpoint of the end-to-end
// measurement, exported to GGUF, beside lathe's run on the same weights in the same bench run.
type LlamaCppResult struct {
	// Type is the GGUF tensor type (Q4_0, F16); Lathe names the lathe run it is compared with
	// (NF4 against Q4_0: both 4-bit with a scale a block; f32 against F16).
	Type  string `json:"type"`
	Lathe string `json:"lathe"`
	Bytes int64  `json:"file_bytes,omitempty"`
	// Threads is llama.cpp's thread count: lathe's GOMAXPROCS.
	Threads      int     `json:"threads"`
	PromptTokens int     `json:"prompt_tokens"`
	DecodeTokens int     `json:"decode_tokens"`
	TTFT         Stats   `json:"ttft"`
	TokenTime    Stats   `json:"token_time"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	// DecodeRatio is lathe's decode tokens/s ÷ llama.cpp's, PrefillRatio llama.cpp's time to first
	// token ÷ lathe's: above 1, lathe is faster.
	DecodeRatio  float64 `json:"decode_ratio,omitempty"`
	PrefillRatio float64 `json:"prefill_ratio,omitempty"`
	Err          string  `json:"error,omitempty"`
}

// llamaCppModule finds node-llama-cpp's entry module: LATHE_NODE_LLAMA_CPP (the package folder),
// else model/gguf/llamacpptest/node_modules/node-llama-cpp above the working directory (where
// scripts/setup.sh and cmd/lathe's llama.cpp test install it).
func llamaCppModule() (string, error) {
	var dirs []string
	if d := os.Getenv("LATHE_NODE_LLAMA_CPP"); d != "" {
		dirs = append(dirs, d)
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, filepath.Join(d, "model", "gguf", "llamacpptest", "node_modules", "node-llama-cpp"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, d := range dirs {
		entry := filepath.Join(d, "dist", "index.js")
		if _, err := os.Stat(entry); err == nil {
			abs, err := filepath.Abs(entry)
			if err != nil {
				return "", err
			}
			return (&url.URL{Scheme: "file", Path: abs}).String(), nil
		}
	}
	return "", errors.New("node-llama-cpp not found (set LATHE_NODE_LLAMA_CPP to its package folder, or run `npm install --omit=optional --no-save` in model/gguf/llamacpptest)")
}

// nodePath is the node interpreter: LATHE_NODE, else node on PATH.
func nodePath() (string, error) {
	if n := os.Getenv("LATHE_NODE"); n != "" {
		return n, nil
	}
	n, err := exec.LookPath("node")
	if err != nil {
		return "", errors.New("node not found (set LATHE_NODE or put node on PATH)")
	}
	return n, nil
}

// llamaCppTypes are the GGUF types exported and the lathe weights each is compared with.
var llamaCppTypes = []struct {
	typ   parser.GGMLType
	name  string
	lathe string
}{{parser.GGMLTypeQ4_0, "Q4_0", nf4Head4}, {parser.GGMLTypeF16, "F16", "f32"}}

// runLlamaCpp exports the checkpoint in dir to GGUF and times llama.cpp on it with the prompt and
// decode lengths of s, then sets the ratios against lathe's batch-1 runs in e2e.
func runLlamaCpp(ctx context.Context, dir string, s E2ESizes, e2e []E2EResult, log io.Writer) []LlamaCppResult {
	threads := runtime.GOMAXPROCS(0)
	fail := func(err error) []LlamaCppResult {
		fmt.Fprintf(log, "  llama.cpp: %v\n", err)
		return []LlamaCppResult{{Type: "Q4_0", Lathe: nf4Head4, Threads: threads, Err: err.Error()}}
	}
	module, err := llamaCppModule()
	if err != nil {
		return fail(err)
	}
	node, err := nodePath()
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp("", "lathe-bench-llamacpp-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "llamacpp_bench.mjs")
	if err := os.WriteFile(script, llamaCppBench, 0o644); err != nil {
		return fail(err)
	}
	type model struct {
		Path string `json:"path"`
		Type string `json:"type"`
	}
	var models []model
	out := make([]LlamaCppResult, len(llamaCppTypes))
	for i, t := range llamaCppTypes {
		out[i] = LlamaCppResult{Type: t.name, Lathe: t.lathe, Threads: threads, PromptTokens: s.PromptTokens, DecodeTokens: s.DecodeTokens}
		path := filepath.Join(tmp, t.name+".gguf")
		res, err := gguf.WriteModel(dir, path, t.typ)
		if err != nil {
			out[i].Err = err.Error()
			continue
		}
		out[i].Bytes = res.Bytes
		models = append(models, model{Path: path, Type: t.name})
	}
	prompt := make([]int, s.PromptTokens)
	for i := range prompt {
		prompt[i] = 3 + i%(s.Preset.Vocab-3) // the ids lathe's run uses
	}
	spec, err := json.Marshal(map[string]any{"module": module, "models": models, "prompt": prompt, "decode": s.DecodeTokens,
		"repeats": max(s.Repeats, 1), "threads": threads, "context": s.PromptTokens + s.DecodeTokens + 8})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, string(spec))
	cmd.Env = append(os.Environ(), "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true", "NO_COLOR=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fail(fmt.Errorf("node %s: %v: %s", filepath.Base(script), err, lastLines(stderr.String(), 5)))
	}
	var got []struct {
		Type  string    `json:"type"`
		TTFT  []float64 `json:"ttft"`
		Token []float64 `json:"token"`
		Error string    `json:"error"`
	}
	if err := json.Unmarshal(lastLine(stdout.Bytes()), &got); err != nil {
		return fail(fmt.Errorf("llama.cpp output: %v: %s", err, lastLines(stdout.String(), 3)))
	}
	for _, g := range got {
		for i := range out {
			if out[i].Type != g.Type {
				continue
			}
			r := &out[i]
			r.Err = g.Error
			if r.Err == "" {
				if r.TTFT, err = Summarize(g.TTFT); err == nil {
					r.TokenTime, err = Summarize(g.Token)
				}
				if err != nil {
					r.Err = err.Error()
				}
			}
			if r.Err != "" {
				fmt.Fprintf(log, "  llama.cpp %-4s error: %s\n", r.Type, r.Err)
				break
			}
			r.TokensPerSec = 1 / r.TokenTime.Median
			for _, e := range e2e {
				if e.Weights == r.Lathe && max(e.Batch, 1) == 1 && e.Adapters == 0 && e.Err == "" && e.TokensPerSec > 0 {
					r.DecodeRatio = e.TokensPerSec / r.TokensPerSec
					r.PrefillRatio = r.TTFT.Median / e.TTFT.Median
				}
			}
			fmt.Fprintf(log, "  llama.cpp %-4s TTFT %s (%d tokens), decode %.2f tokens/s; lathe %s ÷ llama.cpp: decode %.2f×, prefill %.2f×\n",
				r.Type, fmtDur(r.TTFT.Median), r.PromptTokens, r.TokensPerSec, r.Lathe, r.DecodeRatio, r.PrefillRatio)
		}
	}
	for _, r := range out {
		if r.Err == "" && r.TokensPerSec == 0 {
			fmt.Fprintf(log, "  llama.cpp %-4s: no result\n", r.Type)
		}
	}
	// Q4_0's timings beside lathe's NF4 runs with bfloat16 and 8-bit products too, when there are.
	for _, r := range out {
		if r.Lathe != nf4Head4 || r.Err != "" || r.TokensPerSec == 0 {
			continue
		}
		for _, e := range e2e {
			if (e.Weights == nf4Head4BF16 || e.Weights == nf4Head4I8) && max(e.Batch, 1) == 1 && e.Adapters == 0 && e.Err == "" && e.TokensPerSec > 0 {
				b := r
				b.Lathe = e.Weights
				b.DecodeRatio = e.TokensPerSec / r.TokensPerSec
				b.PrefillRatio = r.TTFT.Median / e.TTFT.Median
				fmt.Fprintf(log, "  lathe %s ÷ llama.cpp %s: decode %.2f×, prefill %.2f×\n", b.Lathe, b.Type, b.DecodeRatio, b.PrefillRatio)
				out = append(out, b)
			}
		}
	}
	return out
}

// lastLine is the last non-empty line of b (node-llama-cpp may print above the JSON).
func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

// lastLines is the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
