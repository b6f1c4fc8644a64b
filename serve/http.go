//go:build !lathe_lite

package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/model"
)

// Server is an OpenAI-compatible HTTP API over one base model and its adapters. The model field of
// a request names the base model ("NAME") or an adapter on it ("NAME:ADAPTER").
//
//	GET    /v1/models              the base model and every adapter
//	GET    /v1/models/{id}         one of them
//	POST   /v1/completions         {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs", "n", "stream", "stream_options", ...}
//	POST   /v1/chat/completions    {"model", "messages": [{"role", "content"}], ... "stream": true for server-sent events}
//	GET    /v1/adapters            the loaded adapters
//	POST   /v1/adapters            {"name", "path"}: load (or hot-swap) the adapter folder path under
//	                               AdapterDir; {"name", "combine": [{"path", "weight"}, ...]}: serve a
//	                               weighted composition of LoRA adapters
//	DELETE /v1/adapters/{name}     unload it
//	GET    /metrics                counters in Prometheus' text format
//
// Every request is checked before it is routed: its Host (DNS rebinding), its Origin (no
// cross-site use unless CORSOrigins names the site), its API key, and for POST a JSON content
// type (a cross-site form or text/plain POST never reaches a handler).
type Server struct {
	Name     string // the base model's name in requests and /v1/models
	Gen      *Generator
	Adapters *Registry
	// APIKey, if set, is required as "Authorization: Bearer KEY".
	APIKey string
	// AdapterDir is the folder POST /v1/adapters loads from, by names relative to it; empty:
	// loading over HTTP is off.
	AdapterDir string
	// Host is the address the server is bound to (empty: a loopback one); with AllowedHosts it
	// decides which Host headers are answered. Names resolve to addresses an attacker may choose (DNS
	// rebinding), so a name is answered only if it is "localhost" on a loopback server, Host
	// itself or one of AllowedHosts ("*": any).
	Host         string
	AllowedHosts []string
	// CORSOrigins are the web origins (scheme://host[:port]) whose pages may call the API
	// ("*": any); requests from other origins are refused.
	CORSOrigins []string
	// MaxBodyBytes limits a request body (default 1 MiB).
	MaxBodyBytes int64
	// MaxConcurrent limits the requests generating at once (default 4): the generator decodes
	// them together.
	MaxConcurrent int
	// MaxWaiting requests beyond MaxConcurrent wait for a slot (default 0); more get 429.
	MaxWaiting int
	// WriteTimeout bounds writing a whole answer once it is ready (default 30 s); TokenTimeout
	// bounds writing each event of a stream (default 30 s): a client that stops reading is cut
	// off, however long its generation runs.
	WriteTimeout, TokenTimeout time.Duration
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
		if s.WriteTimeout <= 0 {
			s.WriteTimeout = 30 * time.Second
		}
		if s.TokenTimeout <= 0 {
			s.TokenTimeout = 30 * time.Second
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
	mux.HandleFunc("GET /v1/models/{id}", s.modelByID)
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, false) })
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, true) })
	mux.HandleFunc("GET /v1/adapters", s.listAdapters)
	mux.HandleFunc("POST /v1/adapters", s.loadAdapter)
	mux.HandleFunc("DELETE /v1/adapters/{name}", s.unloadAdapter)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.guard(mux)
}

