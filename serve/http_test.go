package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
)

// scaleAdapter multiplies the output of two layers by a constant: a stand-in adapter whose effect
// is easy to see, IA3-like in a pool.
type scaleAdapter struct {
	s    float32
	vecs map[string]*engine.Tensor
}

func newScaleAdapter(t *testing.T, m *model.Model, s float32) *scaleAdapter {
	a := &scaleAdapter{s: s, vecs: map[string]*engine.Tensor{}}
	mods := map[string]int{fmt.Sprintf("model.layers.%d.mlp.down_proj", min(4, m.Cfg.NumLayers-1)): m.Cfg.HiddenSize}
	if !m.Cfg.TieWordEmbeddings {
		mods["lm_head"] = m.Cfg.VocabSize
	}
	for name, n := range mods {
		v := make([]float32, n)
		for i := range v {
			v[i] = s
		}
		x, err := engine.FromFloat32(m.Backend, engine.Shape{n}, v)
		require.NoError(t, err)
		t.Cleanup(x.Release)
		a.vecs[name] = x
	}
	return a
}

func (a *scaleAdapter) Layers() []model.AdapterLayer {
	var ls []model.AdapterLayer
	for name, v := range a.vecs {
		ls = append(ls, model.AdapterLayer{Module: name, Vec: v})
	}
	return ls
}

func (a *scaleAdapter) LinearFunc(g *engine.Graph, _ *engine.Node) model.LinearFunc {
	return func(g *engine.Graph, l *model.Linear, x *engine.Node) *engine.Node {
		y := l.Forward(g, x)
		if a.vecs[l.Name] != nil {
			return g.Scale(y, a.s)
		}
		return y
	}
}

func (*scaleAdapter) Bind(*engine.Program) error { return nil }

func (a *scaleAdapter) Signature() string { return fmt.Sprint("scale ", a.s) }

// testAdapterDir is an adapter directory whose folders neg and half hold the scale of a
// scaleAdapter.
func testAdapterDir(t *testing.T) string {
	dir := t.TempDir()
	for name, scale := range map[string]string{"neg": "-1", "half": "0.5"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "scale"), []byte(scale), 0o644))
	}
	return dir
}

// scaleLoader loads the folders of testAdapterDir; loads counts the loads.
func scaleLoader(t *testing.T, m *model.Model, loads *atomic.Int64) AdapterLoader {
	return func(dir string) (model.Adapter, error) {
		b, err := os.ReadFile(filepath.Join(dir, "scale"))
		if err != nil {
			return nil, fmt.Errorf("no adapter in %s", dir)
		}
		var s float32
		if _, err := fmt.Sscan(string(b), &s); err != nil {
			return nil, fmt.Errorf("bad scale %q", b)
		}
		if loads != nil {
			loads.Add(1)
		}
		return newScaleAdapter(t, m, s), nil
	}
}

