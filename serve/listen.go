//go:build !lathe_lite

package serve

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Timeouts of the HTTP server lathe serve runs (see HTTPServer).
type Timeouts struct {
	// Read bounds reading a request, body included (a slow body is cut off); Idle bounds a
	// kept-alive connection between requests. Writing is bounded by the Server's WriteTimeout
	// and, for streams, its per-event TokenTimeout.
	Read, Idle time.Duration
}

// HTTPServer returns an http.Server for the API with the timeouts set: the headers within 10 s,
// the request within t.Read, an idle connection closed after t.Idle.
func (s *Server) HTTPServer(t Timeouts) *http.Server {
	header := 10 * time.Second
	if t.Read > 0 {
		header = min(header, t.Read)
	}
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: header,
		ReadTimeout:       t.Read,
		// The handlers set their own write deadlines (generation may take long); this bounds
		// every other answer.
		WriteTimeout: 0,
		IdleTimeout:  t.Idle,
	}
}

// LimitListener accepts at most n connections at once (n <= 0: no limit); more wait in the
// kernel's backlog until one closes.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
