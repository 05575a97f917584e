package outbound

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testproxy"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The mechanics of egress through a proxy (proxy.go), with a small CONNECT
// proxy written here; integration/proxy_test.go runs the same cases
// through a real Squid and a real worker.

// proxyPKI is a partner's server certificate, the relay's client
// certificate and a proxy's server certificate, each from its own CA.
type proxyPKI struct {
	serverCA, clientCA, proxyCA *pki.CA
	server, client, proxy       *pki.Leaf
}

func newProxyPKI(t testing.TB) *proxyPKI {
	t.Helper()
	p := &proxyPKI{}
	var err error
	must := func(e error) {
		if e != nil {
			t.Fatal(e)
		}
	}
	p.serverCA, err = pki.NewCA("Partner Server CA")
	must(err)
	p.clientCA, err = pki.NewCA("Relay Client CA")
	must(err)
	p.proxyCA, err = pki.NewCA("Corporate Proxy CA")
	must(err)
	loopback := pki.LeafOptions{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}
	p.server, err = p.serverCA.Issue(loopback)
	must(err)
	p.proxy, err = p.proxyCA.Issue(loopback)
	must(err)
	p.client, err = p.clientCA.Issue(pki.LeafOptions{CommonName: "relay-client", Organization: "mtlsrelay tests", Client: true})
	must(err)
	return p
}

func (p *proxyPKI) material() *secrets.Material {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{p.client.TLSCertificate()},
		RootCAs:      p.serverCA.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
	return &secrets.Material{Profile: "partner-a", Config: cfg, Leaf: p.client.Cert, Version: "v1"}
}