func testServer(t *testing.T) (*Server, *httptest.Server) {
	g := stories(t)
	reg := NewRegistry(scaleLoader(t, g.Model, nil))
	s := &Server{Name: "stories", Gen: g, Adapters: reg, APIKey: "k3y", MaxBodyBytes: 4096, MaxConcurrent: 2, MaxWaiting: 1,
		AdapterDir: testAdapterDir(t), Log: log.New(io.Discard, "", 0)}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func call(t *testing.T, ts *httptest.Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer k3y")
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func TestHTTPCompletionsAndAdapters(t *testing.T) {
	s, ts := testServer(t)
	sp := DefaultSampling()
	sp.MaxTokens = 20
	want, err := s.Gen.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: sp}, nil)
	require.NoError(t, err)

	code, out := call(t, ts, "POST", "/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":20,"temperature":0}`)
	require.Equal(t, 200, code, "%v", out)
	choice := out["choices"].([]any)[0].(map[string]any)
	require.Equal(t, want.Text, choice["text"])
	require.Equal(t, "length", choice["finish_reason"])
	require.Equal(t, float64(20), out["usage"].(map[string]any)["completion_tokens"])
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":5,"temperature":0,"logprobs":2}`)
	require.Equal(t, 200, code, "%v", out)
	lp := out["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)
	// n = 2 sampled choices (seeds 7 and 8) are the two single requests with those seeds.
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":12,"temperature":1,"seed":7,"n":2}`)
	require.Equal(t, 200, code, "%v", out)
	require.Len(t, out["choices"], 2)
	for i, seed := range []int{7, 8} {
		_, one := call(t, ts, "POST", "/v1/completions", fmt.Sprintf(`{"model":"stories","prompt":"Once upon a time","max_tokens":12,"temperature":1,"seed":%d}`, seed))
		require.Equal(t, one["choices"].([]any)[0].(map[string]any)["text"], out["choices"].([]any)[i].(map[string]any)["text"])
	}
	// The values are the generator's (checked against the model's log-softmax in TestLogprobs).
	lsp := sp
	lsp.MaxTokens, lsp.Logprobs, lsp.TopLogprobs = 5, true, 2
	wantLP, err := s.Gen.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: lsp}, nil)
	require.NoError(t, err)
	require.Len(t, wantLP.Logprobs, 5)
	require.Len(t, lp["tokens"], 5)
	require.Len(t, lp["token_logprobs"], 5)
	offset := 0
	for i, w := range wantLP.Logprobs {
		require.Equal(t, w.Token, lp["tokens"].([]any)[i])
		require.InDelta(t, w.Logprob, lp["token_logprobs"].([]any)[i], 1e-9)
		require.Negative(t, w.Logprob)
		require.EqualValues(t, offset, lp["text_offset"].([]any)[i])
		offset += len(w.Token)
		top := lp["top_logprobs"].([]any)[i].(map[string]any)
		require.Len(t, top, 2)
		for _, alt := range w.Top {
			require.InDelta(t, alt.Logprob, top[alt.Token], 1e-9, "alternative %q", alt.Token)
		}
	}

	// Streaming: the events add up to the same text, then the usage, then [DONE].
	req, _ := http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(`{"model":"stories","prompt":"Once upon a time","max_tokens":20,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`))
	req.Header.Set("Authorization", "Bearer k3y")
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	done := false
	var usage map[string]any
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &ev))
		if u, ok := ev["usage"]; ok {
			usage = u.(map[string]any)
			require.Empty(t, ev["choices"])
			continue
		}
		require.Nil(t, usage, "the usage comes last")
		text.WriteString(ev["choices"].([]any)[0].(map[string]any)["text"].(string))
	}
	resp.Body.Close()
	require.True(t, done)
	require.Equal(t, float64(20), usage["completion_tokens"])
	require.Equal(t, want.Text, text.String())

	// Streaming with logprobs: each chunk carries its tokens', which spell the text.
	req, _ = http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(`{"model":"stories","prompt":"Once upon a time","max_tokens":20,"temperature":0,"stream":true,"logprobs":1}`))
	req.Header.Set("Authorization", "Bearer k3y")
	req.Header.Set("Content-Type", "application/json")
	resp, err = ts.Client().Do(req)
	require.NoError(t, err)
	var spelled strings.Builder
	tokens := 0
	sc = bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &ev))
		choice := ev["choices"].([]any)[0].(map[string]any)
		if lp, ok := choice["logprobs"].(map[string]any); ok {
			for _, tok := range lp["tokens"].([]any) {
				spelled.WriteString(tok.(string))
				tokens++
			}
		}
	}
	resp.Body.Close()
	require.Equal(t, 20, tokens)
	require.Equal(t, want.Text, spelled.String())

	// Adapters: load two, list them, and run requests for both at once.
	code, out = call(t, ts, "POST", "/v1/adapters", `{"name":"neg","path":"neg"}`)
	require.Equal(t, 200, code, "%v", out)
	code, _ = call(t, ts, "POST", "/v1/adapters", `{"name":"half","path":"half"}`)
	require.Equal(t, 200, code)
	code, out = call(t, ts, "GET", "/v1/models", "")
	require.Equal(t, 200, code)
	var ids []string
	for _, m := range out["data"].([]any) {
		ids = append(ids, m.(map[string]any)["id"].(string))
	}
	require.Equal(t, []string{"stories", "stories:half", "stories:neg"}, ids)

	expect := map[string]string{}
	for name, a := range map[string]model.Adapter{"neg": newScaleAdapter(t, s.Gen.Model, -1), "half": newScaleAdapter(t, s.Gen.Model, 0.5)} {
		r, err := s.Gen.Generate(context.Background(), Request{Prompt: "Once upon a time", Sampling: sp, Adapter: a}, nil)
		require.NoError(t, err)
		expect[name] = r.Text
	}
	require.NotEqual(t, expect["neg"], want.Text, "the adapter changes the output")
	var wg sync.WaitGroup
	got := map[string]string{}
	var mu sync.Mutex
	// Three requests for two slots: one waits for a slot (MaxWaiting), none is refused.
	expect[""] = want.Text
	for _, name := range []string{"neg", "half", ""} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := "stories"
			if name != "" {
				m += ":" + name
			}
			code, out := call(t, ts, "POST", "/v1/completions", `{"model":"`+m+`","prompt":"Once upon a time","max_tokens":20,"temperature":0}`)
			if code == 200 {
				mu.Lock()
				got[name] = out["choices"].([]any)[0].(map[string]any)["text"].(string)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, expect, got, "concurrent requests each get their own adapter's output")

	code, _ = call(t, ts, "DELETE", "/v1/adapters/neg", "")
	require.Equal(t, 200, code)
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories:neg","prompt":"x"}`)
	require.Equal(t, 404, code)
	require.Contains(t, out["error"].(map[string]any)["message"], `the model "stories:neg" does not exist; this server has: stories, stories:half`)

	// The counters, in Prometheus' text format.
	req, err = http.NewRequest("GET", ts.URL+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer k3y")
	resp, err = ts.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	st := s.Gen.Stats()
	require.Contains(t, string(body), "# TYPE lathe_decode_tokens_total counter\n")
	require.Contains(t, string(body), fmt.Sprintf("\nlathe_decode_tokens_total %d\n", st.DecodeTokens))
	require.Contains(t, string(body), "\nlathe_adapters_loaded 1\n")
	require.Contains(t, string(body), fmt.Sprintf("\nlathe_sample_fallbacks_total %d\n", st.SampleFallbacks))
	require.Positive(t, st.DecodeTokens)
}

