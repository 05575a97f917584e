package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/testhydra"
	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// The auth tests run the real worker against a real OAuth2 server (Ory
// Hydra, internal/testhydra, behind an mTLS proxy), a token endpoint of
// RFC 8705's tls_client_auth (test code: Hydra does not implement it), a
// real Vault for rotated client secrets, and an mTLS partner that checks
// the credentials: Hydra's tokens by introspection, the others by value.

// The fixture client certificates, as RFC 4514 subjects.
const (
	fixtureClientDN   = "CN=mtlsrelay-test-client,O=mtlsrelay tests"
	fixtureClientECDN = "CN=mtlsrelay-test-client-ec,O=mtlsrelay tests"
)

// startHydra starts Hydra behind an mTLS proxy with the fixture server
// certificate, requiring client certificates of the fixture CA.
func startHydra(t *testing.T) *testhydra.Hydra {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	return testhydra.Start(t, testhydra.Options{Certificate: cert, ClientCAs: poolFromPEM("ca.pem")})
}

// fixtureLeaf returns the first certificate of a PEM fixture.
func fixtureLeaf(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(fixture(t, name), fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf
}

// tlsAuthServer is a token endpoint of RFC 8705 section 2.1 (PKI mutual
// TLS: tls_client_auth): a client is registered with the subject DN its
// certificate must have; client_id comes in the body, no secret. The
// tokens it issues are bound to the certificate (section 3: cnf x5t#S256).
type tlsAuthServer struct {
	*httptest.Server
	URL string // token URL

	mu       sync.Mutex
	subjects map[string]string // client_id -> subject DN
	tokens   map[string]issuedToken
	requests map[string]int
}

type issuedToken struct {
	client, x5t string
}

func certThumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func startTLSAuthServer(t *testing.T) *tlsAuthServer {
	t.Helper()
	s := &tlsAuthServer{subjects: map[string]string{}, tokens: map[string]issuedToken{}, requests: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	cert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: poolFromPEM("ca.pem"), ClientAuth: tls.RequireAndVerifyClientCert}
	s.StartTLS()
	t.Cleanup(s.Close)
	s.URL = s.Server.URL + "/token"
	return s
}

func (s *tlsAuthServer) register(clientID, subjectDN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subjects[clientID] = subjectDN
}

func (s *tlsAuthServer) serve(w http.ResponseWriter, r *http.Request) {
	oauthError := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(400, "invalid_request", "the body is not a form")
		return
	}
	id := r.PostForm.Get("client_id")
	s.mu.Lock()
	s.requests[id]++
	dn, known := s.subjects[id]
	s.mu.Unlock()
	_, _, basic := r.BasicAuth()
	switch {
	case r.PostForm.Get("grant_type") != "client_credentials":
		oauthError(400, "unsupported_grant_type", "only client_credentials")
	case basic || r.PostForm.Has("client_secret") || r.PostForm.Has("client_assertion"):
		oauthError(400, "invalid_request", "tls_client_auth clients authenticate by their certificate alone")
	case !known:
		oauthError(401, "invalid_client", "unknown client")
	case len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.String() != dn:
		// RFC 8705 section 2.1.2: the subject DN must match the registered one.
		oauthError(401, "invalid_client", "the certificate's subject is not the client's tls_client_auth_subject_dn")
	default:
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		tok := "mtls-" + hex.EncodeToString(b)
		s.mu.Lock()
		s.tokens[tok] = issuedToken{client: id, x5t: certThumbprint(r.TLS.PeerCertificates[0])}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600, "scope": r.PostForm.Get("scope")})
	}
}

func (s *tlsAuthServer) tokenRequests(client string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[client]
}

// check says whether tok was issued to client for the certificate cert
// (RFC 8705 section 3: a certificate-bound token is good with that
// certificate only).
func (s *tlsAuthServer) check(tok, client string, cert *x509.Certificate) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.tokens[tok]
	return ok && it.client == client && cert != nil && it.x5t == certThumbprint(cert)
}

