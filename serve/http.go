package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// Server is an OpenAI-compatible HTTP API over one base model and its adapters. The model field of
// a request names the base model ("NAME") or an adapter on it ("NAME:ADAPTER").
//
//	GET    /v1/models              the base model and every adapter
//	POST   /v1/completions         {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs", "stream", "stream_options", ...}
//	POST   /v1/chat/completions    {"model", "messages": [{"role", "content"}], ... "stream": true for server-sent events}
//	GET    /v1/adapters            the loaded adapters
//	POST   /v1/adapters            {"name", "path"}: load (or hot-swap) an adapter; {"name", "combine":
//	                               [{"path", "weight"}, ...]}: serve a weighted composition of LoRA adapters
//	DELETE /v1/adapters/{name}     unload it
//	GET    /metrics                counters in Prometheus' text format
type Server struct {
	Name     string // the base model's name in requests and /v1/models
	Gen      *Generator
	Adapters *Registry
	// APIKey, if set, is required as "Authorization: Bearer KEY".
	APIKey string
	// MaxBodyBytes limits a request body (default 1 MiB).
	MaxBodyBytes int64
	// MaxConcurrent limits the requests generating at once (default 4): the generator decodes
	// them together.
	MaxConcurrent int
	// MaxWaiting requests beyond MaxConcurrent wait for a slot (default 0); more get 429.
	MaxWaiting int
	// Log receives one line per failed request (default: the standard logger).
	Log *log.Logger

	once  sync.Once
	slots chan struct{}
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.MaxBodyBytes == 0 {
			s.MaxBodyBytes = 1 << 20
		}
		if s.MaxConcurrent <= 0 {
			s.MaxConcurrent = 4
		}
		if s.Log == nil {
			s.Log = log.Default()
		}
		if s.Adapters == nil {
			s.Adapters = NewRegistry(nil)
		}
		s.slots = make(chan struct{}, s.MaxConcurrent+max(s.MaxWaiting, 0))
		if s.Gen.Slots == 0 {
			s.Gen.Slots = s.MaxConcurrent
		}
		s.Adapters.OnRetire(s.Gen.Retire)
	})
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	s.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/completions", s.completions)
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("GET /v1/adapters", s.listAdapters)
	mux.HandleFunc("POST /v1/adapters", s.loadAdapter)
	mux.HandleFunc("DELETE /v1/adapters/{name}", s.unloadAdapter)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.guard(mux)
}

