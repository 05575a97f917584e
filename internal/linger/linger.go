// Package linger wraps a listener so that its connections close gently:
// FIN first, then read until the peer closes. A server that refuses a TLS
// client certificate writes an alert and closes; with unread client data
// in the socket a plain close sends a reset that can destroy the alert
// before the client reads it. nginx and most TLS front ends linger the same
// way, so the test servers that stand in for partners (internal/partner,
// internal/fakeccp) do too.
package linger

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Timeout bounds how long a closed connection lingers.
const Timeout = 2 * time.Second

// Listener is a net.Listener whose accepted TCP connections linger on
// Close. Safe for concurrent use.
type Listener struct {
	net.Listener

	accepted atomic.Int64

	mu        sync.Mutex
	closed    bool
	lingering map[*conn]struct{}
	wg        sync.WaitGroup
}

// New wraps ln.
func New(ln net.Listener) *Listener {
	return &Listener{Listener: ln, lingering: map[*conn]struct{}{}}
}

// Accepted returns how many connections were accepted.
func (l *Listener) Accepted() int64 { return l.accepted.Load() }

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return &conn{Conn: c, l: l}, nil
}

// Shutdown ends every lingering connection at once and waits for them;
// connections closed afterwards close at once. Call it after the server
// using the listener has closed.
func (l *Listener) Shutdown() {
	l.mu.Lock()
	l.closed = true
	for c := range l.lingering {
		c.Conn.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

// Close sends FIN and reads until the peer closes or Timeout passes.
func (c *conn) Close() error {
	c.once.Do(func() {
		tcp, ok := c.Conn.(*net.TCPConn)
		l := c.l
		l.mu.Lock()
		if !ok || l.closed {
			l.mu.Unlock()
			c.Conn.Close()
			return
		}
		l.lingering[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		_ = tcp.CloseWrite()
		go func() {
			defer l.wg.Done()
			_ = tcp.SetReadDeadline(time.Now().Add(Timeout))
			_, _ = io.Copy(io.Discard, io.LimitReader(tcp, 1<<20))
			tcp.Close()
			l.mu.Lock()
			delete(l.lingering, c)
			l.mu.Unlock()
		}()
	})
	return nil
}

// ServeTLS listens on addr and serves srv over TLS (srv.TLSConfig) on a
// lingering listener in the background. done is closed once serving has
// stopped, after srv.Close.
func ServeTLS(srv *http.Server, addr string) (ln *Listener, done <-chan struct{}, err error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln = New(raw)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		// ServeTLS returns ErrServerClosed after Close; nothing else to report.
		_ = srv.ServeTLS(ln, "", "")
	}()
	return ln, stopped, nil
}