// credPartner is an mTLS partner (fixture server certificate, client
// certificates of the fixture CA required) that checks the credentials of
// each route and answers 401 when they are not right:
//
//	/oauth/{client}          a Hydra token of client (introspected)
//	/once401/{key}/{client}  401 to the first request of key, then /oauth/{client}
//	/always401               401, always
//	/mtls/{client}           a token of the tls_client_auth endpoint, bound to the certificate presented
//	/basic /bearer /header   the static credentials set with expect
type credPartner struct {
	*httptest.Server
	hydra   *testhydra.Hydra
	tlsAuth *tlsAuthServer

	mu     sync.Mutex
	hits   map[string]int
	seen   map[string]bool
	basic  [2]string
	bearer string
	apiKey string
}

func startCredPartner(t *testing.T, h *testhydra.Hydra, ta *tlsAuthServer) *credPartner {
	t.Helper()
	p := &credPartner{hydra: h, tlsAuth: ta, hits: map[string]int{}, seen: map[string]bool{}}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, v map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	deny := func(w http.ResponseWriter) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}
	bearerOf := func(r *http.Request) string {
		v, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !found {
			return ""
		}
		return v
	}
	oauth := func(w http.ResponseWriter, r *http.Request) {
		client := r.PathValue("client")
		tok := bearerOf(r)
		if p.hydra == nil || tok == "" {
			deny(w)
			return
		}
		in, err := p.hydra.Introspect(r.Context(), tok)
		if err != nil || !in.Active || in.ClientID != client {
			deny(w)
			return
		}
		ok(w, map[string]string{"client_id": in.ClientID, "scope": in.Scope, "aud": strings.Join(in.Audience, " ")})
	}
	mux.HandleFunc("/oauth/{client}", oauth)
	mux.HandleFunc("/once401/{key}/{client}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		first := !p.seen[r.PathValue("key")]
		p.seen[r.PathValue("key")] = true
		p.mu.Unlock()
		if first {
			deny(w)
			return
		}
		oauth(w, r)
	})
	mux.HandleFunc("/always401", func(w http.ResponseWriter, r *http.Request) { deny(w) })
	mux.HandleFunc("/mtls/{client}", func(w http.ResponseWriter, r *http.Request) {
		if !p.tlsAuth.check(bearerOf(r), r.PathValue("client"), r.TLS.PeerCertificates[0]) {
			deny(w)
			return
		}
		ok(w, map[string]string{"client_id": r.PathValue("client"), "bound_to": certThumbprint(r.TLS.PeerCertificates[0])})
	})
	mux.HandleFunc("/basic", func(w http.ResponseWriter, r *http.Request) {
		u, pw, found := r.BasicAuth()
		p.mu.Lock()
		want := p.basic
		p.mu.Unlock()
		if !found || u != want[0] || pw != want[1] {
			deny(w)
			return
		}
		ok(w, map[string]string{"user": u})
	})
	mux.HandleFunc("/bearer", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		want := p.bearer
		p.mu.Unlock()
		if bearerOf(r) != want {
			deny(w)
			return
		}
		ok(w, map[string]string{"bearer": "accepted"})
	})
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		want := p.apiKey
		p.mu.Unlock()
		if r.Header.Get("X-Api-Key") != want || r.Header.Get("Authorization") != "" {
			deny(w)
			return
		}
		ok(w, map[string]string{"api_key": "accepted"})
	})
	p.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.hits[r.URL.Path]++
		p.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	cert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	p.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: poolFromPEM("ca.pem"), ClientAuth: tls.RequireAndVerifyClientCert}
	p.EnableHTTP2 = true
	p.StartTLS()
	t.Cleanup(p.Close)
	return p
}

func (p *credPartner) expect(f func(p *credPartner)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *credPartner) hitsOf(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[path]
}

// authEnv is NATS, a worker with the auth connections, Hydra, the
// tls_client_auth endpoint and the partner.
type authEnv struct {
	hydra   *testhydra.Hydra
	tlsAuth *tlsAuthServer
	partner *credPartner
	nc      *nats.Conn
	js      jetstream.JetStream
	logs    *syncBuffer
	never   []string // credentials no log or result may hold
}

