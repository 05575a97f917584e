package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/testhydra"
	"github.com/mtlsrelay/mtlsrelay/internal/testsquid"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// panicSource is a secret source that panics with the secret in the panic
// value, as a buggy provider might.
type panicSource struct{ secret string }

func (p panicSource) Fetch(context.Context, secrets.Ref) (secrets.Secret, error) {
	panic("provider bug while holding " + p.secret)
}

// TestNoSecretLeaks sweeps everything a worker writes — its log at debug
// level, results, dead letters, metrics, and what follows a panic — and
// what `mtlsrelay test` reports (worker.Probe, as JSON) for the password
// and the key bytes of every profile kind, for the credentials of
// connection auth: client secrets, client assertions and tokens of OAuth2
// (a real Hydra), basic passwords, bearer tokens and header values, and
// for the password of an egress proxy (a real Squid with basic
// authentication), right and wrong, and its Proxy-Authorization form.
func TestNoSecretLeaks(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	hydra := startHydra(t)
	const (
		sweepProxyUser     = "sweeper"
		sweepProxyPassword = "sweep-proxy-password-9d3b"
		sweepProxyWrong    = "sweep-proxy-wrong-52e0"
	)
	sq := testsquid.Start(t, testsquid.Options{
		Users:        map[string]string{sweepProxyUser: sweepProxyPassword},
		AllowConnect: []string{p.Addr()},
	})
	t.Setenv("MTLSRELAY_SWEEP_PROXY", sweepProxyPassword)
	const (
		sweepClientSecret  = "sweep-client-secret-a81c"
		sweepPostSecret    = "sweep-post-secret-f09b"
		sweepRefusedSecret = "sweep-refused-secret-33d7"
		sweepBasicPassword = "sweep-basic-password-1e2f"
		sweepBearerToken   = "sweep-bearer-token-c4c4"
		sweepHeaderValue   = "sweep-header-value-77aa"
	)
	hydra.CreateClient(t, testhydra.Client{ID: "sweep-basic", Secret: sweepClientSecret, AuthMethod: "client_secret_basic", Scope: "s1"})
	hydra.CreateClient(t, testhydra.Client{ID: "sweep-post", Secret: sweepPostSecret, AuthMethod: "client_secret_post"})
	hydra.CreateClient(t, testhydra.Client{ID: "sweep-refused", Secret: "sweep-refused-right-secret", AuthMethod: "client_secret_basic"})
	jwk, alg := testhydra.JWK(fixtureLeaf(t, "client.pem"))
	hydra.CreateClient(t, testhydra.Client{ID: "sweep-jwt", AuthMethod: "private_key_jwt", JWKS: []map[string]any{jwk}, SigningAlg: alg})
	t.Setenv("MTLSRELAY_SWEEP_CLIENT_SECRET", sweepClientSecret)
	t.Setenv("MTLSRELAY_SWEEP_BASIC", sweepBasicPassword)
	t.Setenv("MTLSRELAY_SWEEP_HEADER", sweepHeaderValue)
	p12, err := os.ReadFile(fixture(t, "client-openssl.p12"))
	if err != nil {
		t.Fatal(err)
	}
	inline := base64.StdEncoding.EncodeToString(p12)
	const envPassword = "env-only-Secret-4711"
	t.Setenv("MTLSRELAY_SWEEP_PASSWORD", fixturePassword)
	t.Setenv("MTLSRELAY_SWEEP_WRONG", envPassword)
	cfgYAML := configYAML(t, `
worker: {concurrency: 8, admin_addr: "off", retry_base: 10ms, retry_max: 50ms}
registry: {disabled: true}
proxies:
  squid:       {url: "SQUID", username: sweeper, password: "env:MTLSRELAY_SWEEP_PROXY"}
  squid-wrong: {url: "SQUID", username: sweeper, password: "value:SWEEPPROXYWRONG"}
profiles:
  p12:       {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_SWEEP_PASSWORD", truststore: "file:FIX/ca.pem"}
  legacy:    {keystore: "file:FIX/client-openssl-legacy.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  keytool:   {keystore: "file:FIX/client-keytool.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  jks:       {keystore: "file:FIX/client-keytool.jks", password: "value:fixture-pass-123", truststore: "file:FIX/truststore.jks", truststore_password: "value:fixture-pass-123"}
  pem:       {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
  pem-enc:   {keystore: "file:FIX/client-encrypted.pem", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  inline:    {keystore: "base64:INLINE", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  wrong:     {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_SWEEP_WRONG", truststore: "file:FIX/ca.pem"}
  panicking: {keystore: "file:FIX/client-openssl.p12", password: "cyberark:Safe/obj#Content", truststore: "file:FIX/ca.pem"}
  untrusting: {keystore: "file:FIX/client-keytool.jks", password: "value:fixture-pass-123", truststore: "file:FIX/other-ca.pem"}
connections:
  p12:        {base_url: "PARTNER", profile: p12}
  legacy:     {base_url: "PARTNER", profile: legacy}
  keytool:    {base_url: "PARTNER", profile: keytool}
  jks:        {base_url: "PARTNER", profile: jks}
  pem:        {base_url: "PARTNER", profile: pem}
  pem-enc:    {base_url: "PARTNER", profile: pem-enc}
  inline:     {base_url: "PARTNER", profile: inline}
  wrong:      {base_url: "PARTNER", profile: wrong}
  panicking:  {base_url: "PARTNER", profile: panicking}
  untrusting: {base_url: "PARTNER", profile: untrusting}
  oauth-basic:   {base_url: "PARTNER", profile: p12, auth: {type: oauth2, token_url: "TOKENURL", client_id: sweep-basic, client_secret: "env:MTLSRELAY_SWEEP_CLIENT_SECRET", scopes: [s1]}}
  oauth-post:    {base_url: "PARTNER", profile: p12, auth: {type: oauth2, token_url: "TOKENURL", client_id: sweep-post, client_auth: client_secret_post, client_secret: "value:SWEEPPOST"}}
  oauth-jwt:     {base_url: "PARTNER", profile: p12, auth: {type: oauth2, token_url: "TOKENURL", client_id: sweep-jwt, client_auth: private_key_jwt}}
  oauth-refused: {base_url: "PARTNER", profile: p12, auth: {type: oauth2, token_url: "TOKENURL", client_id: sweep-refused, client_secret: "value:SWEEPREFUSED"}}
  static-basic:  {base_url: "PARTNER", profile: p12, auth: {type: basic, username: sweeper, password: "env:MTLSRELAY_SWEEP_BASIC"}}
  static-bearer: {base_url: "PARTNER", profile: p12, auth: {type: bearer, token: "value:SWEEPBEARER"}}
  static-header: {base_url: "PARTNER", profile: p12, auth: {type: header, name: X-Sweep-Key, value: "env:MTLSRELAY_SWEEP_HEADER"}}
  squid-ok:      {base_url: "PARTNER", profile: p12, proxy: squid}
  squid-basic:   {base_url: "PARTNER", profile: p12, proxy: squid, auth: {type: basic, username: sweeper, password: "env:MTLSRELAY_SWEEP_BASIC"}}
  squid-wrong:   {base_url: "PARTNER", profile: p12, proxy: squid-wrong}
`, "PARTNER", p.URL(), "INLINE", inline, "TOKENURL", hydra.TokenURL,
		"SWEEPPOST", sweepPostSecret, "SWEEPREFUSED", sweepRefusedSecret, "SWEEPBEARER", sweepBearerToken,
		"SQUID", sq.URL(), "SWEEPPROXYWRONG", sweepProxyWrong)
	sources := secrets.DefaultSources(t.TempDir())
	sources.Register(secrets.SchemeCyberArk, panicSource{secret: fixturePassword})
	resolver := secrets.NewResolver(sources)
	logs := &syncBuffer{}
	nc, js := connect(t, srv.ClientURL())
	w := runWorker(t, nc, cfgYAML, worker.WithLogger(zerolog.New(logs).Level(zerolog.TraceLevel)),
		worker.WithResolver(resolver))

	var everything strings.Builder
	for _, conn := range []string{"p12", "legacy", "keytool", "jks", "pem", "pem-enc", "inline", "wrong", "panicking", "untrusting"} {
		r := call(t, nc, js, conn, map[string]any{"path": "echo", "method": "POST", "body": "x"})
		switch conn {
		case "wrong":
			if r.Error == nil || r.Error.Code != jobs.CodeKeystorePasswordWrong {
				t.Errorf("wrong password: %+v", r.Error)
			}
		case "panicking":
			if r.Error == nil || r.Error.Code != jobs.CodeInternal {
				t.Errorf("panicking provider: %+v", r.Error)
			}
		case "untrusting":
			if r.Error == nil || r.Error.Code != jobs.CodeServerCertUntrusted {
				t.Errorf("untrusting: %+v", r.Error)
			}
		default:
			if !r.OK {
				t.Errorf("%s: %+v", conn, r.Error)
			}
		}
	}
	// Connection auth: the partner's /status/200 does not echo the
	// request, so whatever credential shows below leaked from the worker.
	for _, conn := range []string{"oauth-basic", "oauth-post", "oauth-jwt", "oauth-refused", "static-basic", "static-bearer", "static-header"} {
		r := call(t, nc, js, conn, map[string]any{"path": "status/200", "method": "POST", "body": "x"})
		if conn == "oauth-refused" {
			if r.Error == nil || r.Error.Code != jobs.CodeAuthFailed {
				t.Errorf("refused client: %+v", r.Error)
			}
			continue
		}
		if !r.OK {
			t.Errorf("%s: status %d error %+v", conn, r.Status, r.Error)
		}
	}
	// Through Squid: with the right password (and the partner's basic
	// credentials on top), and with a wrong one, refused by Squid (407).
	for _, conn := range []string{"squid-ok", "squid-basic", "squid-wrong"} {
		r := call(t, nc, js, conn, map[string]any{"path": "status/200", "method": "POST", "body": "x"})
		if conn == "squid-wrong" {
			if r.Error == nil || r.Error.Code != jobs.CodeProxyRefused || !strings.Contains(r.Error.Message, "407") {
				t.Errorf("wrong proxy password: %+v", r.Error)
			}
			continue
		}
		if !r.OK {
			t.Errorf("%s: status %d error %+v", conn, r.Status, r.Error)
		}
	}
	// `mtlsrelay test` (worker.Probe, with the worker's executor options)
	// on connections through Squid, with OAuth2 and with static auth: its
	// reports, as --json prints them, are swept too.
	cfg, err := worker.ParseConfig([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	cat := &catalog.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections}
	for _, conn := range []string{"squid-ok", "squid-basic", "squid-wrong", "oauth-basic", "static-basic"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		rep := worker.Probe(ctx, cat, resolver, worker.ExecutorOptions(cfg, resolver), conn)
		cancel()
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		everything.Write(b)
		everything.WriteString("\n")
		var names []string
		for _, s := range rep.Steps {
			names = append(names, s.Name)
		}
		last := rep.Steps[len(rep.Steps)-1]
		switch conn {
		case "squid-wrong":
			if rep.Error == nil || rep.Error.Code != jobs.CodeProxyRefused || last.Name != "proxy" || rep.Proxy == nil || rep.Proxy.Name != "squid-wrong" {
				t.Errorf("test %s: want the proxy step to fail with proxy_refused: %s", conn, b)
			}
		case "squid-ok", "squid-basic":
			if rep.Error != nil || !rep.Accepted || rep.Proxy == nil || rep.Proxy.Name != "squid" || rep.Proxy.Host != sq.Addr() {
				t.Errorf("test %s: want success through proxy squid at %s: %s", conn, sq.Addr(), b)
			}
		default:
			if rep.Error != nil || !rep.Accepted || last.Name != "credentials" || rep.Proxy != nil {
				t.Errorf("test %s: want success, direct, ending with the credentials step: %s", conn, b)
			}
		}
		t.Logf("test %s: steps %v", conn, names)
	}
	// Squid logs a tunnel when it closes: once Squid is stopped, every
	// tunnel is in its log. The worker's calls (squid-ok, squid-basic)
	// made one each, and each test through Squid two (its TLS step's, and
	// its requests'): had any gone around Squid, fewer would show.
	sq.Stop()
	tunnels, refusals := 0, 0
	for _, e := range sq.Connects(t) {
		if e.Target != p.Addr() {
			t.Errorf("Squid saw a CONNECT to %s, want %s only: %s", e.Target, p.Addr(), e.Line)
		}
		switch e.Status {
		case http.StatusOK:
			tunnels++
			if e.User != sweepProxyUser {
				t.Errorf("tunnel of user %q, want %s: %s", e.User, sweepProxyUser, e.Line)
			}
		case http.StatusProxyAuthRequired:
			refusals++
		}
	}
	if tunnels < 6 || refusals < 2 {
		t.Errorf("Squid logged %d tunnels and %d refusals (407), want at least 6 (2 calls, 2 tests of 2) and 2 (a call, a test):\n%v", tunnels, refusals, sq.Log(t))
	}
	// A call's own Authorization is refused (the call, its own value with
	// it, is dead-lettered as any refused call is: that is the flow's data).
	if r := call(t, nc, js, "oauth-basic", map[string]any{"path": "status/200", "headers": map[string][]string{"Authorization": {"Bearer the-flow-s-own"}}}); r.Error == nil || r.Error.Code != jobs.CodeInvalidCall {
		t.Errorf("own Authorization: %+v", r.Error)
	}
	// Results and dead letters as stored, raw.
	for _, stream := range []string{jobs.StreamResults, jobs.StreamDead} {
		everything.WriteString(readStream(t, js, stream))
	}
	admin := httptest.NewServer(w.AdminHandler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(metrics) == 0 {
		t.Errorf("/metrics = %d", resp.StatusCode)
	}
	everything.Write(metrics)
	everything.WriteString(logs.String())
	if !strings.Contains(logs.String(), "panicked") {
		t.Errorf("the provider's panic was not logged")
	}

	all := everything.String()
	leaks := map[string]string{
		"keystore password":     fixturePassword,
		"env-only password":     envPassword,
		"inline keystore":       inline[100:160],
		"PEM key body":          pemKeyFragment(t, "client.pem"),
		"encrypted PEM key":     pemKeyFragment(t, "client-encrypted.pem"),
		"client secret":         sweepClientSecret,
		"inline client secret":  sweepPostSecret,
		"refused client secret": sweepRefusedSecret,
		"basic password":        sweepBasicPassword,
		"basic credentials":     base64.StdEncoding.EncodeToString([]byte("sweeper:" + sweepBasicPassword)),
		"bearer token":          sweepBearerToken,
		"header value":          sweepHeaderValue,
		"proxy password":        sweepProxyPassword,
		"proxy credentials":     base64.StdEncoding.EncodeToString([]byte(sweepProxyUser + ":" + sweepProxyPassword)),
		"wrong proxy password":  sweepProxyWrong,
		"wrong proxy creds":     base64.StdEncoding.EncodeToString([]byte(sweepProxyUser + ":" + sweepProxyWrong)),
	}
	creds := hydra.Credentials() // secrets, assertions and tokens at the token endpoint
	if len(creds) < 6 {
		t.Errorf("the token endpoint saw %d credentials; want the secrets, an assertion and the tokens", len(creds))
	}
	for i, c := range creds {
		if len(c) > 32 {
			c = c[len(c)-32:] // the signature of an assertion, the tail of a token
		}
		leaks[fmt.Sprintf("token endpoint credential %d", i)] = c
	}
	for what, secret := range leaks {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Errorf("%s leaked: ...%s...", what, all[max(0, i-120):min(len(all), i+40)])
		}
	}
	assertNoSecrets(t, "worker output", all)
}

// pemKeyFragment returns a piece of the base64 body of the key in a PEM file.
func pemKeyFragment(t *testing.T, name string) string {
	b, err := os.ReadFile(fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "PRIVATE KEY-----")
	if i < 0 {
		t.Fatalf("%s has no key", name)
	}
	body := strings.ReplaceAll(s[i+len("PRIVATE KEY-----"):], "\n", "")
	return body[40:100]
}

// readStream returns every message of stream, data and headers, as text.
func readStream(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%v %s\n", m.Header, m.Data)
	}
	return b.String()
}
