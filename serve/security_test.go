package serve

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model"
)

// POST /v1/adapters reaches only folders under the adapter directory, and its errors say nothing
// about what exists outside it or what a file holds.
func TestAdapterDirConfinesLoads(t *testing.T) {
	s, ts := testServer(t)
	root := s.AdapterDir
	outside := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "secret"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret", "scale"), []byte("2"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "shadow"), []byte("root:$6$SECRETHASH"), 0o600))
	// Inside: a link to the outside folder, a folder whose file links out, a folder whose file
	// holds something that is not an adapter.
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "link")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sneaky"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(root, "sneaky", "scale")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "junk"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "junk", "scale"), []byte("CONTENTS-OF-A-FILE"), 0o644))
	rel, err := filepath.Rel(root, filepath.Join(outside, "secret"))
	require.NoError(t, err)

	refused := func(path string) string {
		t.Helper()
		code, out := call(t, ts, "POST", "/v1/adapters", fmt.Sprintf(`{"name":"x","path":%q}`, path))
		require.Equal(t, 400, code, "%s: %v", path, out)
		msg := out["error"].(map[string]any)["message"].(string)
		require.NotContains(t, msg, "SECRETHASH")
		require.NotContains(t, msg, "CONTENTS-OF-A-FILE")
		return msg
	}
	// An existing folder outside and a missing one get the same answer.
	require.Equal(t, refused(rel), strings.ReplaceAll(refused(strings.Replace(rel, "secret", "public", 1)), "public", "secret"))
	require.Contains(t, refused(rel), "not an adapter folder under the server's adapter directory")
	require.Equal(t, refused(filepath.Join(outside, "secret")), strings.ReplaceAll(refused(filepath.Join(outside, "public")), "public", "secret"), "absolute")
	refused("neg/../../" + filepath.Base(outside) + "/secret")
	require.NotContains(t, refused("link"), outside)
	require.Contains(t, refused("sneaky"), "links out of the adapter directory")
	require.Contains(t, refused("junk"), "could not be loaded")
	code, out := call(t, ts, "POST", "/v1/adapters", `{"name":"c","combine":[{"path":"neg","weight":1},{"path":"link","weight":1}]}`)
	require.Equal(t, 400, code, "%v", out)
	require.Equal(t, []string{}, s.Adapters.Names(), "nothing was loaded")
	code, _ = call(t, ts, "POST", "/v1/adapters", `{"name":"x","path":"neg"}`)
	require.Equal(t, 200, code, "a folder inside loads")

	// Without an adapter directory, loading over HTTP is off.
	s.AdapterDir = ""
	code, out = call(t, ts, "POST", "/v1/adapters", `{"name":"y","path":"neg"}`)
	require.Equal(t, 403, code)
	require.Contains(t, out["error"].(map[string]any)["message"], "--adapter-dir")
}