const authConfig = `
worker: {concurrency: 64, admin_addr: "off", retry_base: 10ms, retry_max: 50ms}
registry: {disabled: true}
log: {level: debug, format: json}
profiles:
  rsa: {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
  ec:  {keystore: "file:FIX/client-ec-sec1.pem", truststore: "file:FIX/ca.pem"}
connections:
  secret-basic:
    base_url: "PARTNER/oauth/basic-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: basic-client, client_auth: client_secret_basic,
           client_secret: "env:MTLSRELAY_AUTH_BASIC_SECRET", scopes: [orders.read, orders.write], params: {audience: "https://partner.example"}}
  secret-post:
    base_url: "PARTNER/oauth/post-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: post-client, client_auth: client_secret_post,
           client_secret: "env:MTLSRELAY_AUTH_POST_SECRET", scopes: [orders.read]}
  jwt-rsa:
    base_url: "PARTNER/oauth/jwt-rsa-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: jwt-rsa-client, client_auth: private_key_jwt, scopes: [orders.read]}
  jwt-ec:
    base_url: "PARTNER/oauth/jwt-ec-client"
    profile: ec
    auth: {type: oauth2, token_url: "TOKENURL", client_id: jwt-ec-client, client_auth: private_key_jwt}
  tls-auth:
    base_url: "PARTNER/mtls/tls-client"
    profile: rsa
    auth: {type: oauth2, token_url: "MTLSTOKENURL", client_id: tls-client, client_auth: tls_client_auth, scopes: [orders.read]}
  tls-auth-wrong-subject:
    base_url: "PARTNER/mtls/tls-client-ec"
    profile: rsa
    auth: {type: oauth2, token_url: "MTLSTOKENURL", client_id: tls-client-ec, client_auth: tls_client_auth}
  many:
    base_url: "PARTNER/oauth/many-client"
    profile: ec
    auth: {type: oauth2, token_url: "TOKENURL", client_id: many-client, client_secret: "env:MTLSRELAY_AUTH_MANY_SECRET"}
  retry:
    base_url: "PARTNER/"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: retry-client, client_secret: "env:MTLSRELAY_AUTH_RETRY_SECRET"}
  wrong-secret:
    base_url: "PARTNER/oauth/wrong-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: wrong-client, client_secret: "env:MTLSRELAY_AUTH_WRONG_SECRET"}
  unreachable:
    base_url: "PARTNER/oauth/basic-client"
    profile: rsa
    max_attempts: 2
    auth: {type: oauth2, token_url: "https://127.0.0.1:CLOSED/oauth2/token", client_id: basic-client, client_secret: "env:MTLSRELAY_AUTH_BASIC_SECRET"}
`

// Client secrets of the Hydra clients, set in the worker's environment.
const (
	authBasicSecret = "basic-client-secret-8b1f2e"
	authPostSecret  = "post-client-secret-0c55aa"
	authManySecret  = "many-client-secret-9d04c1"
	authRetrySecret = "retry-client-secret-4417be"
	authWrongSecret = "wrong-client-secret-WRONG-77"
	authRightSecret = "wrong-client-secret-right-78"
)

func startAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	env := &authEnv{hydra: startHydra(t), tlsAuth: startTLSAuthServer(t), logs: &syncBuffer{}}
	env.partner = startCredPartner(t, env.hydra, env.tlsAuth)
	h := env.hydra
	rsaJWK, rsaAlg := testhydra.JWK(fixtureLeaf(t, "client.pem"))
	ecJWK, ecAlg := testhydra.JWK(fixtureLeaf(t, "client-ec-sec1.pem"))
	if rsaAlg != "RS256" || ecAlg != "ES256" {
		t.Fatalf("fixture keys: %s and %s", rsaAlg, ecAlg)
	}
	h.CreateClient(t, testhydra.Client{ID: "basic-client", Secret: authBasicSecret, AuthMethod: "client_secret_basic",
		Scope: "orders.read orders.write", Audience: []string{"https://partner.example"}})
	h.CreateClient(t, testhydra.Client{ID: "post-client", Secret: authPostSecret, AuthMethod: "client_secret_post", Scope: "orders.read"})
	h.CreateClient(t, testhydra.Client{ID: "jwt-rsa-client", AuthMethod: "private_key_jwt", Scope: "orders.read",
		JWKS: []map[string]any{rsaJWK}, SigningAlg: rsaAlg})
	h.CreateClient(t, testhydra.Client{ID: "jwt-ec-client", AuthMethod: "private_key_jwt", JWKS: []map[string]any{ecJWK}, SigningAlg: ecAlg})
	h.CreateClient(t, testhydra.Client{ID: "many-client", Secret: authManySecret, AuthMethod: "client_secret_basic"})
	h.CreateClient(t, testhydra.Client{ID: "retry-client", Secret: authRetrySecret, AuthMethod: "client_secret_basic"})
	h.CreateClient(t, testhydra.Client{ID: "wrong-client", Secret: authRightSecret, AuthMethod: "client_secret_basic"})
	env.tlsAuth.register("tls-client", fixtureClientDN)
	env.tlsAuth.register("tls-client-ec", fixtureClientECDN)

	t.Setenv("MTLSRELAY_AUTH_BASIC_SECRET", authBasicSecret)
	t.Setenv("MTLSRELAY_AUTH_POST_SECRET", authPostSecret)
	t.Setenv("MTLSRELAY_AUTH_MANY_SECRET", authManySecret)
	t.Setenv("MTLSRELAY_AUTH_RETRY_SECRET", authRetrySecret)
	t.Setenv("MTLSRELAY_AUTH_WRONG_SECRET", authWrongSecret)
	env.never = []string{authBasicSecret, authPostSecret, authManySecret, authRetrySecret, authWrongSecret, authRightSecret}

	cfg := configYAML(t, authConfig, "PARTNER", env.partner.URL, "MTLSTOKENURL", env.tlsAuth.URL, "TOKENURL", h.TokenURL, "CLOSED", closedPort(t))
	srv := startNATS(t)
	env.nc, env.js = connect(t, srv.ClientURL())
	runWorker(t, env.nc, cfg, worker.WithLogger(zerolog.New(env.logs).Level(zerolog.DebugLevel)),
		worker.WithResolver(secrets.NewResolver(secrets.DefaultSources(fixtures(t)))))
	t.Cleanup(func() { env.assertNoCredentials(t, "worker logs", env.logs.String()) })
	return env
}

