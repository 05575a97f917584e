package outbound_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func TestTransportProtocols(t *testing.T) {
	p := newExecPKI(t)
	tests := []struct {
		name         string
		server       func(*partner.Options)
		exec         outbound.ExecutorOptions
		material     func(*tls.Config)
		wantProtocol string
		wantTLS      string
	}{
		{name: "ok/http2-when-offered", wantProtocol: "HTTP/2.0", wantTLS: "TLS 1.3"},
		{name: "ok/http1-when-partner-has-no-http2", server: func(o *partner.Options) { o.DisableHTTP2 = true }, wantProtocol: "HTTP/1.1", wantTLS: "TLS 1.3"},
		{name: "ok/http1-when-executor-disables-http2", exec: outbound.ExecutorOptions{DisableHTTP2: true}, wantProtocol: "HTTP/1.1", wantTLS: "TLS 1.3"},
		{name: "ok/http2-over-tls12", server: func(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS12 }, wantProtocol: "HTTP/2.0", wantTLS: "TLS 1.2"},
		{name: "ok/http1-when-the-profile-allows-renegotiation", server: func(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS12 },
			material: func(c *tls.Config) { c.Renegotiation = tls.RenegotiateOnceAsClient }, wantProtocol: "HTTP/1.1", wantTLS: "TLS 1.2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startExecPartner(t, p, tc.server)
			x := outbound.NewExecutor(tc.exec)
			defer x.Close()
			out := x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/echo"}), &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}, execMaterial(p, "v1", tc.material))
			if !out.Result.OK {
				t.Fatalf("result: %+v", out.Result)
			}
			e := decodeEcho(t, out.Result)
			if e.Protocol != tc.wantProtocol || e.TLSVersion != tc.wantTLS {
				t.Fatalf("server saw %s over %s, want %s over %s", e.Protocol, e.TLSVersion, tc.wantProtocol, tc.wantTLS)
			}
		})
	}
}

// handshakeCounter counts what an httptest server sees: TLS handshakes
// begun and TCP connections opened and closed.
type handshakeCounter struct {
	hellos, opened, closed atomic.Int64
}

func TestTransportReuse(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		name := "ok/reuse-http1"
		if h2 {
			name = "ok/reuse-http2"
		}
		t.Run(name, func(t *testing.T) {
			p := newExecPKI(t)
			var n handshakeCounter
			srv := startMTLSHTTPTestWith(t, p, h2, &n)
			x := newExecutor(t)
			conn := &catalog.Connection{BaseURL: srv, Profile: "partner-a"}
			call := restCall(t, jobs.Call{Path: "/"})
			v1 := execMaterial(p, "v1", nil)

			first := x.Attempt(context.Background(), call, conn, v1)
			second := x.Attempt(context.Background(), call, conn, v1)
			for i, out := range []outbound.Outcome{first, second} {
				if !out.Result.OK {
					t.Fatalf("call %d: %+v", i+1, out.Result)
				}
			}
			if h, o := n.hellos.Load(), n.opened.Load(); h != 1 || o != 1 {
				t.Fatalf("after two calls on one profile: %d handshakes, %d connections; want 1 and 1", h, o)
			}
			if first.Result.Timing.TLSMS <= 0 || second.Result.Timing.TLSMS != 0 || second.Result.Timing.ConnectMS != 0 {
				t.Fatalf("timing: first %+v, second %+v; want tls only on the first", first.Result.Timing, second.Result.Timing)
			}

			// A rotated secret: same profile, new Version. A new transport
			// makes a new connection; the old one's idle connection closes.
			v2 := execMaterial(p, "v2", nil)
			if out := x.Attempt(context.Background(), call, conn, v2); !out.Result.OK {
				t.Fatalf("call with v2: %+v", out.Result)
			}
			if h, o := n.hellos.Load(), n.opened.Load(); h != 2 || o != 2 {
				t.Fatalf("after a new version: %d handshakes, %d connections; want 2 and 2", h, o)
			}
			waitFor(t, "the old transport's idle connection to close", func() bool { return n.closed.Load() >= 1 })
			if out := x.Attempt(context.Background(), call, conn, v2); !out.Result.OK {
				t.Fatalf("second call with v2: %+v", out.Result)
			}
			if h := n.hellos.Load(); h != 2 {
				t.Fatalf("second call with v2 made a handshake (%d in all)", h)
			}
		})
	}
}

// startMTLSHTTPTestWith starts an httptest mTLS server that counts
// handshakes and connections in n, and returns its URL.
func startMTLSHTTPTestWith(t *testing.T, p *execPKI, h2 bool, n *handshakeCounter) string {
	t.Helper()
	srv := startMTLSHTTPTestUnstarted(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.EnableHTTP2 = h2
	srv.TLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		n.hellos.Add(1)
		return nil, nil
	}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			n.closed.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTransportConcurrentRotation runs attempts from many goroutines while
// the profile's version changes under them; run it with -race.
func TestTransportConcurrentRotation(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}
	mats := []*secrets.Material{execMaterial(p, "v1", nil), execMaterial(p, "v2", nil), execMaterial(p, "v3", nil)}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				call := &jobs.Call{ID: fmt.Sprintf("c-%d-%d", g, i), Connection: "partner-a-api", Kind: jobs.KindREST, Method: "GET", Path: "/echo"}
				out := x.Attempt(context.Background(), call, conn, mats[(g+i/5)%len(mats)])
				if !out.Result.OK {
					errs <- fmt.Errorf("goroutine %d call %d: %v", g, i, out.Result.Error)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