func (p *proxyPKI) partner(t testing.TB) *partner.Server {
	t.Helper()
	srv, err := partner.Start(partner.Options{Certificate: p.server.TLSCertificate(), ClientCAs: p.clientCA.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// connectProxy is the test proxy of internal/testproxy under the names
// this package's tests use (here and in oauth2_internal_test.go).
type connectProxy struct {
	*testproxy.Proxy
	addr string
}

// seenConnect is a CONNECT the proxy received.
type seenConnect struct {
	target, auth, userAgent string
	status                  int
}

// startConnectProxy starts a proxy; with cert, it speaks TLS.
func startConnectProxy(t testing.TB, user, password string, cert *tls.Certificate) *connectProxy {
	t.Helper()
	p := testproxy.Start(t, user, password, cert)
	return &connectProxy{Proxy: p, addr: p.Addr()}
}

func (p *connectProxy) seen() []seenConnect {
	var seen []seenConnect
	for _, c := range p.Seen() {
		seen = append(seen, seenConnect{target: c.Target, auth: c.Auth, userAgent: c.UserAgent, status: c.Status})
	}
	return seen
}

func (p *connectProxy) setPassword(pw string) { p.SetPassword(pw) }

func (p *connectProxy) setAllow(f func(string) bool) { p.SetAllow(f) }

// memSecrets is ExecutorOptions.Secrets over a map of "mem:NAME" values.
type memSecrets struct {
	mu    sync.Mutex
	m     map[string]string
	reads int
}

func (s *memSecrets) set(ref, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[ref] = v
}

func (s *memSecrets) read(_ context.Context, ref string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	v, ok := s.m[ref]
	if !ok {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable, "no secret at %s", ref)
	}
	return []byte(v), nil
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// proxyCall returns a normalized GET /echo call on connection name.
func proxyCall(t testing.TB, name string, c jobs.Call) *jobs.Call {
	t.Helper()
	c.ID = "call-" + name
	if c.Method == "" {
		c.Method = http.MethodGet
	}
	if c.Path == "" && c.URL == "" {
		c.Path = "/echo"
	}
	if err := c.Normalize(name); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	return &c
}

// wantProxyCode checks that out failed with code, retryable as want, and
// that neither its result nor its message holds any of secrets.
func wantProxyCode(t *testing.T, out Outcome, code jobs.Code, retryable bool, secrets ...string) {
	t.Helper()
	e := out.Result.Error
	if e == nil {
		t.Fatalf("no error (status %d), want %s", out.Result.Status, code)
	}
	if e.Code != code || e.Retryable != retryable {
		t.Fatalf("error %v (retryable %v), want %s (retryable %v)", e, e.Retryable, code, retryable)
	}
	if out.Sent {
		t.Error("Sent = true for a call that never reached the partner")
	}
	noSecrets(t, out.Result, secrets...)
}

// noSecrets fails when the result, as JSON, holds one of secrets.
func noSecrets(t *testing.T, res *jobs.Result, secrets ...string) {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(string(b), s) {
			t.Fatalf("the result holds a proxy password: %s", b)
		}
	}
}

// hookHint is what a test says when calls went direct although the
// connection has a proxy.
const hookHint = "the call did not go through the proxy: outbound/exec.go must take its transport with x.transports.getVia(call.Connection, conn.Proxy, lane, mat) (proxy.go)"

func TestProxyTunnelAndRotatedPassword(t *testing.T) {
	p := newProxyPKI(t)
	srv := p.partner(t)
	proxy := startConnectProxy(t, "relay", "first-pass", nil)
	sec := &memSecrets{}
	sec.set("mem:proxy", "first-pass")
	x := NewExecutor(ExecutorOptions{
		Secrets:      sec.read,
		Proxies:      map[string]catalog.Proxy{"corp": {URL: "http://" + proxy.addr, Username: "relay", Password: "mem:proxy"}},
		DefaultProxy: "corp",
	})
	defer x.Close()
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}
	mat := p.material()

	out := x.Attempt(context.Background(), proxyCall(t, "via-corp", jobs.Call{}), conn, mat)
	if len(proxy.seen()) == 0 {
		t.Fatal(hookHint)
	}
	if out.Result.Error != nil || !out.Result.OK {
		t.Fatalf("through the proxy: %+v", out.Result.Error)
	}
	var echo partner.EchoResponse
	if err := json.Unmarshal(out.Result.ResponseBody(), &echo); err != nil {
		t.Fatal(err)
	}
	if echo.ClientCert == nil || !strings.Contains(echo.ClientCert.Subject, "relay-client") {
		t.Fatalf("the partner saw client certificate %+v, want relay-client's: mutual TLS must run inside the tunnel", echo.ClientCert)
	}
	if echo.Protocol != "HTTP/2.0" {
		t.Errorf("protocol %s through the tunnel, want HTTP/2.0 (ALPN with the partner)", echo.Protocol)
	}
	seen := proxy.seen()
	if len(seen) != 1 || seen[0].target != srv.Addr() || seen[0].auth != basic("relay", "first-pass") || seen[0].status != 200 {
		t.Fatalf("the proxy saw %+v, want one CONNECT to %s with relay's credentials", seen, srv.Addr())
	}
	if seen[0].userAgent != DefaultUserAgent {
		t.Errorf("CONNECT User-Agent %q, want %q", seen[0].userAgent, DefaultUserAgent)
	}

	// The tunnel is pooled: the next call uses it, with no new CONNECT.
	if out := x.Attempt(context.Background(), proxyCall(t, "via-corp", jobs.Call{}), conn, mat); !out.Result.OK {
		t.Fatalf("second call: %+v", out.Result.Error)
	}
	if n := len(proxy.seen()); n != 1 {
		t.Fatalf("%d CONNECTs after a second call, want the tunnel reused", n)
	}

	// A rotated password is read when the next connection to the proxy is
	// made: no new executor.
	proxy.setPassword("second-pass")
	sec.set("mem:proxy", "second-pass")
	x.Close() // the pooled tunnel goes
	out = x.Attempt(context.Background(), proxyCall(t, "via-corp", jobs.Call{}), conn, mat)
	if !out.Result.OK {
		t.Fatalf("after the rotation: %+v", out.Result.Error)
	}
	seen = proxy.seen()
	if last := seen[len(seen)-1]; last.auth != basic("relay", "second-pass") || last.status != 200 {
		t.Fatalf("after the rotation the proxy saw %+v", last)
	}
	noSecrets(t, out.Result, "first-pass", "second-pass", base64.StdEncoding.EncodeToString([]byte("relay:second-pass")))
}

func TestProxyRefusals(t *testing.T) {
	p := newProxyPKI(t)
	srv := p.partner(t)
	proxy := startConnectProxy(t, "relay", "right-pass", nil)
	sec := &memSecrets{}
	sec.set("mem:wrong", "wrong-pass")
	sec.set("mem:right", "right-pass")
	closed := closedAddr(t)
	x := NewExecutor(ExecutorOptions{
		Secrets: sec.read,
		Proxies: map[string]catalog.Proxy{
			"wrong":   {URL: "http://" + proxy.addr, Username: "relay", Password: "mem:wrong"},
			"nocreds": {URL: "http://" + proxy.addr},
			"right":   {URL: "http://" + proxy.addr, Username: "relay", Password: "mem:right"},
			"down":    {URL: "http://" + closed, Username: "relay", Password: "mem:right"},
			"nopass":  {URL: "http://" + proxy.addr, Username: "relay", Password: "mem:missing"},
		},
	})
	defer x.Close()
	mat := p.material()
	attempt := func(proxyName, base string) Outcome {
		conn := &catalog.Connection{BaseURL: base, Profile: "partner-a", Proxy: proxyName}
		return x.Attempt(context.Background(), proxyCall(t, "via-"+proxyName, jobs.Call{}), conn, mat)
	}
	secretsToHide := []string{"wrong-pass", "right-pass", base64.StdEncoding.EncodeToString([]byte("relay:right-pass"))}

	t.Run("407 wrong password", func(t *testing.T) {
		out := attempt("wrong", srv.URL())
		if len(proxy.seen()) == 0 {
			t.Fatal(hookHint)
		}
		wantProxyCode(t, out, jobs.CodeProxyRefused, false, secretsToHide...)
		msg := out.Result.Error.Message
		for _, want := range []string{"proxy wrong (" + proxy.addr + ")", "407", srv.Addr(), "proxies.wrong"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q does not name %q", msg, want)
			}
		}
	})
	t.Run("407 no credentials", func(t *testing.T) {
		out := attempt("nocreds", srv.URL())
		wantProxyCode(t, out, jobs.CodeProxyRefused, false, secretsToHide...)
		if !strings.Contains(out.Result.Error.Message, "has no username and password") {
			t.Errorf("message %q", out.Result.Error.Message)
		}
	})
	t.Run("403 destination", func(t *testing.T) {
		proxy.setAllow(func(string) bool { return false })
		defer proxy.setAllow(func(string) bool { return true })
		out := attempt("right", srv.URL())
		wantProxyCode(t, out, jobs.CodeProxyRefused, false, secretsToHide...)
		if msg := out.Result.Error.Message; !strings.Contains(msg, "403") || !strings.Contains(msg, srv.Addr()) || !strings.Contains(msg, "proxy right (") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("502 partner unreachable from the proxy", func(t *testing.T) {
		out := attempt("right", "https://"+closed)
		wantProxyCode(t, out, jobs.CodeConnectFailed, true, secretsToHide...)
		if msg := out.Result.Error.Message; !strings.Contains(msg, "502") || !strings.Contains(msg, "proxy right (") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("proxy down", func(t *testing.T) {
		out := attempt("down", srv.URL())
		wantProxyCode(t, out, jobs.CodeConnectFailed, true, secretsToHide...)
		if msg := out.Result.Error.Message; !strings.Contains(msg, "proxy down ("+closed+")") || !strings.Contains(msg, "refused") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("password unreadable", func(t *testing.T) {
		out := attempt("nopass", srv.URL())
		wantProxyCode(t, out, jobs.CodeSecretUnavailable, true, secretsToHide...)
		if msg := out.Result.Error.Message; !strings.Contains(msg, "proxies.nopass.password") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("unknown proxy", func(t *testing.T) {
		out := attempt("nosuch", srv.URL())
		wantProxyCode(t, out, jobs.CodeConnectFailed, false)
		if msg := out.Result.Error.Message; !strings.Contains(msg, `"nosuch"`) {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("host outside allow_hosts: no CONNECT", func(t *testing.T) {
		before := len(proxy.seen())
		conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a", Proxy: "right"}
		out := x.Attempt(context.Background(), proxyCall(t, "via-right", jobs.Call{URL: "https://elsewhere.example:443/echo"}), conn, mat)
		wantProxyCode(t, out, jobs.CodeHostNotAllowed, false)
		if n := len(proxy.seen()); n != before {
			t.Fatalf("the proxy saw %d more CONNECTs, want none", n-before)
		}
	})
	for _, s := range proxy.seen() {
		if s.auth != "" && s.auth != basic("relay", "right-pass") && s.auth != basic("relay", "wrong-pass") {
			t.Errorf("unexpected Proxy-Authorization %q", s.auth)
		}
	}
}

func TestProxyClosesBeforeAnswering(t *testing.T) {
	p := newProxyPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			_, _ = c.Read(buf) // the CONNECT
			c.Close()
		}
	}()
	x := NewExecutor(ExecutorOptions{Proxies: map[string]catalog.Proxy{"flaky": {URL: "http://" + ln.Addr().String()}}})
	defer x.Close()
	conn := &catalog.Connection{BaseURL: "https://127.0.0.1:1", Profile: "partner-a", Proxy: "flaky"}
	out := x.Attempt(context.Background(), proxyCall(t, "flaky", jobs.Call{}), conn, p.material())
	wantProxyCode(t, out, jobs.CodeConnectFailed, true)
	if msg := out.Result.Error.Message; !strings.Contains(msg, "proxy flaky (") || !strings.Contains(msg, "before answering the CONNECT") {
		t.Fatalf("message %q", msg)
	}
}

func TestProxyRoutesHaveTheirOwnPools(t *testing.T) {
	p := newProxyPKI(t)
	srv := p.partner(t)
	a := startConnectProxy(t, "", "", nil)
	b := startConnectProxy(t, "", "", nil)
	x := NewExecutor(ExecutorOptions{
		Proxies: map[string]catalog.Proxy{
			"a": {URL: "http://" + a.addr},
			"b": {URL: "http://" + b.addr},
			// Same URL as b under another name: its own pool all the same
			// (its credentials could differ).
			"b2": {URL: "http://" + b.addr},
		},
		DefaultProxy: "a",
	})
	defer x.Close()
	mat := p.material()

	// Transports: one per route, "" and the default sharing one.
	tc := x.transports
	def, none, viaA, viaB, viaB2 := tc.getVia("c", "", LaneQueued, mat), tc.getVia("c", catalog.ProxyNone, LaneQueued, mat), tc.getVia("c", "a", LaneQueued, mat), tc.getVia("c", "b", LaneQueued, mat), tc.getVia("c", "b2", LaneQueued, mat)
	if def != viaA {
		t.Error("a connection without proxy does not share the default proxy's transport")
	}
	for i, pair := range [][2]*pooledTransport{{none, viaA}, {viaA, viaB}, {viaB, viaB2}, {none, viaB}} {
		if pair[0] == pair[1] {
			t.Errorf("pair %d: two routes share one transport", i)
		}
	}
	if tc.get("c", mat) != def {
		t.Error("get is not getVia with the default proxy")
	}
	if direct := tc.getVia("c", "", LaneDirect, mat); direct == def || direct != tc.getVia("c", "a", LaneDirect, mat) {
		t.Error("the direct lane does not have a transport of its own, per route")
	}

	// The same connection, switched between routes (a registry update),
	// goes where its setting says each time.
	for i, step := range []struct {
		proxy  string
		wantA  int
		wantB  int
		direct bool
	}{
		{"", 1, 0, false},
		{"b", 1, 1, false},
		{catalog.ProxyNone, 1, 1, true},
		{"a", 1, 1, false}, // pooled tunnel through a
		{"b2", 1, 2, false},
		{"b", 1, 2, false}, // pooled tunnel through b
	} {
		conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a", Proxy: step.proxy}
		before := srv.Requests().Connections
		out := x.Attempt(context.Background(), proxyCall(t, "switching", jobs.Call{}), conn, mat)
		if !out.Result.OK {
			t.Fatalf("step %d (%q): %+v", i, step.proxy, out.Result.Error)
		}
		if ga, gb := len(a.seen()), len(b.seen()); ga != step.wantA || gb != step.wantB {
			if ga+gb == 0 || (step.wantB > 0 && gb == 0) {
				t.Fatal(hookHint)
			}
			t.Fatalf("step %d (%q): CONNECTs a=%d b=%d, want a=%d b=%d", i, step.proxy, ga, gb, step.wantA, step.wantB)
		}
		if step.direct && srv.Requests().Connections != before+1 {
			t.Fatalf("step %d: proxy none did not connect directly", i)
		}
	}
}

func TestProxyHTTPS(t *testing.T) {
	p := newProxyPKI(t)
	srv := p.partner(t)
	cert := p.proxy.TLSCertificate()
	proxy := startConnectProxy(t, "relay", "tls-pass", &cert)
	sec := &memSecrets{}
	sec.set("mem:p", "tls-pass")
	opts := ExecutorOptions{
		Secrets: sec.read,
		Proxies: map[string]catalog.Proxy{"corp": {URL: "https://" + proxy.addr, Username: "relay", Password: "mem:p"}},
	}
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a", Proxy: "corp"}
	mat := p.material()

	t.Run("trusted", func(t *testing.T) {
		x := NewExecutor(opts)
		defer x.Close()
		// Instead of the system roots (docs/PROXIES.md: the system's trust
		// store, or SSL_CERT_FILE).
		x.transports.proxies.byName["corp"].tls.RootCAs = p.proxyCA.Pool()
		out := x.Attempt(context.Background(), proxyCall(t, "tls", jobs.Call{}), conn, mat)
		if len(proxy.seen()) == 0 && out.Result.Error != nil && !strings.Contains(out.Result.Error.Message, "proxy corp") {
			t.Fatal(hookHint)
		}
		if !out.Result.OK {
			t.Fatalf("through an https proxy: %+v", out.Result.Error)
		}
		var echo partner.EchoResponse
		if err := json.Unmarshal(out.Result.ResponseBody(), &echo); err != nil {
			t.Fatal(err)
		}
		if echo.ClientCert == nil {
			t.Fatal("the partner saw no client certificate")
		}
		if s := proxy.seen(); len(s) != 1 || s[0].auth != basic("relay", "tls-pass") {
			t.Fatalf("the proxy saw %+v", s)
		}
		if proxy.TLSClientCerts() != 0 {
			t.Fatal("the profile's client certificate was presented to the proxy")
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		x := NewExecutor(opts)
		defer x.Close()
		out := x.Attempt(context.Background(), proxyCall(t, "tls", jobs.Call{}), conn, mat)
		wantProxyCode(t, out, jobs.CodeTLSHandshakeFailed, false, "tls-pass")
		if msg := out.Result.Error.Message; !strings.Contains(msg, "proxy corp (") || !strings.Contains(msg, "system roots") {
			t.Fatalf("message %q", msg)
		}
	})
}

func TestProxyRouteURLs(t *testing.T) {
	for _, c := range []struct {
		url, host string
		tls       bool
		bad       bool
	}{
		{url: "http://proxy.corp.example:3128", host: "proxy.corp.example:3128"},
		{url: "http://proxy.corp.example", host: "proxy.corp.example:80"},
		{url: "https://proxy.corp.example", host: "proxy.corp.example:443", tls: true},
		{url: "https://[2001:db8::1]:8443/", host: "[2001:db8::1]:8443", tls: true},
		{url: "http://user:hunter2@proxy.corp.example:3128", bad: true},
		{url: "socks5://proxy.corp.example:1080", bad: true},
		{url: "proxy.corp.example:3128", bad: true},
	} {
		r := newProxyRoute("p", catalog.Proxy{URL: c.url})
		if c.bad {
			if r.err == nil || strings.Contains(r.err.Message, "hunter2") {
				t.Errorf("%s: err %v", c.url, r.err)
			}
			continue
		}
		if r.err != nil || r.host != c.host || (r.tls != nil) != c.tls || r.connectURL.String() != "http://"+c.host {
			t.Errorf("%s: host %q tls %v connect %v err %v", c.url, r.host, r.tls != nil, r.connectURL, r.err)
		}
	}
	// A password that is not a reference is never echoed.
	r := newProxyRoute("p", catalog.Proxy{URL: "http://127.0.0.1:1", Username: "u", Password: "plain-secret"})
	_, err := r.authorization(context.Background(), func(context.Context, string) ([]byte, error) {
		return nil, errors.New("boom")
	})
	if err == nil || strings.Contains(err.Error(), "plain-secret") {
		t.Fatalf("authorization error %v", err)
	}
}

func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
