package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lockedBuffer is an io.Writer a test can read while a command writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The path a user takes: a model and data, a QLoRA adapter trained, generation with it, and a
// server answering requests for the base model and two adapters at once, stopped cleanly.
func TestTrainGenerateServeCommands(t *testing.T) {
	dir := t.TempDir()
	model, data, adapter := filepath.Join(dir, "model"), filepath.Join(dir, "facts.jsonl"), filepath.Join(dir, "adapter")
	_, _, err := run(t, "init-model", "--out", model)
	require.NoError(t, err)
	_, _, err = run(t, "init-data", "--out", data, "--kind", "facts")
	require.NoError(t, err)
	_, res, err := run(t, "train", "--model", model, "--data", data, "--method", "qlora", "--out", adapter, "--steps", "4", "--seq", "48", "--device", "cpu")
	require.NoError(t, err)
	require.Equal(t, float64(4), res["steps"], "%v", res)
	require.Equal(t, "qlora", res["method"])
	require.Equal(t, adapter, res["adapter"])
	require.Equal(t, float64(0), res["skipped_steps"])
	require.Positive(t, res["trainable_params"])
	for _, k := range []string{"loss_start", "loss_end"} {
		l, ok := res[k].(float64)
		require.True(t, ok, "%s: %v", k, res[k])
		require.True(t, l > 0.5 && l < 10, "%s %v: a cross-entropy over a 384-token vocabulary", k, l)
	}
	metrics, err := os.ReadFile(filepath.Join(adapter, "metrics.jsonl"))
	require.NoError(t, err)
	var logged []float64
	for _, line := range strings.Split(strings.TrimSpace(string(metrics)), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		if st, ok := m["step"].(float64); ok && m["loss"] != nil {
			logged = append(logged, st)
		}
	}
	require.Equal(t, []float64{1, 2, 3, 4}, logged, "metrics.jsonl has a line per step")

	const prompt = "What does the cow say?"
	_, res, err = run(t, "generate", "--model", model, "--adapter", adapter, "--quantize", "nf4", "--prompt", prompt, "--max-tokens", "6", "--temperature", "0", "--json", "--device", "cpu")
	require.NoError(t, err)
	wantIDs := refByteLevelBPE(t, model, prompt, 0)
	require.Equal(t, float64(len(wantIDs)), res["prompt_tokens"], "BOS and the prompt's tokens, counted by an independent BPE: %v", res)
	require.Positive(t, res["tokens"])
	_, res, err = run(t, "tokenize", "--model", model, "--text", prompt)
	require.NoError(t, err)
	var gotIDs []int
	for _, v := range res["ids"].([]any) {
		gotIDs = append(gotIDs, int(v.(float64)))
	}
	require.Equal(t, wantIDs, gotIDs)

	// The adapter changes the model: its loss on the data it was trained on differs from the base
	// model's, and the merged model's equals it.
	evalLoss := func(args ...string) float64 {
		_, res, err := run(t, append([]string{"eval", "--data", data, "--device", "cpu"}, args...)...)
		require.NoError(t, err)
		return res["loss"].(float64)
	}
	baseLoss, adapterLoss := evalLoss("--model", model), evalLoss("--model", model, "--adapter", adapter)
	require.Greater(t, math.Abs(baseLoss-adapterLoss), 1e-3, "base %v, with the adapter %v", baseLoss, adapterLoss)

	// The adapter merged into a new model folder generates what the base with the adapter does.
	merged := filepath.Join(dir, "merged")
	_, res, err = run(t, "merge", "--model", model, "--adapter", adapter, "--out", merged)
	require.NoError(t, err)
	require.Positive(t, res["changed_tensors"])
	gen := func(args ...string) string {
		_, res, err := run(t, append([]string{"generate", "--prompt", "What does the cow say?", "--max-tokens", "8", "--temperature", "0", "--json", "--device", "cpu"}, args...)...)
		require.NoError(t, err)
		return res["text"].(string)
	}
	require.Equal(t, gen("--model", model, "--adapter", adapter), gen("--model", merged))
	require.InDelta(t, adapterLoss, evalLoss("--model", merged), 1e-4*adapterLoss)
	_, _, err = run(t, "merge", "--model", model, "--adapter", filepath.Join(dir, "nowhere"), "--out", filepath.Join(dir, "m2"))
	require.Error(t, err)

	// Two adapters combined with weights 0.5 and 0.5 of the same adapter are that adapter.
	combined := filepath.Join(dir, "combined")
	_, res, err = run(t, "combine", "--model", model, "--adapter", adapter+"=0.5", "--adapter", adapter+"=0.5", "--out", combined)
	require.NoError(t, err)
	require.Equal(t, float64(2), res["adapters"])
	require.Equal(t, gen("--model", model, "--adapter", adapter), gen("--model", model, "--adapter", combined))
	_, _, err = run(t, "combine", "--model", model, "--adapter", adapter, "--out", combined)
	require.ErrorContains(t, err, "DIR=WEIGHT")

	url, stop := startServe(t, "--model", model, "--adapter", "a="+adapter, "--adapter", "b="+adapter,
		"--port", "0", "--device", "cpu", "--max-concurrent", "2", "--context", "128")
	var wg sync.WaitGroup
	var mu sync.Mutex
	firstLogprob := map[string]float64{} // of the first generated token, by served model
	for _, m := range []string{"model", "model:a", "model:b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":%q,"prompt":"What does the cow say?","max_tokens":6,"temperature":0,"logprobs":1}`, m)
			resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
			if !assertNoError(t, err) {
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var r struct {
				Choices []struct {
					Logprobs struct {
						TokenLogprobs []float64 `json:"token_logprobs"`
					} `json:"logprobs"`
				} `json:"choices"`
			}
			if !assertNoError(t, json.Unmarshal(b, &r)) {
				return
			}
			if resp.StatusCode != 200 || len(r.Choices) != 1 || len(r.Choices[0].Logprobs.TokenLogprobs) == 0 {
				t.Errorf("%s: %d %s", m, resp.StatusCode, b)
				return
			}
			mu.Lock()
			firstLogprob[m] = r.Choices[0].Logprobs.TokenLogprobs[0]
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Len(t, firstLogprob, 3)
	require.InDelta(t, firstLogprob["model:a"], firstLogprob["model:b"], 1e-5, "a and b are the same adapter")
	require.Greater(t, math.Abs(firstLogprob["model"]-firstLogprob["model:a"]), 1e-4, "the adapter changes the base model's answer: %v", firstLogprob)
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model":"model","prompt":"`+strings.Repeat("a ", 200)+`"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 400, resp.StatusCode, "a prompt over --context")

	last := stop()
	require.Equal(t, "model", last["served"])

	// Adapters over HTTP: only folders under --adapter-dir, and only with it.
	loadAdapter := func(url, body string) (int, string) {
		resp, err := http.Post(url+"/v1/adapters", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	url, stop = startServe(t, "--model", model, "--port", "0", "--device", "cpu", "--adapter-dir", dir)
	code, body := loadAdapter(url, `{"name":"c","path":"adapter"}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, withAdapterText(t, url, "model:c"), gen("--model", model, "--adapter", adapter, "--max-tokens", "6"))
	code, body = loadAdapter(url, `{"name":"d","path":"../`+filepath.Base(dir)+`/adapter"}`)
	require.Equal(t, 400, code, body)
	code, body = loadAdapter(url, `{"name":"d","path":"`+adapter+`"}`)
	require.Equal(t, 400, code, body)
	stop()
	url, stop = startServe(t, "--model", model, "--port", "0", "--device", "cpu")
	code, body = loadAdapter(url, `{"name":"c","path":"adapter"}`)
	require.Equal(t, 403, code, body)
	require.Contains(t, body, "--adapter-dir")
	stop()

	// A single-adapter deployment: the adapter merged at load answers as the adapter does.
	complete := func(url, m string) string {
		body := fmt.Sprintf(`{"model":%q,"prompt":"What does the cow say?","max_tokens":6,"temperature":0}`, m)
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var r map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
		require.Equal(t, 200, resp.StatusCode, "%v", r)
		return r["choices"].([]any)[0].(map[string]any)["text"].(string)
	}
	url, stop = startServe(t, "--model", model, "--adapter", "a="+adapter, "--port", "0", "--device", "cpu")
	withAdapter := complete(url, "model:a")
	stop()
	url, stop = startServe(t, "--model", model, "--merge", adapter, "--port", "0", "--device", "cpu")
	require.Equal(t, withAdapter, complete(url, "model"))
	stop()
}