// A web page cannot drive the server: no text/plain POST, no foreign Origin, no foreign Host
// (DNS rebinding), and no CORS unless an origin is named.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	s, ts := testServer(t)
	do := func(method, path, body string, header map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer k3y")
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := ts.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	load := `{"name":"neg","path":"neg"}`
	// The CSRF of the report: a text/plain POST from a foreign page.
	resp := do("POST", "/v1/adapters", load, map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"})
	require.Equal(t, 403, resp.StatusCode)
	resp = do("POST", "/v1/adapters", load, map[string]string{"Content-Type": "text/plain"})
	require.Equal(t, 415, resp.StatusCode)
	resp = do("POST", "/v1/adapters", load, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	require.Equal(t, 415, resp.StatusCode)
	resp = do("POST", "/v1/adapters", load, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"})
	require.Equal(t, 403, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	resp = do("OPTIONS", "/v1/adapters", "", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
	require.Equal(t, 403, resp.StatusCode)
	require.Empty(t, s.Adapters.Names(), "no adapter was loaded")
	// DNS rebinding: a name that resolves to this machine is not this server's name.
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "evil.example"})
	require.Equal(t, 421, resp.StatusCode)
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "evil.example:" + ts.Listener.Addr().(*net.TCPAddr).AddrPort().String()})
	require.Equal(t, 421, resp.StatusCode)
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "10.1.2.3"})
	require.Equal(t, 421, resp.StatusCode, "another address than the loopback one bound")
	for _, host := range []string{"localhost", "localhost:8080", "127.0.0.1:9", "[::1]:80"} {
		resp = do("GET", "/v1/models", "", map[string]string{"Host": host})
		require.Equal(t, 200, resp.StatusCode, host)
	}
	s.AllowedHosts = []string{"lathe.internal"}
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "LATHE.internal:8080"})
	require.Equal(t, 200, resp.StatusCode)
	// A page of the server's own origin, and one CORS names.
	resp = do("POST", "/v1/adapters", load, map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": ts.URL})
	require.Equal(t, 200, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), "no CORS unless an origin is named")
	s.CORSOrigins = []string{"https://app.example"}
	resp = do("OPTIONS", "/v1/chat/completions", "", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
	require.Equal(t, 204, resp.StatusCode)
	require.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type")
	resp = do("GET", "/v1/models", "", map[string]string{"Origin": "https://app.example"})
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	resp = do("GET", "/v1/models", "", map[string]string{"Origin": "https://other.example"})
	require.Equal(t, 403, resp.StatusCode)

	// Bound to every address: any address is answered, names still only when allowed.
	s.Host, s.AllowedHosts = "0.0.0.0", nil
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "10.1.2.3:8080"})
	require.Equal(t, 200, resp.StatusCode)
	resp = do("GET", "/v1/models", "", map[string]string{"Host": "evil.example"})
	require.Equal(t, 421, resp.StatusCode)
}

// Identical adapter folders are loaded once; the caps evict the least recently used idle
// adapter, never one a request holds or a pinned one; a composition names at most MaxCombine
// folders and reads each once.
func TestAdapterDedupAndCaps(t *testing.T) {
	g := stories(t)
	var loads atomic.Int64
	reg := NewRegistry(scaleLoader(t, g.Model, &loads))
	reg.Combine = func(w []float64, parts []model.Adapter) (model.Adapter, error) {
		s := 0.0
		for i, p := range parts {
			s += w[i] * float64(p.(*scaleAdapter).s)
		}
		return newScaleAdapter(t, g.Model, float32(s)), nil
	}
	var retired []model.Adapter
	reg.OnRetire(func(a model.Adapter, _ bool) { retired = append(retired, a) })
	dir := testAdapterDir(t)
	copyDir := func(from, to string) {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, to), 0o755))
		b, err := os.ReadFile(filepath.Join(dir, from, "scale"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, to, "scale"), b, 0o644))
	}
	copyDir("neg", "neg-copy")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "third"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "third", "scale"), []byte("3"), 0o644))

	require.NoError(t, reg.LoadEvictable("a", filepath.Join(dir, "neg")))
	require.NoError(t, reg.LoadEvictable("b", filepath.Join(dir, "neg-copy")))
	require.Equal(t, int64(1), loads.Load(), "the same content under another path is loaded once")
	require.Equal(t, 1, reg.Stats().Adapters)
	a, _ := reg.Get("a")
	b, _ := reg.Get("b")
	require.Same(t, a, b)
	require.True(t, reg.Unload("a"))
	require.Empty(t, retired, "b still serves it")

	dirs := make([]string, MaxCombine+1)
	weights := make([]float64, MaxCombine+1)
	for i := range dirs {
		dirs[i], weights[i] = filepath.Join(dir, "half"), 1.0/float64(MaxCombine)
	}
	require.ErrorContains(t, reg.LoadCombined("c", dirs, weights), fmt.Sprintf("at most %d", MaxCombine))
	require.NoError(t, reg.LoadCombined("c", dirs[:MaxCombine], weights[:MaxCombine]))
	require.Equal(t, int64(2), loads.Load(), "16 copies of one folder are read once")
	c, _ := reg.Get("c")
	require.InDelta(t, 0.5, c.(*scaleAdapter).s, 1e-6)

	// Caps: two adapters. b and c are loaded; b is in use, so loading d evicts c.
	reg.MaxAdapters = 2
	_, releaseB, ok := reg.Acquire("b")
	require.True(t, ok)
	require.NoError(t, reg.LoadEvictable("d", filepath.Join(dir, "third")))
	require.Equal(t, []string{"b", "d"}, reg.Names())
	require.Equal(t, []model.Adapter{c}, retired)
	require.Equal(t, 1, reg.Stats().Evicted)
	// b in use, d loaded last: e evicts d; with both in use, e is refused.
	_, releaseD, ok := reg.Acquire("d")
	require.True(t, ok)
	err := reg.LoadEvictable("e", filepath.Join(dir, "half"))
	require.ErrorContains(t, err, "every one is pinned or in use")
	releaseD()
	releaseD() // a second release changes nothing
	require.NoError(t, reg.LoadEvictable("e", filepath.Join(dir, "half")))
	require.Equal(t, []string{"b", "e"}, reg.Names())
	releaseB()
	// Pinned adapters are never evicted.
	require.NoError(t, reg.Load("p", filepath.Join(dir, "third")))
	require.Equal(t, []string{"e", "p"}, reg.Names(), "b was the least recently used idle one")
	require.NoError(t, reg.Load("q", filepath.Join(dir, "neg")))
	require.Equal(t, []string{"p", "q"}, reg.Names())
	require.ErrorContains(t, reg.LoadEvictable("r", filepath.Join(dir, "half")), "pinned or in use")

	// Bytes: a folder over the cap is refused before it is read.
	before := loads.Load()
	reg.MaxAdapters, reg.MaxBytes = 0, 1
	require.ErrorContains(t, reg.LoadEvictable("big", filepath.Join(dir, "half")), "over the server's cap")
	require.Equal(t, before, loads.Load())
}