// assertNoCredentials checks s for every client secret, assertion and
// token the test knows of.
func (env *authEnv) assertNoCredentials(t *testing.T, what, s string) {
	t.Helper()
	assertNoSecrets(t, what, s)
	never := append([]string(nil), env.never...)
	never = append(never, env.hydra.Credentials()...)
	env.tlsAuth.mu.Lock()
	for tok := range env.tlsAuth.tokens {
		never = append(never, tok)
	}
	env.tlsAuth.mu.Unlock()
	for _, n := range never {
		if n == "" {
			continue
		}
		// A token or assertion may be long: any 24 bytes of it would do.
		if len(n) > 24 {
			n = n[len(n)-24:]
		}
		if strings.Contains(s, n) {
			i := strings.Index(s, n)
			t.Errorf("%s holds a credential near %q", what, s[max(0, i-80):i])
		}
	}
}

func (env *authEnv) call(t *testing.T, conn string, c map[string]any) *jobs.Result {
	t.Helper()
	r := call(t, env.nc, env.js, conn, c)
	data, _ := json.Marshal(r)
	env.assertNoCredentials(t, "result", string(data))
	return r
}

// okAs checks that r is the partner's 200 naming client.
func okAs(t *testing.T, r *jobs.Result, client string) map[string]string {
	t.Helper()
	if !r.OK || r.Status != 200 || r.Error != nil {
		t.Fatalf("status %d error %v body %s", r.Status, r.Error, r.Body)
	}
	var body map[string]string
	if err := json.Unmarshal(r.ResponseBody(), &body); err != nil || body["client_id"] != client {
		t.Fatalf("partner answered %s (%v), want client %s", r.Body, err, client)
	}
	return body
}