// withAdapterText is the greedy 6-token completion of the usual prompt by a served model.
func withAdapterText(t *testing.T, url, m string) string {
	body := fmt.Sprintf(`{"model":%q,"prompt":"What does the cow say?","max_tokens":6,"temperature":0}`, m)
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var r map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, 200, resp.StatusCode, "%v", r)
	return r["choices"].([]any)[0].(map[string]any)["text"].(string)
}

// Bound beyond loopback without a key, the server warns.
func TestServeWarnsWithoutKeyBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	_, _, err := run(t, "init-model", "--out", model)
	require.NoError(t, err)
	_, stop, out := startServeOut(t, "--model", model, "--port", "0", "--device", "cpu", "--host", "0.0.0.0")
	stop()
	require.Contains(t, out(), "warning: serving on 0.0.0.0, beyond this machine, without --api-key")
	_, stop, out = startServeOut(t, "--model", model, "--port", "0", "--device", "cpu", "--host", "0.0.0.0", "--api-key", "k")
	stop()
	require.NotContains(t, out(), "warning")
}

// startServe runs lathe serve in-process and returns its address and a function that stops it
// and returns its last line.
func startServe(t *testing.T, args ...string) (string, func() map[string]any) {
	t.Helper()
	url, stop, _ := startServeOut(t, args...)
	return url, stop
}