// guard authenticates, limits the body and turns a panic into a 500: a request never crashes
// the server.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				s.Log.Printf("serve: panic on %s %s: %v", r.Method, r.URL.Path, p)
				apiError(w, http.StatusInternalServerError, "server_error", "internal error")
			}
		}()
		if s.APIKey != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.APIKey)) != 1 {
				apiError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong API key")
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	var e errorBody
	e.Error.Message, e.Error.Type = msg, typ
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type entry struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		OwnedBy string `json:"owned_by"`
		Created int64  `json:"created"`
	}
	list := []entry{{s.Name, "model", "lathe", 0}}
	for _, a := range s.Adapters.Names() {
		list = append(list, entry{s.Name + ":" + a, "model", "lathe", 0})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

// commonRequest holds the fields completions and chat share.
type commonRequest struct {
	Model             string          `json:"model"`
	MaxTokens         *int            `json:"max_tokens"`
	MaxCompletion     *int            `json:"max_completion_tokens"`
	Temperature       *float64        `json:"temperature"`
	TopP              *float64        `json:"top_p"`
	TopK              *int            `json:"top_k"`
	Seed              *uint64         `json:"seed"`
	RepetitionPenalty *float64        `json:"repetition_penalty"`
	PresencePenalty   *float64        `json:"presence_penalty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty"`
	Stop              json.RawMessage `json:"stop"`
	Stream            bool            `json:"stream"`
	StreamOptions     *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N *int `json:"n"`
	// Logprobs is an int (0-5 alternatives) for completions, a bool for chat, which gives the
	// number of alternatives in TopLogprobs.
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"`
}

func (c *commonRequest) sampling(chat bool) (Sampling, error) {
	sp := DefaultSampling()
	sp.Temperature = 1 // OpenAI's default
	if c.MaxTokens != nil {
		sp.MaxTokens = *c.MaxTokens
	}
	if c.MaxCompletion != nil {
		sp.MaxTokens = *c.MaxCompletion
	}
	if c.Temperature != nil {
		sp.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		sp.TopP = *c.TopP
	}
	if c.TopK != nil {
		sp.TopK = *c.TopK
	}
	if c.Seed != nil {
		sp.Seed = *c.Seed
	}
	if c.RepetitionPenalty != nil {
		sp.RepetitionPenalty = *c.RepetitionPenalty
	}
	if c.PresencePenalty != nil {
		sp.PresencePenalty = *c.PresencePenalty
	}
	if c.FrequencyPenalty != nil {
		sp.FrequencyPenalty = *c.FrequencyPenalty
	}
	if len(c.Stop) > 0 && string(c.Stop) != "null" {
		var one string
		if err := json.Unmarshal(c.Stop, &one); err == nil {
			sp.Stop = []string{one}
		} else if err := json.Unmarshal(c.Stop, &sp.Stop); err != nil {
			return sp, fmt.Errorf("stop must be a string or an array of strings")
		}
	}
	if c.N != nil && (*c.N < 1 || *c.N > 8) {
		return sp, fmt.Errorf("n must be in [1, 8]")
	}
	if c.N != nil && *c.N > 1 && c.Stream {
		return sp, fmt.Errorf("n > 1 is not supported with stream")
	}
	if len(c.Logprobs) > 0 && string(c.Logprobs) != "null" {
		if chat {
			if err := json.Unmarshal(c.Logprobs, &sp.Logprobs); err != nil {
				return sp, fmt.Errorf("logprobs must be a boolean")
			}
			if c.TopLogprobs != nil {
				sp.TopLogprobs = *c.TopLogprobs
			}
		} else {
			if err := json.Unmarshal(c.Logprobs, &sp.TopLogprobs); err != nil || sp.TopLogprobs < 0 || sp.TopLogprobs > 5 {
				return sp, fmt.Errorf("logprobs must be an integer in [0, 5]")
			}
			sp.Logprobs = true
		}
	} else if c.TopLogprobs != nil {
		return sp, fmt.Errorf("top_logprobs needs logprobs: true")
	}

	return sp, sp.Validate()
}

// resolve finds the adapter a model field names.
func (s *Server) resolve(name string) (model.Adapter, int, error) {
	base, adapter, hasAdapter := strings.Cut(name, ":")
	if base != s.Name {
		if a, ok := s.Adapters.Get(name); ok && !hasAdapter { // a bare adapter name is accepted too
			return a, 0, nil
		}
		return nil, http.StatusNotFound, fmt.Errorf("model %q not found (have %q and %q:ADAPTER)", name, s.Name, s.Name)
	}
	if !hasAdapter {
		return nil, 0, nil
	}
	a, ok := s.Adapters.Get(adapter)
	if !ok {
		return nil, http.StatusNotFound, fmt.Errorf("adapter %q is not loaded (have: %s)", adapter, strings.Join(s.Adapters.Names(), ", "))
	}
	return a, 0, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("request body over %d bytes", tooBig.Limit))
		} else {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		}
		return false
	}
	return true
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req struct {
		commonRequest
		Prompt json.RawMessage `json:"prompt"`
	}
	if !decode(w, r, &req) {
		return
	}
	var prompt string
	if len(req.Prompt) > 0 {
		if err := json.Unmarshal(req.Prompt, &prompt); err != nil {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "prompt must be a string")
			return
		}
	}
	s.run(w, r, req.commonRequest, Request{Prompt: prompt}, false)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		commonRequest
		Messages []tokenizer.Message `json:"messages"`
	}
	if !decode(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "messages must not be empty")
		return
	}
	for _, m := range req.Messages {
		if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
			apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("unknown role %q", m.Role))
			return
		}
	}
	if !s.Gen.Tok.HasChatTemplate() {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "the model has no chat template: use /v1/completions")
		return
	}
	s.run(w, r, req.commonRequest, Request{Messages: req.Messages}, true)
}

