package outbound

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// A token is renewed once 20% of its lifetime is left, or 30s (at most
// half its lifetime), whichever comes first, and used until a few seconds
// before it expires.
func TestTokenSchedule(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		lifetime, renew, until time.Duration
	}{
		{time.Hour, 48 * time.Minute, time.Hour - 5*time.Second},
		{5 * time.Minute, 4*time.Minute + 0*time.Second, 5*time.Minute - 5*time.Second},
		{60 * time.Second, 30 * time.Second, 55 * time.Second},
		{10 * time.Second, 5 * time.Second, 9 * time.Second},
		{0, 0, 0},
	} {
		renewAt, useUntil := schedule(t0, t0.Add(tc.lifetime))
		if tc.lifetime == 0 {
			// No expires_in: an hour.
			renewAt, useUntil = schedule(t0, time.Time{})
			tc.renew, tc.until = 48*time.Minute, time.Hour-5*time.Second
		}
		if renewAt.Sub(t0) != tc.renew || useUntil.Sub(t0) != tc.until {
			t.Errorf("lifetime %s: renew at %s, use until %s; want %s and %s", tc.lifetime, renewAt.Sub(t0), useUntil.Sub(t0), tc.renew, tc.until)
		}
	}
	// An expires_in of 0 or less: used by the calls that waited for it only.
	if r, u := schedule(t0, t0.Add(-time.Second)); !r.Equal(t0) || !u.Equal(t0) {
		t.Errorf("expired token: %s %s", r, u)
	}
}

// Token requests take the connection's route: through its egress proxy
// (a CONNECT to the token endpoint's host), with mutual TLS inside the
// tunnel, as the connection's calls do; a proxy's refusal of the token
// host is the token request's failure.
func TestTokenRequestsThroughTheConnectionsProxy(t *testing.T) {
	p := newProxyPKI(t)
	srv := p.partner(t)
	var mu sync.Mutex
	var certs int
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		certs += len(r.TLS.PeerCertificates)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-through-proxy","token_type":"Bearer","expires_in":3600}`))
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLSCertificate()}, ClientCAs: p.clientCA.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	tokenAddr := ts.Listener.Addr().String()

	proxy := startConnectProxy(t, "relay", "proxy-pass", nil)
	sec := &memSecrets{}
	sec.set("mem:proxy", "proxy-pass")
	sec.set("mem:cs", "client-secret")
	newX := func() *Executor {
		x := NewExecutor(ExecutorOptions{
			Secrets:      sec.read,
			Proxies:      map[string]catalog.Proxy{"corp": {URL: "http://" + proxy.addr, Username: "relay", Password: "mem:proxy"}},
			DefaultProxy: "corp",
		})
		t.Cleanup(x.Close)
		return x
	}
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a",
		Auth: &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: ts.URL + "/token", ClientID: "relay", ClientSecret: "mem:cs"}}

	out := newX().Attempt(context.Background(), proxyCall(t, "via-corp", jobs.Call{}), conn, p.material())
	if out.Result.Error != nil || !out.Result.OK {
		t.Fatalf("through the proxy: %+v", out.Result.Error)
	}
	var echo partner.EchoResponse
	if err := json.Unmarshal(out.Result.ResponseBody(), &echo); err != nil {
		t.Fatal(err)
	}
	if got := echo.Headers["Authorization"]; len(got) != 1 || got[0] != "Bearer tok-through-proxy" {
		t.Fatalf("the partner got Authorization %q", got)
	}
	var targets []string
	for _, c := range proxy.seen() {
		targets = append(targets, c.target)
	}
	if len(targets) != 2 || targets[0] != tokenAddr || targets[1] != srv.Addr() {
		t.Fatalf("the proxy saw CONNECTs to %v, want the token endpoint %s then the partner %s", targets, tokenAddr, srv.Addr())
	}
	mu.Lock()
	if certs != 1 {
		t.Errorf("the token endpoint saw %d client certificates, want the profile's", certs)
	}
	mu.Unlock()

	proxy.setAllow(func(target string) bool { return target != tokenAddr })
	out = newX().Attempt(context.Background(), proxyCall(t, "via-corp", jobs.Call{}), conn, p.material())
	wantProxyCode(t, out, jobs.CodeProxyRefused, false, "client-secret", "proxy-pass")
	if !strings.Contains(out.Result.Error.Message, "requesting a token for connection via-corp") {
		t.Fatalf("message %q", out.Result.Error.Message)
	}
}