// startServeOut is startServe that also returns what the command wrote.
func startServeOut(t *testing.T, args ...string) (string, func() map[string]any, func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	out := &lockedBuffer{}
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs(append([]string{"serve"}, args...))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	addr := regexp.MustCompile(`on http://(\S+) `)
	require.Eventually(t, func() bool { return addr.MatchString(out.String()) }, 10*time.Second, 10*time.Millisecond, out.String())
	return "http://" + addr.FindStringSubmatch(out.String())[1], func() map[string]any {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Fatal("serve did not stop")
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var last map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last), out.String())
		return last
	}, out.String
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// A model without a chat template: chat is refused, saying how to add one, and
// --chat-template adds it.
func TestServeChatTemplateFlag(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	_, _, err := run(t, "init-model", "--out", model)
	require.NoError(t, err)
	cfgPath := filepath.Join(model, "tokenizer_config.json")
	b, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(b, &cfg))
	delete(cfg, "chat_template")
	b, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfgPath, b, 0o644))
	tmpl := filepath.Join(dir, "chat.jinja")
	require.NoError(t, os.WriteFile(tmpl, []byte("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"), 0o644))
	chat := func(url string) (int, string) {
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"model","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	url, stop := startServe(t, "--model", model, "--port", "0", "--device", "cpu")
	code, body := chat(url)
	stop()
	require.Equal(t, 400, code, body)
	require.Contains(t, body, "--chat-template FILE")
	url, stop = startServe(t, "--model", model, "--port", "0", "--device", "cpu", "--chat-template", tmpl)
	code, body = chat(url)
	stop()
	require.Equal(t, 200, code, body)
	_, _, err = run(t, "serve", "--model", model, "--port", "0", "--device", "cpu", "--chat-template", filepath.Join(dir, "none.jinja"))
	require.ErrorContains(t, err, "--chat-template")
}