func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// run validates and runs a generation, answering as one object or as server-sent events.
func (s *Server) run(w http.ResponseWriter, r *http.Request, c commonRequest, req Request, chat bool) {
	sp, err := c.sampling(chat)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	req.Sampling = sp
	adapter, status, err := s.resolve(c.Model)
	if err != nil {
		apiError(w, status, "invalid_request_error", err.Error())
		return
	}
	req.Adapter = adapter
	ids, err := s.Gen.PromptIDs(req)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	if limit := s.Gen.Limit(); len(ids) >= limit {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("the prompt has %d tokens, the context holds %d", len(ids), limit))
		return
	}
	// n choices are n generations (seeds seed, seed+1, ...), decoded together, each taking a slot.
	n := 1
	if c.N != nil {
		n = *c.N
	}
	for i := range n {
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		default:
			for range i {
				<-s.slots
			}
			apiError(w, http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf("%d requests are already running or waiting; retry later", cap(s.slots)))
			return
		}
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	object := "text_completion"
	if chat {
		id, object = newID("chatcmpl-"), "chat.completion"
	}
	if !c.Stream {
		results := make([]Result, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ri := req
				ri.Sampling.Seed += uint64(i)
				results[i], errs[i] = s.Gen.Generate(r.Context(), ri, nil)
			}()
		}
		wg.Wait()
		choices := make([]any, n)
		completion := 0
		for i, res := range results {
			if errs[i] != nil {
				s.fail(w, r, errs[i])
				return
			}
			choice := map[string]any{"index": i, "finish_reason": res.FinishReason, "logprobs": nil}
			if chat {
				choice["message"] = map[string]string{"role": "assistant", "content": res.Text}
			} else {
				choice["text"] = res.Text
			}
			if sp.Logprobs {
				choice["logprobs"] = logprobsBody(res.Logprobs, chat)
			}
			choices[i] = choice
			completion += res.Tokens
		}
		prompt := results[0].PromptTokens
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": object, "created": created, "model": c.Model, "choices": choices,
			"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
		})
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, "server_error", "streaming is not supported by this connection")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if chat {
		object = "chat.completion.chunk"
	}
	offset := 0 // of the chunk's text in the whole completion (completions' text_offset)
	send := func(text string, lps []TokenLogprob, finish any, first bool) error {
		choice := map[string]any{"index": 0, "finish_reason": finish}
		if req.Sampling.Logprobs && finish == nil {
			body := logprobsBody(lps, chat)
			if m, ok := body.(map[string]any); ok && !chat {
				offsets := m["text_offset"].([]int)
				for i := range offsets {
					offsets[i] += offset
				}
			}
			choice["logprobs"] = body
		}
		offset += len(text)
		if chat {
			delta := map[string]string{}
			if first {
				delta["role"] = "assistant"
			}
			if text != "" || finish == nil {
				delta["content"] = text
			}
			choice["delta"] = delta
		} else {
			choice["text"] = text
		}
		b, _ := json.Marshal(map[string]any{"id": id, "object": object, "created": created, "model": c.Model, "choices": []any{choice}})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	first := true
	res, err := s.Gen.Stream(r.Context(), req, func(ch Chunk) error {
		err := send(ch.Text, ch.Logprobs, nil, first)
		first = false
		return err
	})
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.Log.Printf("serve: %s %s: %v", r.Method, r.URL.Path, err)
			b, _ := json.Marshal(errorBodyOf(err))
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		return
	}
	_ = send("", nil, res.FinishReason, first)
	if c.StreamOptions != nil && c.StreamOptions.IncludeUsage {
		// OpenAI's last chunk: no choices, the usage of the whole request.
		b, _ := json.Marshal(map[string]any{"id": id, "object": object, "created": created, "model": c.Model, "choices": []any{},
			"usage": map[string]int{"prompt_tokens": res.PromptTokens, "completion_tokens": res.Tokens, "total_tokens": res.PromptTokens + res.Tokens}})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	flusher.Flush()
}

