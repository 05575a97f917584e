package worker_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testproxy"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// Probe (`mtlsrelay test`) goes where a call goes: through the
// connection's proxy, with the proxy's credentials, and with the
// connection's own credentials on the request that carries them.

const (
	probeProxyUser     = "relay"
	probeProxyPassword = "probe-proxy-password-5b1e"
	probeBasicPassword = "probe-basic-password-0c9d"
	probeClientSecret  = "probe-client-secret-71fa"
	probeToken         = "probe-access-token-e8d2"
)

// probePartner is an mTLS partner: /api answers 200 to requests with the
// credentials it wants (any request when it wants none), 401 otherwise;
// /token is an OAuth2 token endpoint for client "probe-client".
type probePartner struct {
	srv *httptest.Server

	mu          sync.Mutex
	want        string // the Authorization /api wants; "" for none
	conns       int
	authHeaders []string // the Authorization of each /api request
}

func (p *probePartner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/token":
		id, secret, ok := r.BasicAuth()
		if r.Method != http.MethodPost || !ok || id != "probe-client" || secret != probeClientSecret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`+probeToken+`","token_type":"Bearer","expires_in":3600}`)
	case "/api":
		got := r.Header.Get("Authorization")
		p.mu.Lock()
		p.authHeaders = append(p.authHeaders, got)
		want := p.want
		p.mu.Unlock()
		if want != "" && got != want {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func (p *probePartner) setWant(auth string) {
	p.mu.Lock()
	p.want = auth
	p.mu.Unlock()
}

func (p *probePartner) seen() (conns int, auth []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns, append([]string(nil), p.authHeaders...)
}

// probeRig is a partner, a proxy in front of it, and a profile whose
// client certificate the partner accepts.
type probeRig struct {
	partner *probePartner
	proxy   *testproxy.Proxy
	profile secrets.Profile
}

func newProbeRig(t *testing.T, proxyPassword string) *probeRig {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	serverCA, err := pki.NewCA("Probe Partner CA")
	must(err)
	clientCA, err := pki.NewCA("Probe Client CA")
	must(err)
	server, err := serverCA.Issue(pki.LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	must(err)
	client, err := clientCA.Issue(pki.LeafOptions{CommonName: "probe-client", Client: true})
	must(err)

	rig := &probeRig{partner: &probePartner{}}
	srv := httptest.NewUnstartedServer(rig.partner)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
	}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rig.partner.mu.Lock()
			rig.partner.conns++
			rig.partner.mu.Unlock()
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rig.partner.srv = srv

	rig.proxy = testproxy.Start(t, probeProxyUser, proxyPassword, nil)

	b64 := base64.StdEncoding.EncodeToString
	rig.profile = secrets.Profile{Keystore: "base64:" + b64(client.PEM()), Truststore: "base64:" + b64(serverCA.CertPEM())}
	return rig
}

// catalog returns a catalog with connection "c" (base_url the partner's
// /api), as mod makes it.
func (rig *probeRig) catalog(mod func(*catalog.Connection)) *catalog.Catalog {
	c := catalog.Connection{BaseURL: rig.partner.srv.URL + "/api", Profile: "p"}
	if mod != nil {
		mod(&c)
	}
	return &catalog.Catalog{Profiles: map[string]secrets.Profile{"p": rig.profile}, Connections: map[string]catalog.Connection{"c": c}}
}

// config is a worker's config with proxy "corp" in front of the partner,
// whose password is password, and corp as the default proxy when dflt.
func (rig *probeRig) config(password string, dflt bool) *worker.Config {
	cfg := &worker.Config{Proxies: map[string]catalog.Proxy{
		"corp": {URL: "http://" + rig.proxy.Addr(), Username: probeProxyUser, Password: "value:" + password},
	}}
	cfg.Worker.Concurrency = 4
	if dflt {
		cfg.Worker.Proxy = "corp"
	}
	return cfg
}

func (rig *probeRig) probe(t *testing.T, cfg *worker.Config, cat *catalog.Catalog) *worker.ProbeReport {
	t.Helper()
	res := secrets.NewResolver(secrets.DefaultSources(t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep := worker.Probe(ctx, cat, res, worker.ExecutorOptions(cfg, res), "c")
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing secret in the report, whatever the outcome.
	for what, s := range map[string]string{
		"proxy password":          probeProxyPassword,
		"proxy credentials":       base64.StdEncoding.EncodeToString([]byte(probeProxyUser + ":" + probeProxyPassword)),
		"basic password":          probeBasicPassword,
		"basic credentials":       base64.StdEncoding.EncodeToString([]byte("user:" + probeBasicPassword)),
		"client secret":           probeClientSecret,
		"token":                   probeToken,
		"wrong proxy password":    "wrong-" + probeProxyPassword,
		"wrong proxy credentials": base64.StdEncoding.EncodeToString([]byte(probeProxyUser + ":wrong-" + probeProxyPassword)),
	} {
		if strings.Contains(string(b), s) {
			t.Errorf("the report holds the %s:\n%s", what, b)
		}
	}
	t.Logf("report: %s", b)
	return rep
}

func stepNames(rep *worker.ProbeReport) []string {
	var names []string
	for _, s := range rep.Steps {
		names = append(names, s.Name)
	}
	return names
}

func findStep(t *testing.T, rep *worker.ProbeReport, name string) worker.ProbeStep {
	t.Helper()
	for _, s := range rep.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in %v", name, stepNames(rep))
	return worker.ProbeStep{}
}

func wantSteps(t *testing.T, rep *worker.ProbeReport, want ...string) {
	t.Helper()
	if got := strings.Join(stepNames(rep), ","); got != strings.Join(want, ",") {
		t.Fatalf("steps %s, want %s (error %+v)", got, strings.Join(want, ","), rep.Error)
	}
}

func wantContains(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s %q lacks %q", what, s, p)
		}
	}
}

// tunnels counts the proxy's CONNECTs with status, and fails on any
// CONNECT to another target than the partner.
func (rig *probeRig) tunnels(t *testing.T, status int) int {
	t.Helper()
	n := 0
	for _, c := range rig.proxy.Seen() {
		if c.Target != rig.partner.srv.Listener.Addr().String() {
			t.Errorf("CONNECT to %s, want the partner's address only", c.Target)
		}
		if c.Status == status {
			n++
		}
	}
	return n
}

func TestProbeDirect(t *testing.T) {
	rig := newProbeRig(t, probeProxyPassword)
	rep := rig.probe(t, &worker.Config{}, rig.catalog(nil))
	if rep.Error != nil || !rep.Accepted || rep.Status != http.StatusOK || rep.Proxy != nil {
		t.Fatalf("report %+v", rep)
	}
	wantSteps(t, rep, "connection", "keystore", "proxy", "tls", "server chain", "client certificate")
	wantContains(t, "proxy step", findStep(t, rep, "proxy").Detail, "none: direct to "+rig.partner.srv.Listener.Addr().String())
	wantContains(t, "tls step", findStep(t, rep, "tls").Detail, "TLS 1.3", `ALPN "h2"`)
	if n := len(rig.proxy.Seen()); n != 0 {
		t.Errorf("the proxy saw %d CONNECTs", n)
	}
}

// Through the worker's default proxy, with basic credentials for the
// partner: the proxy step names the proxy, the TLS step and both requests
// go through the tunnel, and the credentials reach the partner on the
// credentials step only.
func TestProbeThroughProxyWithStaticAuth(t *testing.T) {
	rig := newProbeRig(t, probeProxyPassword)
	rig.partner.setWant(testproxy.BasicAuth("user", probeBasicPassword))
	cat := rig.catalog(func(c *catalog.Connection) {
		c.Auth = &catalog.Auth{Type: catalog.AuthBasic, Username: "user", Password: "value:" + probeBasicPassword}
	})
	rep := rig.probe(t, rig.config(probeProxyPassword, true), cat)
	wantSteps(t, rep, "connection", "keystore", "proxy", "tls", "server chain", "client certificate", "credentials")
	if rep.Error != nil || !rep.Accepted || rep.Status != http.StatusOK {
		t.Fatalf("report %+v", rep)
	}
	if p := rep.Proxy; p == nil || p.Name != "corp" || p.Host != rig.proxy.Addr() || p.Username != probeProxyUser {
		t.Errorf("report's proxy %+v, want corp at %s as %s", rep.Proxy, rig.proxy.Addr(), probeProxyUser)
	}
	target := rig.partner.srv.Listener.Addr().String()
	wantContains(t, "proxy step", findStep(t, rep, "proxy").Detail,
		"proxy corp ("+rig.proxy.Addr()+")", "worker.proxy", `user "relay"`, "CONNECT to "+target+" opened a tunnel")
	wantContains(t, "tls step", findStep(t, rep, "tls").Detail, "TLS 1.3", "through the tunnel of proxy corp")
	wantContains(t, "client certificate step", findStep(t, rep, "client certificate").Detail, "accepted", "HTTP 401")
	wantContains(t, "credentials step", findStep(t, rep, "credentials").Detail, `basic credentials of user "user"`, "HTTP 200")

	// The TLS step's connection and the requests' all went through the
	// proxy: the partner saw no other connection.
	conns, auth := rig.partner.seen()
	tunnels := rig.tunnels(t, http.StatusOK)
	if tunnels < 2 || conns != tunnels {
		t.Errorf("%d tunnels and %d connections at the partner; want every connection through a tunnel, the TLS step's and the requests'", tunnels, conns)
	}
	if len(auth) != 2 || auth[0] != "" || auth[1] != testproxy.BasicAuth("user", probeBasicPassword) {
		t.Errorf("the partner saw Authorization %q, want none then the basic credentials", auth)
	}
}

// A wrong proxy password fails the proxy step (proxy_refused), and
// nothing reaches the partner.
func TestProbeProxyRefused(t *testing.T) {
	rig := newProbeRig(t, probeProxyPassword)
	rep := rig.probe(t, rig.config("wrong-"+probeProxyPassword, false), rig.catalog(func(c *catalog.Connection) { c.Proxy = "corp" }))
	wantSteps(t, rep, "connection", "keystore", "proxy")
	if rep.Error == nil || rep.Error.Code != jobs.CodeProxyRefused || rep.Accepted {
		t.Fatalf("report %+v, want proxy_refused", rep)
	}
	step := findStep(t, rep, "proxy")
	if step.OK {
		t.Errorf("proxy step %+v is ok", step)
	}
	wantContains(t, "proxy step", step.Detail, "proxy_refused", "proxy corp ("+rig.proxy.Addr()+")", "407")
	if rep.Proxy == nil || rep.Proxy.Name != "corp" {
		t.Errorf("report's proxy %+v", rep.Proxy)
	}
	if n := rig.tunnels(t, http.StatusProxyAuthRequired); n != 1 {
		t.Errorf("%d CONNECTs refused, want 1", n)
	}
	if conns, _ := rig.partner.seen(); conns != 0 {
		t.Errorf("the partner saw %d connections", conns)
	}
}

// A connection's proxy none goes direct even with a default proxy; an
// unknown proxy name fails the proxy step.
func TestProbeProxyChoice(t *testing.T) {
	rig := newProbeRig(t, probeProxyPassword)
	rep := rig.probe(t, rig.config(probeProxyPassword, true), rig.catalog(func(c *catalog.Connection) { c.Proxy = catalog.ProxyNone }))
	if rep.Error != nil || !rep.Accepted || rep.Proxy != nil {
		t.Fatalf("proxy none: report %+v", rep)
	}
	wantContains(t, "proxy step", findStep(t, rep, "proxy").Detail, "direct to", "the connection's proxy is none", "corp is not used")
	if n := len(rig.proxy.Seen()); n != 0 {
		t.Errorf("proxy none: the proxy saw %d CONNECTs", n)
	}

	rep = rig.probe(t, rig.config(probeProxyPassword, true), rig.catalog(func(c *catalog.Connection) { c.Proxy = "elsewhere" }))
	wantSteps(t, rep, "connection", "keystore", "proxy")
	if rep.Error == nil || rep.Error.Code != jobs.CodeConnectFailed {
		t.Fatalf("unknown proxy: report %+v", rep)
	}
	wantContains(t, "proxy step", findStep(t, rep, "proxy").Detail, `"elsewhere"`, "not a proxy of this worker")
}

// OAuth2 through the proxy: the token request and the request with the
// token go through the tunnel; the report names neither secret nor token.
func TestProbeOAuth2ThroughProxy(t *testing.T) {
	rig := newProbeRig(t, probeProxyPassword)
	rig.partner.setWant("Bearer " + probeToken)
	cat := rig.catalog(func(c *catalog.Connection) {
		c.Proxy = "corp"
		c.Auth = &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: rig.partner.srv.URL + "/token", ClientID: "probe-client", ClientSecret: "value:" + probeClientSecret}
	})
	rep := rig.probe(t, rig.config(probeProxyPassword, false), cat)
	wantSteps(t, rep, "connection", "keystore", "proxy", "tls", "server chain", "client certificate", "token", "credentials")
	if rep.Error != nil || rep.Status != http.StatusOK {
		t.Fatalf("report %+v", rep)
	}
	wantContains(t, "proxy step", findStep(t, rep, "proxy").Detail, "proxy corp", "the connection's proxy")
	wantContains(t, "token step", findStep(t, rep, "token").Detail, `client "probe-client"`, "client_auth client_secret_basic")
	wantContains(t, "credentials step", findStep(t, rep, "credentials").Detail, "with the token answered HTTP 200")
	conns, _ := rig.partner.seen()
	if tunnels := rig.tunnels(t, http.StatusOK); tunnels < 2 || conns != tunnels {
		t.Errorf("%d tunnels and %d connections at the partner; want every connection through a tunnel", tunnels, conns)
	}

	// The partner refuses the credentials: the credentials step fails.
	rig.partner.setWant("Bearer another-token")
	rep = rig.probe(t, rig.config(probeProxyPassword, false), cat)
	if rep.Error == nil || rep.Error.Code != jobs.CodeAuthFailed || !rep.Accepted {
		t.Fatalf("refused token: report %+v", rep)
	}
	if last := rep.Steps[len(rep.Steps)-1]; last.Name != "credentials" || last.OK {
		t.Errorf("refused token: last step %+v", last)
	}
}
