// Package testproxy holds a small HTTP CONNECT proxy for the tests of
// egress through a proxy. It lives apart from internal/testutil, which
// imports worker and outbound: the tests inside package outbound could not
// import testutil without an import cycle.
package testproxy

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Proxy is a test proxy: an HTTP CONNECT proxy, over plain TCP or TLS,
// that tunnels to the targets its allow function admits. With a password
// it asks for basic credentials (a 407 with a Proxy-Authenticate header
// until the Proxy-Authorization is exactly BasicAuth(user, password)); the
// password can change while it runs. It refuses any other method than
// CONNECT with a 405, a target allow refuses with a 403 and a target it
// cannot dial with a 502, and it records every request it answers. It
// stops when its test ends.
type Proxy struct {
	addr string

	mu       sync.Mutex
	user     string
	password string
	allow    func(target string) bool
	connects []Connect
	// tlsClientCerts counts client certificates presented to it over TLS.
	tlsClientCerts int
}

// Connect is a request the proxy answered.
type Connect struct {
	// Target is the request's host: the CONNECT's host:port.
	Target string
	// Auth is its Proxy-Authorization header, UserAgent its User-Agent.
	Auth, UserAgent string
	// Status is the status the proxy answered: 200 for a tunnel.
	Status int
}

// Start starts a proxy on a free loopback port that admits every target.
// With a password it requires user's basic credentials; with password ""
// it requires none. With cert it speaks TLS (HTTP/1.1 only) with that
// certificate, and asks for, without requiring, a client certificate.
func Start(t testing.TB, user, password string, cert *tls.Certificate) *Proxy {
	t.Helper()
	p := &Proxy{user: user, password: password}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	if cert != nil {
		srv.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{*cert},
			ClientAuth:   tls.RequestClientCert,
			NextProtos:   []string{"http/1.1"},
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					p.mu.Lock()
					p.tlsClientCerts++
					p.mu.Unlock()
				}
				return nil
			},
		}
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	t.Cleanup(func() { srv.Close() })
	return p
}

// BasicAuth is the Proxy-Authorization (or Authorization) value of basic
// credentials.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.addr }

// ServeHTTP answers a request: a tunnel to its target, or a refusal.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	seen := Connect{Target: r.Host, Auth: r.Header.Get("Proxy-Authorization"), UserAgent: r.UserAgent()}
	status := http.StatusOK
	switch {
	case r.Method != http.MethodConnect:
		status = http.StatusMethodNotAllowed
	case p.password != "" && seen.Auth != BasicAuth(p.user, p.password):
		status = http.StatusProxyAuthRequired
	case p.allow != nil && !p.allow(r.Host):
		status = http.StatusForbidden
	}
	p.mu.Unlock()
	var upstream net.Conn
	if status == http.StatusOK {
		var err error
		if upstream, err = net.DialTimeout("tcp", r.Host, 5*time.Second); err != nil {
			status = http.StatusBadGateway
		}
	}
	seen.Status = status
	p.mu.Lock()
	p.connects = append(p.connects, seen)
	p.mu.Unlock()
	if status != http.StatusOK {
		if status == http.StatusProxyAuthRequired {
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer upstream.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, brw); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, upstream); done <- struct{}{} }()
	<-done
}

// Seen returns the requests the proxy has answered, in order.
func (p *Proxy) Seen() []Connect {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Connect(nil), p.connects...)
}

// SetPassword changes the password the proxy requires from its next
// request on; "" requires no credentials.
func (p *Proxy) SetPassword(pw string) {
	p.mu.Lock()
	p.password = pw
	p.mu.Unlock()
}

// SetAllow changes the targets the proxy tunnels to from its next request
// on: those f admits, every target when f is nil.
func (p *Proxy) SetAllow(f func(target string) bool) {
	p.mu.Lock()
	p.allow = f
	p.mu.Unlock()
}

// TLSClientCerts is how many TLS handshakes with the proxy presented a
// client certificate.
func (p *Proxy) TLSClientCerts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tlsClientCerts
}