func errorBodyOf(err error) errorBody {
	var e errorBody
	e.Error.Message, e.Error.Type = err.Error(), "server_error"
	return e
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.Log.Printf("serve: %s %s: %v", r.Method, r.URL.Path, err)
	apiError(w, http.StatusInternalServerError, "server_error", err.Error())
}

func (s *Server) listAdapters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": s.Adapters.Names()})
}

func (s *Server) loadAdapter(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name    string `json:"name"`
		Path    string `json:"path"`
		Combine []struct {
			Path   string  `json:"path"`
			Weight float64 `json:"weight"`
		} `json:"combine"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" || (req.Path == "") == (len(req.Combine) == 0) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", `name and either path or combine ([{"path", "weight"}, ...]) are required`)
		return
	}
	var err error
	if req.Path != "" {
		err = s.Adapters.Load(req.Name, req.Path)
	} else {
		var dirs []string
		var weights []float64
		for _, c := range req.Combine {
			dirs, weights = append(dirs, c.Path), append(weights, c.Weight)
		}
		err = s.Adapters.LoadCombined(req.Name, dirs, weights)
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"loaded": req.Name, "model": s.Name + ":" + req.Name})
}

func (s *Server) unloadAdapter(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.Adapters.Unload(name) {
		apiError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("adapter %q is not loaded", name))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"unloaded": name})
}

// metrics writes the generator's counters and the server's gauges in Prometheus' text format.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	st := s.Gen.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range []struct {
		name, kind, help string
		v                int
	}{
		{"lathe_requests", "gauge", "Requests generating or waiting for a slot.", len(s.slots)},
		{"lathe_adapters_loaded", "gauge", "Adapters being served.", len(s.Adapters.Names())},
		{"lathe_prefills_total", "counter", "Prompts prefilled.", st.Prefills},
		{"lathe_prefill_steps_total", "counter", "Prefill steps (several prompts may share one).", st.PrefillSteps},
		{"lathe_decode_steps_total", "counter", "Decode steps.", st.DecodeSteps},
		{"lathe_decode_tokens_total", "counter", "Tokens produced by decode steps.", st.DecodeTokens},
		{"lathe_decode_batch_max", "gauge", "Most requests decoded in one step.", st.MaxBatch},
		{"lathe_adapters_retired_total", "counter", "Unloaded or replaced adapters freed.", st.Retired},
		{"lathe_prompt_tokens_reused_total", "counter", "Prompt tokens whose keys and values a request found in its slot.", st.ReusedTokens},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.v)
	}
}

// logprobsBody formats log-probabilities as OpenAI does: chat's content list, or completions'
// parallel lists.
func logprobsBody(lps []TokenLogprob, chat bool) any {
	if chat {
		entry := func(lp TokenLogprob) map[string]any {
			return map[string]any{"token": lp.Token, "logprob": lp.Logprob, "bytes": []byte(lp.Token)}
		}
		content := make([]map[string]any, len(lps))
		for i, lp := range lps {
			e := entry(lp)
			top := make([]map[string]any, len(lp.Top))
			for k, t := range lp.Top {
				top[k] = entry(t)
			}
			e["top_logprobs"] = top
			content[i] = e
		}
		return map[string]any{"content": content}
	}
	tokens, lp, top, offset := []string{}, []float64{}, []map[string]float64{}, []int{}
	at := 0
	for _, l := range lps {
		tokens, lp, offset = append(tokens, l.Token), append(lp, l.Logprob), append(offset, at)
		at += len(l.Token)
		alt := map[string]float64{}
		for _, t := range l.Top {
			alt[t.Token] = t.Logprob
		}
		top = append(top, alt)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offset}
}