// guard checks the Host, the Origin, the key and the content type, limits the body and turns a
// panic into a 500: a request never crashes the server.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.Log.Printf("serve: panic on %s %s: %v", r.Method, r.URL.Path, p)
				apiError(w, http.StatusInternalServerError, "server_error", "internal error")
			}
		}()
		if !s.hostAllowed(r.Host) {
			apiError(w, http.StatusMisdirectedRequest, "invalid_request_error",
				fmt.Sprintf("host %q is not served here (start the server with --allowed-host %s to answer it)", r.Host, hostOnly(r.Host)))
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			if !s.corsAllowed(origin) {
				if !sameOrigin(origin, r.Host) {
					apiError(w, http.StatusForbidden, "invalid_request_error",
						fmt.Sprintf("cross-origin requests from %q are refused (start the server with --cors-origin %s to allow them)", origin, origin))
					return
				}
			} else {
				h := w.Header()
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
				if r.Method == http.MethodOptions {
					h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
					h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
					h.Set("Access-Control-Max-Age", "600")
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
		}
		if s.APIKey != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.APIKey)) != 1 {
				apiError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong API key")
				return
			}
		}
		if r.Method == http.MethodPost {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				apiError(w, http.StatusUnsupportedMediaType, "invalid_request_error", "Content-Type must be application/json")
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// hostOnly is the host of a Host header, without port or brackets, lower case.
func hostOnly(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
}

// hostAllowed reports whether a request's Host header names this server (see Server.Host).
func (s *Server) hostAllowed(hostport string) bool {
	host := hostOnly(hostport)
	if host == "" {
		return false
	}
	bound := hostOnly(s.Host)
	for _, a := range s.AllowedHosts {
		if a == "*" || hostOnly(a) == host {
			return true
		}
	}
	boundIP := net.ParseIP(bound)
	unbound := boundIP != nil && boundIP.IsUnspecified()
	loopback := bound == "" || bound == "localhost" || (boundIP != nil && boundIP.IsLoopback())
	if ip := net.ParseIP(host); ip != nil {
		// An address cannot be rebound: answer the bound one (any, if bound to all).
		return unbound || ip.Equal(boundIP) || (loopback && ip.IsLoopback())
	}
	return host == bound || (host == "localhost" && loopback)
}

func (s *Server) corsAllowed(origin string) bool {
	for _, o := range s.CORSOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether origin is the server's own (a page it served).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
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
	answer(w, &apiErr{status: status, typ: typ, msg: msg})
}

// answer writes an apiErr as OpenAI's error object.
func answer(w http.ResponseWriter, e *apiErr) {
	var b errorBody
	b.Error.Message, b.Error.Type = e.msg, e.typ
	if e.param != "" {
		b.Error.Param = &e.param
	}
	writeJSON(w, e.status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	OwnedBy string `json:"owned_by"`
	Created int64  `json:"created"`
}

// modelIDs lists the ids a client names models by: the base model, then NAME:ADAPTER for each
// adapter.
func (s *Server) modelIDs() []string {
	ids := []string{s.Name}
	for _, a := range s.Adapters.Names() {
		ids = append(ids, s.Name+":"+a)
	}
	return ids
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	var list []modelEntry
	for _, id := range s.modelIDs() {
		list = append(list, modelEntry{id, "model", "lathe", 0})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func (s *Server) modelByID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, release, err := s.resolve(id)
	if err != nil {
		answer(w, err)
		return
	}
	release()
	writeJSON(w, http.StatusOK, modelEntry{id, "model", "lathe", 0})
}

// resolve finds the adapter a model field names, held (not evicted) until release.
func (s *Server) resolve(name string) (model.Adapter, func(), *apiErr) {
	base, adapter, hasAdapter := strings.Cut(name, ":")
	switch {
	case !hasAdapter && name == s.Name:
		return nil, func() {}, nil
	case !hasAdapter:
		adapter = name // a bare adapter name is accepted too
	case base != s.Name:
		adapter = ""
	}
	if adapter != "" {
		if a, release, ok := s.Adapters.Acquire(adapter); ok {
			return a, release, nil
		}
	}
	return nil, nil, &apiErr{status: http.StatusNotFound, typ: "invalid_request_error", param: "model",
		msg: fmt.Sprintf("the model %q does not exist; this server has: %s", name, strings.Join(s.modelIDs(), ", "))}
}

// admit takes n slots of the pool at once, or none: a request that cannot have them all gets
// none. The one owner of the slots is the release it returns, which returns them exactly once
// however often it is called.
func (s *Server) admit(n int) (release func(), ok bool) {
	for i := range n {
		select {
		case s.slots <- struct{}{}:
		default:
			for range i {
				<-s.slots
			}
			return nil, false
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for range n {
				<-s.slots
			}
		})
	}, true
}

// InFlight is the number of slots taken: requests generating or waiting for the generator.
func (s *Server) InFlight() int {
	s.init()
	return len(s.slots)
}

// readBody reads a request body within MaxBodyBytes.
func readBody(r *http.Request) ([]byte, *apiErr) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiErr{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error", msg: fmt.Sprintf("request body over %d bytes", tooBig.Limit)}
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	return body, nil
}

func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// generation is one choice of a request: a prompt's index and its generation request.
type generation struct {
	prompt int
	req    Request
}

// generate answers a completion or chat request: the model looked up first (404 before any
// other error), then the fields checked, the slots taken, and the choices generated together.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, chat bool) {
	body, aerr := readBody(r)
	if aerr != nil {
		answer(w, aerr)
		return
	}
	parse := parseCompletion
	if chat {
		parse = parseChat
	}
	modelName, check, aerr := parse(body)
	if aerr != nil {
		answer(w, aerr)
		return
	}
	adapter, releaseAdapter, aerr := s.resolve(modelName)
	if aerr != nil {
		answer(w, aerr)
		return
	}
	defer releaseAdapter()
	p, aerr := check()
	if aerr != nil {
		answer(w, aerr)
		return
	}
	var reqs []Request
	if chat {
		if !s.Gen.Tok.HasChatTemplate() {
			answer(w, badRequest("messages", "the model %q has no chat template (no chat_template in its tokenizer_config.json): start the server with --chat-template FILE, or use /v1/completions", s.Name))
			return
		}
		reqs = []Request{{Messages: p.messages}}
	} else {
		for _, pr := range p.prompts {
			reqs = append(reqs, Request{Prompt: pr.text, IDs: pr.ids})
		}
	}
	var gens []generation
	limit := s.Gen.Limit()
	for i, rq := range reqs {
		rq.Sampling, rq.Adapter = p.sampling, adapter
		ids, err := s.Gen.PromptIDs(rq)
		if err != nil {
			answer(w, badRequest("prompt", "%v", err))
			return
		}
		if len(ids) >= limit {
			answer(w, badRequest("prompt", "the prompt has %d tokens, the context holds %d", len(ids), limit))
			return
		}
		// n choices are n generations (seeds seed, seed+1, ...), decoded together.
		for c := range p.n {
			g := rq
			g.Sampling.Seed += uint64(c)
			gens = append(gens, generation{prompt: i, req: g})
		}
	}
	if len(gens) > cap(s.slots) {
		answer(w, badRequest("n", "%d generations in one request, this server runs at most %d at once", len(gens), cap(s.slots)))
		return
	}
	release, ok := s.admit(len(gens))
	if !ok {
		apiError(w, http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf("%d requests are already running or waiting; retry later", cap(s.slots)))
		return
	}
	defer release()
	// Generation may take longer than any write timeout: the deadlines are set where the
	// answer is written.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	done := func() { release(); releaseAdapter() }
	a := &answerer{s: s, w: w, r: r, rc: rc, release: done, chat: chat, model: modelName, common: p.common, sp: p.sampling, created: time.Now().Unix()}
	a.id, a.object = newID("cmpl-"), "text_completion"
	if chat {
		a.id, a.object = newID("chatcmpl-"), "chat.completion"
	}
	if p.common.Stream {
		a.stream(gens)
	} else {
		a.whole(gens)
	}
}

// answerer writes the answer to one generation request.
type answerer struct {
	s           *Server
	w           http.ResponseWriter
	r           *http.Request
	rc          *http.ResponseController
	release     func() // the slots and the adapter, freed once generation ends: before the answer's last write
	chat        bool
	model       string
	common      commonRequest
	sp          Sampling
	id, object  string
	created     int64
	mu          sync.Mutex // serializes a stream's events
	streamError bool
}

// whole generates every choice, then answers with one object.
func (a *answerer) whole(gens []generation) {
	results := make([]Result, len(gens))
	errs := make([]error, len(gens))
	var wg sync.WaitGroup
	for i, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = a.s.Gen.Generate(a.r.Context(), g.req, nil)
		}()
	}
	wg.Wait()
	// Free before answering, so that a client that sends its next request on reading this
	// answer finds the slots free.
	a.release()
	for _, err := range errs {
		if err != nil {
			a.s.fail(a.w, a.r, err)
			return
		}
	}
	choices := make([]any, len(gens))
	prompt, completion, counted := 0, 0, map[int]bool{}
	for i, res := range results {
		choice := map[string]any{"index": i, "finish_reason": res.FinishReason, "logprobs": nil}
		if a.chat {
			choice["message"] = map[string]any{"role": "assistant", "content": res.Text}
		} else {
			choice["text"] = res.Text
		}
		if a.sp.Logprobs {
			choice["logprobs"] = a.s.logprobsBody(res.Logprobs, a.chat, 0)
		}
		choices[i] = choice
		completion += res.Tokens
		if !counted[gens[i].prompt] {
			counted[gens[i].prompt] = true
			prompt += res.PromptTokens
		}
	}
	_ = a.rc.SetWriteDeadline(time.Now().Add(a.s.WriteTimeout))
	writeJSON(a.w, http.StatusOK, map[string]any{
		"id": a.id, "object": a.object, "created": a.created, "model": a.model, "choices": choices,
		"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
	})
}