// A slow body is cut off by the read timeout, and connections beyond the limit wait.
func TestTimeoutsAndConnectionLimit(t *testing.T) {
	s, _ := testServer(t)
	hs := s.HTTPServer(Timeouts{Read: time.Second, Idle: time.Second})
	hs.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = hs.Serve(LimitListener(ln, 2)) }()
	t.Cleanup(func() { _ = hs.Close() })
	addr := ln.Addr().String()

	// A body that never comes: the server closes the connection.
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k3y\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.ReadAll(c) // returns when the server closes
	require.Less(t, time.Since(start), 3*time.Second)
	c.Close()

	// Two connections open: a third waits until one closes.
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		idle = append(idle, c)
	}
	get := func(timeout time.Duration) error {
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer k3y")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	time.Sleep(50 * time.Millisecond) // both accepted
	require.Error(t, get(300*time.Millisecond), "over the connection limit")
	idle[0].Close()
	require.NoError(t, get(5*time.Second))
	idle[1].Close()
}

var _ = httptest.NewServer

// smallBuffers accepts connections with small send buffers, so that a client that stops reading
// blocks the server's writes soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A stream whose client stops reading is cut off by the per-event deadline, and its slot freed.
func TestStreamToAClientThatStopsReading(t *testing.T) {
	s, _ := testServer(t)
	s.TokenTimeout = 200 * time.Millisecond
	hs := s.HTTPServer(Timeouts{Read: 5 * time.Second, Idle: 5 * time.Second})
	hs.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = hs.Serve(smallBuffers{ln}) }()
	t.Cleanup(func() { _ = hs.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.(*net.TCPConn).SetReadBuffer(4096))
	body := `{"model":"stories","prompt":"Once","max_tokens":400,"logprobs":5,"stream":true}`
	fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k3y\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	require.Eventually(t, func() bool { return s.InFlight() == 1 }, 5*time.Second, time.Millisecond)
	// The client reads nothing: the server gives up on it.
	require.Eventually(t, func() bool { return s.InFlight() == 0 }, 10*time.Second, 10*time.Millisecond)
}