// TestAuthOAuth2 makes calls with tokens from Hydra for each client_auth
// method Hydra implements, and from the RFC 8705 endpoint for
// tls_client_auth; checks that 64 concurrent calls share one token
// request, that a 401 gets one renewal and one more try, and the failures.
func TestAuthOAuth2(t *testing.T) {
	env := startAuthEnv(t)
	h := env.hydra

	t.Run("ok/client_secret_basic-with-scopes-and-audience", func(t *testing.T) {
		body := okAs(t, env.call(t, "secret-basic", map[string]any{}), "basic-client")
		if body["scope"] != "orders.read orders.write" || body["aud"] != "https://partner.example" {
			t.Fatalf("token scope %q aud %q", body["scope"], body["aud"])
		}
	})
	t.Run("ok/client_secret_post", func(t *testing.T) {
		okAs(t, env.call(t, "secret-post", map[string]any{"method": "POST", "body": `{"a":1}`}), "post-client")
	})
	t.Run("ok/private_key_jwt-RS256", func(t *testing.T) {
		okAs(t, env.call(t, "jwt-rsa", map[string]any{}), "jwt-rsa-client")
	})
	t.Run("ok/private_key_jwt-ES256", func(t *testing.T) {
		okAs(t, env.call(t, "jwt-ec", map[string]any{}), "jwt-ec-client")
		okAs(t, env.call(t, "jwt-ec", map[string]any{}), "jwt-ec-client")
		if n := h.TokenRequests("jwt-ec-client"); n != 1 {
			t.Fatalf("%d token requests for two calls", n)
		}
	})
	t.Run("ok/tls_client_auth-certificate-bound", func(t *testing.T) {
		okAs(t, env.call(t, "tls-auth", map[string]any{}), "tls-client")
		if n := env.tlsAuth.tokenRequests("tls-client"); n != 1 {
			t.Fatalf("%d token requests", n)
		}
	})
	t.Run("fail/tls_client_auth-other-subject-is-auth_failed", func(t *testing.T) {
		r := env.call(t, "tls-auth-wrong-subject", map[string]any{})
		if r.Error == nil || r.Error.Code != jobs.CodeAuthFailed || r.Error.Retryable || r.Attempt != 1 {
			t.Fatalf("result %+v error %+v", r, r.Error)
		}
		t.Logf("auth_failed: %s", r.Error.Message)
		if !strings.Contains(r.Error.Message, "invalid_client") || !strings.Contains(r.Error.Message, env.tlsAuth.URL) {
			t.Fatalf("message %q", r.Error.Message)
		}
	})
	t.Run("ok/64-concurrent-calls-one-token-request", func(t *testing.T) {
		for round := range 2 {
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 64 {
				wg.Go(func() {
					r, err := tryCall(env.nc, env.js, "many", uniqueID(fmt.Sprintf("many-%d-%d", round, i)), map[string]any{})
					switch {
					case err != nil:
						errs <- err
					case !r.OK:
						errs <- fmt.Errorf("call %d: status %d error %v", i, r.Status, r.Error)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		}
		if n := h.TokenRequests("many-client"); n != 1 {
			t.Fatalf("%d token requests for 128 calls, 64 at a time, want 1", n)
		}
		if n := env.partner.hitsOf("/oauth/many-client"); n != 128 {
			t.Fatalf("partner saw %d calls", n)
		}
	})
	t.Run("ok/401-renews-once-and-tries-again", func(t *testing.T) {
		okAs(t, env.call(t, "retry", map[string]any{"path": "oauth/retry-client"}), "retry-client")
		before := h.TokenRequests("retry-client")
		r := env.call(t, "retry", map[string]any{"path": "once401/k1/retry-client", "method": "POST", "body": "replayed"})
		okAs(t, r, "retry-client")
		if r.Attempt != 1 {
			t.Fatalf("attempt %d: the retry after a 401 is part of the attempt", r.Attempt)
		}
		if n := h.TokenRequests("retry-client") - before; n != 1 {
			t.Fatalf("%d token requests after a 401, want 1", n)
		}
		if n := env.partner.hitsOf("/once401/k1/retry-client"); n != 2 {
			t.Fatalf("partner saw %d requests, want 2", n)
		}
	})
	t.Run("fail/second-401-is-the-result", func(t *testing.T) {
		before := h.TokenRequests("retry-client")
		r := env.call(t, "retry", map[string]any{"path": "always401"})
		if r.OK || r.Status != 401 || r.Error != nil || r.Attempt != 1 {
			t.Fatalf("status %d error %v attempt %d", r.Status, r.Error, r.Attempt)
		}
		if n := h.TokenRequests("retry-client") - before; n != 1 {
			t.Fatalf("%d token requests, want 1", n)
		}
		if n := env.partner.hitsOf("/always401"); n != 2 {
			t.Fatalf("partner saw %d requests, want 2", n)
		}
	})
	t.Run("fail/own-authorization-is-invalid_call", func(t *testing.T) {
		before := env.partner.hitsOf("/oauth/basic-client")
		r := env.call(t, "secret-basic", map[string]any{"headers": map[string][]string{"authorization": {"Bearer mine"}}})
		if r.Error == nil || r.Error.Code != jobs.CodeInvalidCall || !strings.Contains(r.Error.Message, "Authorization") {
			t.Fatalf("error %+v", r.Error)
		}
		t.Logf("invalid_call: %s", r.Error.Message)
		if env.partner.hitsOf("/oauth/basic-client") != before {
			t.Fatal("the call reached the partner")
		}
	})
	t.Run("fail/refused-client-is-auth_failed-not-retried", func(t *testing.T) {
		r := env.call(t, "wrong-secret", map[string]any{})
		if r.Error == nil || r.Error.Code != jobs.CodeAuthFailed || r.Error.Retryable || r.Attempt != 1 {
			t.Fatalf("attempt %d error %+v", r.Attempt, r.Error)
		}
		t.Logf("auth_failed: %s", r.Error.Message)
		for _, want := range []string{h.TokenURL, `"invalid_client"`, `client "wrong-client"`, "client_secret_basic"} {
			if !strings.Contains(r.Error.Message, want) {
				t.Errorf("message lacks %q: %s", want, r.Error.Message)
			}
		}
		if env.partner.hitsOf("/oauth/wrong-client") != 0 {
			t.Fatal("the call reached the partner without a token")
		}
	})
	t.Run("fail/unreachable-token-endpoint-is-connect_failed-retried", func(t *testing.T) {
		r := env.call(t, "unreachable", map[string]any{"method": "POST", "body": "x"})
		if r.Error == nil || r.Error.Code != jobs.CodeConnectFailed || !r.Error.Retryable || r.Attempt != 2 {
			t.Fatalf("attempt %d error %+v", r.Attempt, r.Error)
		}
		t.Logf("connect_failed: %s", r.Error.Message)
		if !strings.Contains(r.Error.Message, "requesting a token for connection unreachable") {
			t.Fatalf("message %q", r.Error.Message)
		}
	})
}

// TestAuthVaultClientSecretRotation keeps the client secret in a real
// Vault: a revoked secret gives auth_failed; once it is rotated in Hydra
// and in Vault, calls succeed again without a restart.
func TestAuthVaultClientSecretRotation(t *testing.T) {
	v := testvault.Start(t)
	h := startHydra(t)
	p := startCredPartner(t, h, nil)
	const (
		revoked = "vaulted-secret-revoked-31"
		current = "vaulted-secret-current-32"
		rotated = "vaulted-secret-rotated-33"
	)
	h.CreateClient(t, testhydra.Client{ID: "vault-client", Secret: current, AuthMethod: "client_secret_post", Scope: "orders.read"})
	v.PutKV("secret", "partners/a", map[string]any{"client_secret": revoked})

	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	sources := secrets.DefaultSources(fixtures(t))
	client, err := vault.New(context.Background(), vault.Config{Address: v.Addr, Auth: vault.AuthConfig{Token: "value:" + v.RootToken}, PollInterval: time.Second}, sources, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.Register(sources)
	cfg := configYAML(t, `
worker: {concurrency: 8, admin_addr: "off", retry_base: 10ms, retry_max: 50ms}
registry: {disabled: true}
profiles:
  rsa: {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
connections:
  vaulted:
    base_url: "PARTNER/oauth/vault-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: vault-client, client_auth: client_secret_post,
           client_secret: "vault:secret/partners/a#client_secret", scopes: [orders.read]}
`, "PARTNER", p.URL, "TOKENURL", h.TokenURL)
	srv := startNATS(t)
	nc, js := connect(t, srv.ClientURL())
	startWorkerWithResolver(t, srv.ClientURL(), cfg, secrets.NewResolver(sources), log)
	never := []string{revoked, current, rotated, v.RootToken}
	check := func(what, s string) {
		t.Helper()
		for _, n := range append(never, h.Credentials()...) {
			if n != "" && strings.Contains(s, n) {
				t.Errorf("%s holds a credential (%.8s...)", what, n)
			}
		}
	}
	t.Cleanup(func() { check("worker logs", logs.String()) })

	r := call(t, nc, js, "vaulted", map[string]any{})
	if r.Error == nil || r.Error.Code != jobs.CodeAuthFailed || r.Error.Retryable || r.Attempt != 1 {
		t.Fatalf("with the revoked secret: attempt %d error %+v", r.Attempt, r.Error)
	}
	if !strings.Contains(r.Error.Message, "invalid_client") || !strings.Contains(r.Error.Message, h.TokenURL) {
		t.Fatalf("message %q", r.Error.Message)
	}
	data, _ := json.Marshal(r)
	check("result", string(data))

	// The partner's owner rotates the secret; the new one is put in Vault.
	h.SetSecret(t, "vault-client", rotated)
	v.PutKV("secret", "partners/a", map[string]any{"client_secret": rotated})
	start := time.Now()
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		r := call(t, nc, js, "vaulted", map[string]any{})
		data, _ := json.Marshal(r)
		check("result", string(data))
		if !r.OK {
			return fmt.Errorf("status %d error %v", r.Status, r.Error)
		}
		return nil
	})
	t.Logf("the rotated secret was used %s after it was written to Vault (poll_interval 1s)", time.Since(start).Round(100*time.Millisecond))
	if n := h.TokenRequests("vault-client"); n < 2 {
		t.Fatalf("%d token requests", n)
	}
}

// TestAuthStaticCredentials sends basic, bearer and header credentials
// read from secrets (a file rotated in place is used without a restart),
// and refuses a call's own copy of the header.
func TestAuthStaticCredentials(t *testing.T) {
	p := startCredPartner(t, nil, nil)
	p.expect(func(p *credPartner) {
		p.basic = [2]string{"relay-user", "basic-password-e41d"}
		p.bearer = "static-bearer-token-7a0c"
		p.apiKey = "api-key-value-5b2f"
	})
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "bearer")
	if err := os.WriteFile(tokenFile, []byte("static-bearer-token-7a0c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MTLSRELAY_AUTH_BASIC_PASSWORD", "basic-password-e41d")
	cfg := configYAML(t, `
worker: {concurrency: 8, admin_addr: "off", retry_base: 10ms, retry_max: 50ms}
registry: {disabled: true}
profiles:
  rsa: {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
connections:
  basic:  {base_url: "PARTNER/basic", profile: rsa, auth: {type: basic, username: relay-user, password: "env:MTLSRELAY_AUTH_BASIC_PASSWORD"}}
  bearer: {base_url: "PARTNER/bearer", profile: rsa, auth: {type: bearer, token: "file:TOKENFILE"}}
  header: {base_url: "PARTNER/header", profile: rsa, auth: {type: header, name: X-Api-Key, value: "value:api-key-value-5b2f"}}
`, "PARTNER", p.URL, "TOKENFILE", tokenFile)
	logs := &syncBuffer{}
	srv := startNATS(t)
	nc, js := connect(t, srv.ClientURL())
	runWorker(t, nc, cfg, worker.WithLogger(zerolog.New(logs).Level(zerolog.DebugLevel)),
		worker.WithResolver(secrets.NewResolver(secrets.DefaultSources(fixtures(t)))))
	never := []string{"basic-password-e41d", "static-bearer-token-7a0c", "static-bearer-token-8b1d", "api-key-value-5b2f",
		base64.StdEncoding.EncodeToString([]byte("relay-user:basic-password-e41d"))}
	check := func(what, s string) {
		t.Helper()
		for _, n := range never {
			if strings.Contains(s, n) {
				t.Errorf("%s holds a credential (%.8s...)", what, n)
			}
		}
	}
	t.Cleanup(func() { check("worker logs", logs.String()) })
	do := func(t *testing.T, conn string, c map[string]any) *jobs.Result {
		t.Helper()
		r := call(t, nc, js, conn, c)
		data, _ := json.Marshal(r)
		check("result", string(data))
		return r
	}
	for _, conn := range []string{"basic", "bearer", "header"} {
		t.Run("ok/"+conn, func(t *testing.T) {
			if r := do(t, conn, map[string]any{}); !r.OK {
				t.Fatalf("status %d error %v", r.Status, r.Error)
			}
		})
	}
	t.Run("ok/bearer-file-rotated-without-restart", func(t *testing.T) {
		p.expect(func(p *credPartner) { p.bearer = "static-bearer-token-8b1d" })
		if r := do(t, "bearer", map[string]any{}); r.OK || r.Status != 401 {
			t.Fatalf("before the rotation: status %d", r.Status)
		}
		if err := os.WriteFile(tokenFile, []byte("static-bearer-token-8b1d\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
			if r := do(t, "bearer", map[string]any{}); !r.OK {
				return fmt.Errorf("status %d error %v", r.Status, r.Error)
			}
			return nil
		})
	})
	t.Run("fail/own-auth-header-is-invalid_call", func(t *testing.T) {
		for conn, header := range map[string]string{"header": "x-api-key", "basic": "Authorization"} {
			r := do(t, conn, map[string]any{"headers": map[string][]string{header: {"mine"}}})
			if r.Error == nil || r.Error.Code != jobs.CodeInvalidCall {
				t.Errorf("%s with its own %s: %+v", conn, header, r.Error)
			}
		}
	})
}

// TestAuthCLITest: `mtlsrelay test CONNECTION` shows the token step
// (endpoint, client authentication, scopes granted, expiry), and the
// credentials step, never the token or the secret.
func TestAuthCLITest(t *testing.T) {
	h := startHydra(t)
	p := startCredPartner(t, h, nil)
	h.CreateClient(t, testhydra.Client{ID: "cli-client", Secret: "cli-client-secret-6e3a", AuthMethod: "client_secret_basic", Scope: "orders.read orders.write"})
	ecJWK, ecAlg := testhydra.JWK(fixtureLeaf(t, "client-ec-sec1.pem"))
	h.CreateClient(t, testhydra.Client{ID: "cli-jwt", AuthMethod: "private_key_jwt", JWKS: []map[string]any{ecJWK}, SigningAlg: ecAlg, TokenLifespan: 10 * time.Minute})
	cfg := writeConfig(t, `
registry: {disabled: true}
profiles:
  rsa: {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
  ec:  {keystore: "file:FIX/client-ec-sec1.pem", truststore: "file:FIX/ca.pem"}
connections:
  good:
    base_url: "PARTNER/oauth/cli-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: cli-client, client_secret: "env:CLI_SECRET", scopes: [orders.read]}
  jwt:
    base_url: "PARTNER/oauth/cli-jwt"
    profile: ec
    auth: {type: oauth2, token_url: "TOKENURL", client_id: cli-jwt, client_auth: private_key_jwt}
  wrong:
    base_url: "PARTNER/oauth/cli-client"
    profile: rsa
    auth: {type: oauth2, token_url: "TOKENURL", client_id: cli-client, client_secret: "env:CLI_WRONG"}
`, "PARTNER", p.URL, "TOKENURL", h.TokenURL)
	env := []string{"CLI_SECRET=cli-client-secret-6e3a", "CLI_WRONG=cli-client-secret-wrong"}
	noLeak := func(out string) {
		t.Helper()
		for _, n := range append([]string{"cli-client-secret-6e3a", "cli-client-secret-wrong"}, h.Credentials()...) {
			if strings.Contains(out, n) {
				t.Errorf("output holds a credential (%.8s...)", n)
			}
		}
	}

	out, errOut, code := runCLI(t, env, "test", "good", "--config", cfg)
	if code != 0 {
		t.Fatalf("test good: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"ok   token", "from " + h.TokenURL, `client "cli-client"`, "client_auth client_secret_basic",
		`scopes granted "orders.read"`, "Bearer token valid until", "renewed at", "ok   credentials", "answered HTTP 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("test good output lacks %q:\n%s", want, out)
		}
	}
	// Hydra's expires_in is a second short of its TTL.
	if !regexp.MustCompile(`valid until \S+ \((59m5\ds|1h0m0s)\)`).MatchString(out) {
		t.Errorf("test good output lacks the token's lifetime:\n%s", out)
	}
	noLeak(out + errOut)

	out, errOut, code = runCLI(t, env, "test", "jwt", "--config", cfg)
	if code != 0 || !strings.Contains(out, "client_auth private_key_jwt (kid "+certThumbprint(fixtureLeaf(t, "client-ec-sec1.pem"))+")") || !regexp.MustCompile(`\((9m5\ds|10m0s)\)`).MatchString(out) {
		t.Errorf("test jwt: exit %d\n%s%s", code, out, errOut)
	}
	noLeak(out + errOut)

	out, errOut, code = runCLI(t, env, "test", "wrong", "--config", cfg, "--json")
	if code != 2 {
		t.Fatalf("test wrong: exit %d, want 2\n%s%s", code, out, errOut)
	}
	var rep struct {
		Steps []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"steps"`
		Error *jobs.Error `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Error == nil || rep.Error.Code != jobs.CodeAuthFailed {
		t.Fatalf("test wrong: %v %s", err, out)
	}
	last := rep.Steps[len(rep.Steps)-1]
	if last.Name != "token" || last.OK || !strings.Contains(last.Detail, "invalid_client") {
		t.Errorf("last step %+v", last)
	}
	noLeak(out + errOut)
}