// event writes one server-sent event, within the per-token deadline; a.mu is held.
func (a *answerer) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_ = a.rc.SetWriteDeadline(time.Now().Add(a.s.TokenTimeout))
	if _, err := fmt.Fprintf(a.w, "data: %s\n\n", b); err != nil {
		return err
	}
	return a.rc.Flush()
}

// stream generates every choice at once, each chunk an event that carries its choice's index.
func (a *answerer) stream(gens []generation) {
	a.w.Header().Set("Content-Type", "text/event-stream")
	a.w.Header().Set("Cache-Control", "no-cache")
	a.w.WriteHeader(http.StatusOK)
	object := "text_completion"
	if a.chat {
		object = "chat.completion.chunk"
	}
	ctx, cancel := context.WithCancel(a.r.Context())
	defer cancel()
	send := func(index int, text string, lps []TokenLogprob, finish any, first bool, offset int) error {
		choice := map[string]any{"index": index, "finish_reason": finish}
		if a.sp.Logprobs && finish == nil {
			choice["logprobs"] = a.s.logprobsBody(lps, a.chat, offset)
		}
		if a.chat {
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
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.streamError {
			return context.Canceled
		}
		return a.event(map[string]any{"id": a.id, "object": object, "created": a.created, "model": a.model, "choices": []any{choice}})
	}
	results := make([]Result, len(gens))
	errs := make([]error, len(gens))
	var wg sync.WaitGroup
	for i, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, offset := true, 0 // offset: of the chunk's text in the choice's (text_offset)
			res, err := a.s.Gen.Stream(ctx, g.req, func(ch Chunk) error {
				err := send(i, ch.Text, ch.Logprobs, nil, first, offset)
				first, offset = false, offset+len(ch.Text)
				return err
			})
			if err == nil {
				err = send(i, "", nil, res.FinishReason, first, offset)
			}
			if err != nil {
				cancel() // one choice failed: the others stop
			}
			results[i], errs[i] = res, err
		}()
	}
	wg.Wait()
	a.release()
	for _, err := range errs {
		if err == nil || errors.Is(err, context.Canceled) {
			continue
		}
		a.s.Log.Printf("serve: %s %s: %v", a.r.Method, a.r.URL.Path, err)
		a.mu.Lock()
		_ = a.event(errorBodyOf(err))
		a.streamError = true
		a.mu.Unlock()
		return
	}
	for _, err := range errs {
		if err != nil {
			return // the client went away
		}
	}
	if a.common.StreamOptions != nil && a.common.StreamOptions.IncludeUsage {
		// OpenAI's last chunk: no choices, the usage of the whole request.
		prompt, completion, counted := 0, 0, map[int]bool{}
		for i, res := range results {
			completion += res.Tokens
			if !counted[gens[i].prompt] {
				counted[gens[i].prompt] = true
				prompt += res.PromptTokens
			}
		}
		_ = a.event(map[string]any{"id": a.id, "object": object, "created": a.created, "model": a.model, "choices": []any{},
			"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
	}
	_ = a.rc.SetWriteDeadline(time.Now().Add(a.s.TokenTimeout))
	fmt.Fprint(a.w, "data: [DONE]\n\n")
	_ = a.rc.Flush()
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
	if errors.Is(err, ErrAdapterUnloaded) {
		apiError(w, http.StatusNotFound, "invalid_request_error", "the adapter was unloaded while the request waited")
		return
	}
	apiError(w, http.StatusInternalServerError, "server_error", err.Error())
}

func (s *Server) listAdapters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": s.Adapters.Names()})
}