func TestHTTPBadRequests(t *testing.T) {
	s, ts := testServer(t)
	for _, c := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", "/v1/completions", `{"model":"stories","prompt":`, 400, "malformed JSON"},
		{"POST", "/v1/completions", `{"model":"gpt-4","prompt":"hi"}`, 404, `the model "gpt-4" does not exist; this server has: stories`},
		{"POST", "/v1/completions", `{"model":"gpt-4","prompt":"hi","temperature":-1}`, 404, `the model "gpt-4" does not exist`},
		{"POST", "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`, 404, `the model "gpt-4" does not exist`},
		{"POST", "/v1/chat/completions", `{"model":"stories:none","messages":[]}`, 404, `the model "stories:none" does not exist`},
		{"GET", "/v1/models/gpt-4", ``, 404, `the model "gpt-4" does not exist`},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","temperature":2.5}`, 400, "temperature 2.5 is not in [0, 2]"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","top_p":0}`, 400, "top_p"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","suffix":"end"}`, 400, "suffix is not supported"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","best_of":3}`, 400, "best_of is not supported"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","echo":true}`, 400, "echo is not supported"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","logit_bias":{"5":10}}`, 400, "logit_bias is not supported"},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, 400, "tools is not supported"},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`, 400, "response_format is not supported"},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"tool","content":"hi"}]}`, 400, `role "tool" is not supported`},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, `content part type "image_url" is not supported`},
		{"POST", "/v1/completions", `{"model":"stories","prompt":[1, 99999]}`, 400, "token id 99999 at position 1 is not in the vocabulary"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":[]}`, 400, "prompt must not be empty"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":{"a":1}}`, 400, "prompt must be a string, an array of strings"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":["a","b","c"],"n":2}`, 400, "6 generations in one request, this server runs at most 3"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","temperature":-1}`, 400, "temperature"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","top_p":2}`, 400, "top_p"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","max_tokens":0}`, 400, "max_tokens"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","stop":5}`, 400, "stop must be"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","n":9}`, 400, "n must be in [1, 8]"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","logprobs":9}`, 400, "logprobs must be an integer"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"hi","top_logprobs":2}`, 400, "top_logprobs needs logprobs"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"` + strings.Repeat("a ", 1500) + `"}`, 400, "the context holds 512"},
		{"POST", "/v1/completions", `{"model":"stories","prompt":"` + strings.Repeat("a", 5000) + `"}`, 413, "over 4096 bytes"},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":"hi"}]}`, 400, "no chat template"},
		{"POST", "/v1/chat/completions", `{"model":"stories","messages":[]}`, 400, "messages must not be empty"},
		{"POST", "/v1/adapters", `{"name":"x y","path":"neg"}`, 400, "adapter name"},
		{"POST", "/v1/adapters", `{"name":"z","path":"nowhere"}`, 400, "not an adapter folder under the server's adapter directory"},
		{"POST", "/v1/adapters", `{"name":"c","combine":[{"path":"neg","weight":1}]}`, 400, "cannot combine"},
		{"POST", "/v1/adapters", `{"name":"c","path":"neg","combine":[{"path":"neg","weight":1}]}`, 400, "either path or combine"},
		{"DELETE", "/v1/adapters/none", ``, 404, "not loaded"},
		{"GET", "/v2/other", ``, 404, "no route"},
	} {
		code, out := call(t, ts, c.method, c.path, c.body)
		require.Equal(t, c.code, code, "%s %s", c.path, c.body)
		e := out["error"].(map[string]any)
		require.Contains(t, e["message"], c.msg)
		require.NotEmpty(t, e["type"])
	}
	// No key, wrong key.
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 401, resp.StatusCode)
	req, _ := http.NewRequest("GET", ts.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err = ts.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 401, resp.StatusCode)
	// Full: every slot taken → 429.
	for i := 0; i < cap(s.slots); i++ {
		s.slots <- struct{}{}
	}
	code, out := call(t, ts, "POST", "/v1/completions", `{"model":"stories","prompt":"hi","max_tokens":2}`)
	require.Equal(t, 429, code)
	require.Equal(t, "rate_limit_error", out["error"].(map[string]any)["type"])
	for i := 0; i < cap(s.slots); i++ {
		<-s.slots
	}
	code, _ = call(t, ts, "POST", "/v1/completions", `{"model":"stories","prompt":"hi","max_tokens":2}`)
	require.Equal(t, 200, code, "the server still answers")
}