func (s *Server) loadAdapter(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(r)
	if aerr != nil {
		answer(w, aerr)
		return
	}
	var req struct {
		Name    string `json:"name"`
		Path    string `json:"path"`
		Combine []struct {
			Path   string  `json:"path"`
			Weight float64 `json:"weight"`
		} `json:"combine"`
	}
	if aerr := decodeBody(body, &req); aerr != nil {
		answer(w, aerr)
		return
	}
	switch {
	case req.Name == "" || (req.Path == "") == (len(req.Combine) == 0):
		answer(w, badRequest("", `name and either path or combine ([{"path", "weight"}, ...]) are required`))
		return
	case len(req.Combine) > MaxCombine:
		answer(w, badRequest("combine", "%d adapters to combine, at most %d", len(req.Combine), MaxCombine))
		return
	}
	if err := checkName(req.Name); err != nil {
		answer(w, badRequest("name", "%v", err))
		return
	}
	if s.AdapterDir == "" {
		answer(w, &apiErr{status: http.StatusForbidden, typ: "invalid_request_error", msg: "loading adapters over HTTP is off: start the server with --adapter-dir DIR"})
		return
	}
	var err error
	if req.Path != "" {
		var dir string
		if dir, err = AdapterPath(s.AdapterDir, req.Path); err == nil {
			err = s.Adapters.LoadEvictable(req.Name, dir)
		}
	} else {
		dirs := make([]string, len(req.Combine))
		weights := make([]float64, len(req.Combine))
		for i, c := range req.Combine {
			if dirs[i], err = AdapterPath(s.AdapterDir, c.Path); err != nil {
				break
			}
			weights[i] = c.Weight
		}
		if err == nil {
			err = s.Adapters.LoadCombined(req.Name, dirs, weights)
		}
	}
	if err != nil {
		// What the loader says may quote the files: the log has it, the client gets less.
		s.Log.Printf("serve: POST /v1/adapters %q: %v", req.Name, err)
		var le *LoadError
		if errors.As(err, &le) {
			err = fmt.Errorf("adapter %q could not be loaded: not a readable adapter folder (the server's log says why)", req.Name)
		}
		answer(w, badRequest("path", "%v", err))
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
	rs := s.Adapters.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range []struct {
		name, kind, help string
		v                int64
	}{
		{"lathe_requests", "gauge", "Generations running or waiting for a slot.", int64(len(s.slots))},
		{"lathe_adapters_loaded", "gauge", "Adapters being served.", int64(len(s.Adapters.Names()))},
		{"lathe_adapter_bytes", "gauge", "Bytes of the adapters loaded.", rs.Bytes},
		{"lathe_adapters_evicted_total", "counter", "Idle adapters evicted by the caps.", int64(rs.Evicted)},
		{"lathe_prefills_total", "counter", "Prompts prefilled.", int64(st.Prefills)},
		{"lathe_prefill_steps_total", "counter", "Prefill steps (several prompts may share one).", int64(st.PrefillSteps)},
		{"lathe_decode_steps_total", "counter", "Decode steps.", int64(st.DecodeSteps)},
		{"lathe_decode_tokens_total", "counter", "Tokens produced by decode steps.", int64(st.DecodeTokens)},
		{"lathe_decode_batch_max", "gauge", "Most requests decoded in one step.", int64(st.MaxBatch)},
		{"lathe_adapters_retired_total", "counter", "Unloaded or replaced adapters freed.", int64(st.Retired)},
		{"lathe_prompt_tokens_reused_total", "counter", "Prompt tokens whose keys and values a request found in its slot.", int64(st.ReusedTokens)},
		{"lathe_loop_panics_total", "counter", "Panics in the generation loop (their requests failed).", int64(st.Panics)},
		{"lathe_sample_fallbacks_total", "counter", "Tokens whose device candidates did not settle the draw (sampled from the whole row).", int64(st.SampleFallbacks)},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.v)
	}
}

// tokenBytes is a token's raw bytes, as OpenAI's logprobs give them: its text as it reads in
// the completion (a leading space included), or where that text is not whole characters (a
// byte-fallback or byte-level token that is part of one) the bytes the token stands for.
func (s *Server) tokenBytes(lp TokenLogprob) []int {
	raw := []byte(lp.Token)
	if strings.ContainsRune(lp.Token, utf8.RuneError) {
		if b, err := s.Gen.Tok.TokenBytes(int(lp.ID)); err == nil {
			raw = b
		}
	}
	out := make([]int, len(raw))
	for i, b := range raw {
		out[i] = int(b)
	}
	return out
}

// logprobsBody formats log-probabilities as OpenAI does: chat's content list, or completions'
// parallel lists (text offsets from offset).
func (s *Server) logprobsBody(lps []TokenLogprob, chat bool, offset int) any {
	if chat {
		entry := func(lp TokenLogprob) map[string]any {
			return map[string]any{"token": lp.Token, "logprob": lp.Logprob, "bytes": s.tokenBytes(lp)}
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
	tokens, lp, top, offsets := []string{}, []float64{}, []map[string]float64{}, []int{}
	at := offset
	for _, l := range lps {
		tokens, lp, offsets = append(tokens, l.Token), append(lp, l.Logprob), append(offsets, at)
		at += len(l.Token)
		alt := map[string]float64{}
		for _, t := range l.Top {
			alt[t.Token] = t.Logprob
		}
		top = append(top, alt)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets}
}
