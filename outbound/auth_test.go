package outbound_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// secretMap is a secret reader over a map of references, counting reads;
// Set rotates a secret.
type secretMap struct {
	mu    sync.Mutex
	m     map[string]string
	reads atomic.Int64
}

func newSecretMap(kv ...string) *secretMap {
	s := &secretMap{m: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.m[kv[i]] = kv[i+1]
	}
	return s
}

func (s *secretMap) Set(ref, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[ref] = v
}

func (s *secretMap) Read(_ context.Context, ref string) ([]byte, error) {
	s.reads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[ref]
	if !ok {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable, "no such secret").WithRetryable(false)
	}
	return []byte(v), nil
}

func authExecutor(t testing.TB, s *secretMap) *outbound.Executor {
	x := outbound.NewExecutor(outbound.ExecutorOptions{MaxIdleConnsPerHost: 64, Secrets: s.Read})
	t.Cleanup(x.Close)
	return x
}

// tokenRequest is what the test token endpoint was sent.
type tokenRequest struct {
	Form       url.Values
	BasicUser  string
	BasicPass  string
	HasBasic   bool
	ClientCert *x509.Certificate
}

// tokenServer is an OAuth2 token endpoint over mTLS (client certificates
// of the execPKI's client CA required) that issues tok-N to anyone, unless
// refuse says otherwise.
type tokenServer struct {
	*httptest.Server
	URL string // the token URL

	mu        sync.Mutex
	reqs      []tokenRequest
	expiresIn int
	// respond, when set, answers instead: return false to issue a token.
	respond func(w http.ResponseWriter, r tokenRequest) bool
	delay   time.Duration
	n       atomic.Int64
}

func startTokenServer(t testing.TB, p *execPKI) *tokenServer {
	t.Helper()
	ts := &tokenServer{expiresIn: 3600}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(ts.serve))
	ts.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.server.TLSCertificate()},
		ClientCAs:    p.clientCA.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	ts.URL = ts.Server.URL + "/oauth2/token"
	return ts
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/oauth2/token" {
		http.Error(w, "no", http.StatusNotFound)
		return
	}
	_ = r.ParseForm()
	tr := tokenRequest{Form: r.PostForm}
	tr.BasicUser, tr.BasicPass, tr.HasBasic = r.BasicAuth()
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		tr.ClientCert = r.TLS.PeerCertificates[0]
	}
	ts.mu.Lock()
	ts.reqs = append(ts.reqs, tr)
	respond, expiresIn, delay := ts.respond, ts.expiresIn, ts.delay
	ts.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if respond != nil && respond(w, tr) {
		return
	}
	n := ts.n.Add(1)
	body := map[string]any{"access_token": fmt.Sprintf("tok-%d", n), "token_type": "bearer", "scope": tr.Form.Get("scope")}
	if expiresIn > 0 {
		body["expires_in"] = expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func (ts *tokenServer) requests() []tokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]tokenRequest(nil), ts.reqs...)
}

func (ts *tokenServer) set(f func(ts *tokenServer)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	f(ts)
}

// authPartner is an mTLS partner that answers 200 with the Authorization
// (and X-Api-Key) it got, or 401 when check says no.
type authPartner struct {
	*httptest.Server
	mu    sync.Mutex
	seen  []string
	check func(r *http.Request, auth string) bool
}

func startAuthPartner(t testing.TB, p *execPKI) *authPartner {
	t.Helper()
	ap := &authPartner{}
	ap.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		ap.mu.Lock()
		ap.seen = append(ap.seen, auth)
		check := ap.check
		ap.mu.Unlock()
		if check != nil && !check(r, auth) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"authorization": auth, "api_key": r.Header.Get("X-Api-Key"), "body": string(body)})
	}))
	ap.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.server.TLSCertificate()},
		ClientCAs:    p.clientCA.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	ap.StartTLS()
	t.Cleanup(ap.Close)
	return ap
}

func (ap *authPartner) setCheck(f func(r *http.Request, auth string) bool) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	ap.check = f
}

func (ap *authPartner) authorizations() []string {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return append([]string(nil), ap.seen...)
}

type partnerAnswer struct {
	Authorization string `json:"authorization"`
	APIKey        string `json:"api_key"`
	Body          string `json:"body"`
}

func answer(t *testing.T, out outbound.Outcome) partnerAnswer {
	t.Helper()
	if out.Result.Error != nil || out.Result.Status != 200 {
		t.Fatalf("attempt: status %d error %v", out.Result.Status, out.Result.Error)
	}
	var a partnerAnswer
	if err := json.Unmarshal(out.Result.ResponseBody(), &a); err != nil {
		t.Fatalf("partner answer: %v: %s", err, out.Result.Body)
	}
	return a
}

// The static credentials: built from secrets read for every request, so a
// rotated secret is sent on the next call.
func TestAuthStatic(t *testing.T) {
	p := newExecPKI(t)
	ap := startAuthPartner(t, p)
	s := newSecretMap("env:PW", "s3cret-pw", "env:TOKEN", "static-token-1", "env:KEY", "key-1")
	x := authExecutor(t, s)
	mat := execMaterial(p, "v1", nil)
	call := restCall(t, jobs.Call{Method: "POST", Path: "/x", Body: "hello"})

	basic := &catalog.Connection{BaseURL: ap.URL, Profile: "partner-a", Auth: &catalog.Auth{Type: catalog.AuthBasic, Username: "relay", Password: "env:PW"}}
	bearer := &catalog.Connection{BaseURL: ap.URL, Profile: "partner-a", Auth: &catalog.Auth{Type: catalog.AuthBearer, Token: "env:TOKEN"}}
	header := &catalog.Connection{BaseURL: ap.URL, Profile: "partner-a", Auth: &catalog.Auth{Type: catalog.AuthHeader, Name: "x-api-key", Value: "env:KEY"}}

	t.Run("ok/basic", func(t *testing.T) {
		a := answer(t, x.Attempt(context.Background(), call, basic, mat))
		if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("relay:s3cret-pw")); a.Authorization != want || a.Body != "hello" {
			t.Fatalf("partner got %+v, want %s", a, want)
		}
	})
	t.Run("ok/bearer-rotated-without-restart", func(t *testing.T) {
		if a := answer(t, x.Attempt(context.Background(), call, bearer, mat)); a.Authorization != "Bearer static-token-1" {
			t.Fatalf("partner got %q", a.Authorization)
		}
		s.Set("env:TOKEN", "static-token-2")
		if a := answer(t, x.Attempt(context.Background(), call, bearer, mat)); a.Authorization != "Bearer static-token-2" {
			t.Fatalf("after rotation the partner got %q", a.Authorization)
		}
	})
	t.Run("ok/header", func(t *testing.T) {
		a := answer(t, x.Attempt(context.Background(), call, header, mat))
		if a.APIKey != "key-1" || a.Authorization != "" {
			t.Fatalf("partner got %+v", a)
		}
	})
	t.Run("fail/missing-secret-keeps-code", func(t *testing.T) {
		c := *bearer
		c.Auth = &catalog.Auth{Type: catalog.AuthBearer, Token: "env:NOPE"}
		out := x.Attempt(context.Background(), call, &c, mat)
		// Not found: the source's code, and its "not retried".
		if e := out.Result.Error; e == nil || e.Code != jobs.CodeSecretUnavailable || e.Retryable {
			t.Fatalf("error %+v", e)
		}
		if out.Sent || !strings.Contains(out.Result.Error.Message, "auth token (env:NOPE)") {
			t.Fatalf("sent %v, message %q", out.Sent, out.Result.Error.Message)
		}
	})
	t.Run("fail/line-break-in-secret", func(t *testing.T) {
		s.Set("env:BAD", "a\nb")
		c := *bearer
		c.Auth = &catalog.Auth{Type: catalog.AuthBearer, Token: "env:BAD"}
		wantError(t, x.Attempt(context.Background(), call, &c, mat), jobs.CodeKeystoreInvalid)
	})
	t.Run("fail/inline-secret-redacted", func(t *testing.T) {
		c := *bearer
		c.Auth = &catalog.Auth{Type: catalog.AuthBearer, Token: "value:inline-secret-xyz"}
		out := x.Attempt(context.Background(), call, &c, mat) // not in the map: refused
		if out.Result.Error == nil || strings.Contains(out.Result.Error.Message, "inline-secret-xyz") {
			t.Fatalf("message holds the inline secret: %s", out.Result.Error.Message)
		}
	})
	t.Run("fail/no-secret-reader", func(t *testing.T) {
		out := newExecutor(t).Attempt(context.Background(), call, bearer, mat)
		wantError(t, out, jobs.CodeInternal)
		if out.Sent {
			t.Fatal("sent without credentials")
		}
	})
}

// Each client_auth method sends what its RFC says, over mTLS with the
// profile's certificate, with the scopes and params.
func TestAuthOAuth2ClientAuthMethods(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	s := newSecretMap("env:CS", "client-secret/with+chars")
	mat := execMaterial(p, "v1", nil)
	call := restCall(t, jobs.Call{Path: "/x"})
	conn := func(method string) *catalog.Connection {
		a := &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: ts.URL, ClientID: "relay:a", ClientAuth: method,
			Scopes: []string{"orders.read", "orders.write"}, Params: map[string]string{"audience": "https://partner.example"}}
		if method == "" || method == catalog.ClientSecretBasic || method == catalog.ClientSecretPost {
			a.ClientSecret = "env:CS"
		}
		return &catalog.Connection{BaseURL: ap.URL, Profile: "partner-a", Auth: a}
	}
	for _, method := range []string{"", catalog.ClientSecretBasic, catalog.ClientSecretPost, catalog.PrivateKeyJWT, catalog.TLSClientAuth} {
		name := method
		if name == "" {
			name = "default"
		}
		t.Run("ok/"+name, func(t *testing.T) {
			x := authExecutor(t, s)
			before := len(ts.requests())
			a := answer(t, x.Attempt(context.Background(), call, conn(method), mat))
			reqs := ts.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("%d token requests", len(reqs))
			}
			r := reqs[0]
			if !strings.HasPrefix(a.Authorization, "Bearer tok-") {
				t.Fatalf("partner got %q", a.Authorization)
			}
			f := r.Form
			if f.Get("grant_type") != "client_credentials" || f.Get("scope") != "orders.read orders.write" || f.Get("audience") != "https://partner.example" {
				t.Fatalf("token request form %v", f)
			}
			if r.ClientCert == nil || r.ClientCert.SerialNumber.Cmp(p.client.Cert.SerialNumber) != 0 {
				t.Fatal("the token request did not present the profile's certificate")
			}
			switch method {
			case "", catalog.ClientSecretBasic:
				// RFC 6749 section 2.3.1: form-encoded, then basic.
				if !r.HasBasic || r.BasicUser != url.QueryEscape("relay:a") || r.BasicPass != url.QueryEscape("client-secret/with+chars") || f.Has("client_secret") {
					t.Fatalf("basic %v %q %q, form %v", r.HasBasic, r.BasicUser, r.BasicPass, f)
				}
			case catalog.ClientSecretPost:
				if r.HasBasic || f.Get("client_id") != "relay:a" || f.Get("client_secret") != "client-secret/with+chars" {
					t.Fatalf("form %v", f)
				}
			case catalog.TLSClientAuth:
				if r.HasBasic || f.Get("client_id") != "relay:a" || f.Has("client_secret") || f.Has("client_assertion") {
					t.Fatalf("form %v", f)
				}
			case catalog.PrivateKeyJWT:
				if r.HasBasic || f.Has("client_secret") || f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
					t.Fatalf("form %v", f)
				}
				checkAssertion(t, f.Get("client_assertion"), p.client.Cert, "ES256", "relay:a", ts.URL)
			}
		})
	}
}

// checkAssertion verifies a private_key_jwt client assertion with cert's
// public key and checks its claims (RFC 7523 section 3).
func checkAssertion(t *testing.T, assertion string, cert *x509.Certificate, alg, clientID, aud string) {
	t.Helper()
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(assertion, &claims, func(tok *jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithValidMethods([]string{alg}), jwt.WithAudience(aud), jwt.WithIssuer(clientID), jwt.WithSubject(clientID),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("client assertion does not verify: %v", err)
	}
	sum := sha256.Sum256(cert.Raw)
	if kid := tok.Header["kid"]; kid != base64.RawURLEncoding.EncodeToString(sum[:]) || kid != outbound.KeyID(cert) {
		t.Fatalf("kid %v, want the certificate's SHA-256 thumbprint", kid)
	}
	if len(claims.ID) < 16 || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 5*time.Minute {
		t.Fatalf("jti %q, lifetime %s", claims.ID, claims.ExpiresAt.Sub(claims.IssuedAt.Time))
	}
}

// The algorithm follows the key: RS256, ES256, ES384, EdDSA.
func TestAuthOAuth2AssertionAlgorithms(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		alg string
		key crypto.Signer
	}{{"RS256", rsaKey}, {"ES384", p384}, {"EdDSA", edKey}} {
		t.Run("ok/"+tc.alg, func(t *testing.T) {
			cert := selfSignedClient(t, p, tc.key)
			mat := execMaterial(p, "v-"+tc.alg, func(c *tls.Config) {
				c.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: tc.key, Leaf: cert}}
			})
			mat.Leaf = cert
			if got := outbound.SigningAlgorithm(cert.PublicKey); got != tc.alg {
				t.Fatalf("SigningAlgorithm = %q", got)
			}
			x := authExecutor(t, newSecretMap())
			conn := &catalog.Connection{BaseURL: ap.URL, Profile: "partner-a",
				Auth: &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: ts.URL, ClientID: "c-" + tc.alg, ClientAuth: catalog.PrivateKeyJWT}}
			before := len(ts.requests())
			answer(t, x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/"}), conn, mat))
			r := ts.requests()[before]
			checkAssertion(t, r.Form.Get("client_assertion"), cert, tc.alg, "c-"+tc.alg, ts.URL)
		})
	}
}

// selfSignedClient returns a client certificate for key, signed by p's
// client CA.
func selfSignedClient(t *testing.T, p *execPKI, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "relay-client-other-key"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.clientCA.Cert, key.Public(), p.clientCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func oauthConn(ts *tokenServer, base string) *catalog.Connection {
	return &catalog.Connection{BaseURL: base, Profile: "partner-a",
		Auth: &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: ts.URL, ClientID: "relay", ClientSecret: "env:CS"}}
}

// 64 calls at once on a cold executor share one token request, and the
// token serves every later call while it lives.
func TestAuthOAuth2OneTokenRequestPerLifetime(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ts.set(func(ts *tokenServer) { ts.delay = 100 * time.Millisecond })
	ap := startAuthPartner(t, p)
	x := authExecutor(t, newSecretMap("env:CS", "cs"))
	mat := execMaterial(p, "v1", nil)
	conn := oauthConn(ts, ap.URL)
	var wg sync.WaitGroup
	errs := make(chan error, 64*3)
	for round := range 3 {
		for i := range 64 {
			wg.Go(func() {
				out := x.Attempt(context.Background(), restCall(t, jobs.Call{ID: fmt.Sprintf("c-%d-%d", round, i), Path: "/"}), conn, mat)
				if out.Result.Error != nil || out.Result.Status != 200 {
					errs <- fmt.Errorf("call %d: status %d error %v", i, out.Result.Status, out.Result.Error)
				}
			})
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(ts.requests()); n != 1 {
		t.Fatalf("%d token requests for 192 calls, want 1", n)
	}
	for _, a := range ap.authorizations() {
		if a != "Bearer tok-1" {
			t.Fatalf("partner got %q", a)
		}
	}
}

// A token is renewed before it expires, in the background: no call waits
// for it or is refused.
func TestAuthOAuth2RenewsBeforeExpiry(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ts.set(func(ts *tokenServer) { ts.expiresIn = 2 }) // renewed after about 1s
	ap := startAuthPartner(t, p)
	x := authExecutor(t, newSecretMap("env:CS", "cs"))
	mat := execMaterial(p, "v1", nil)
	conn := oauthConn(ts, ap.URL)
	end := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(end) {
		answer(t, x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/"}), conn, mat))
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(ts.requests()); n < 3 || n > 5 {
		t.Fatalf("%d token requests in 3.5s for a 2s token renewed at half-life, want 3 to 5", n)
	}
}

// A 401 from the partner drops the token, gets one new token and tries
// once more, with the same body; a second 401 is the result.
func TestAuthOAuth2RenewsOnceAfter401(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	x := authExecutor(t, newSecretMap("env:CS", "cs"))
	mat := execMaterial(p, "v1", nil)
	conn := oauthConn(ts, ap.URL)
	revoked := map[string]bool{}
	var mu sync.Mutex
	ap.setCheck(func(r *http.Request, auth string) bool {
		mu.Lock()
		defer mu.Unlock()
		return !revoked[auth]
	})
	call := restCall(t, jobs.Call{Method: "POST", Path: "/", Body: "the body"})
	answer(t, x.Attempt(context.Background(), call, conn, mat))

	t.Run("ok/renewed-and-retried", func(t *testing.T) {
		mu.Lock()
		revoked["Bearer tok-1"] = true
		mu.Unlock()
		before, seen := len(ts.requests()), len(ap.authorizations())
		a := answer(t, x.Attempt(context.Background(), call, conn, mat))
		if a.Authorization != "Bearer tok-2" || a.Body != "the body" {
			t.Fatalf("partner got %+v", a)
		}
		if n := len(ts.requests()) - before; n != 1 {
			t.Fatalf("%d token requests, want 1", n)
		}
		if got := ap.authorizations()[seen:]; len(got) != 2 || got[0] != "Bearer tok-1" {
			t.Fatalf("partner saw %q", got)
		}
	})
	t.Run("ok/concurrent-401s-renew-once", func(t *testing.T) {
		mu.Lock()
		revoked["Bearer tok-2"] = true
		mu.Unlock()
		before := len(ts.requests())
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				out := x.Attempt(context.Background(), call, conn, mat)
				if out.Result.Status != 200 {
					t.Errorf("status %d error %v", out.Result.Status, out.Result.Error)
				}
			})
		}
		wg.Wait()
		if n := len(ts.requests()) - before; n != 1 {
			t.Fatalf("%d token requests after 32 concurrent 401s, want 1", n)
		}
	})
	t.Run("fail/second-401-is-the-result", func(t *testing.T) {
		ap.setCheck(func(*http.Request, string) bool { return false })
		before, seen := len(ts.requests()), len(ap.authorizations())
		out := x.Attempt(context.Background(), call, conn, mat)
		if out.Result.Error != nil || out.Result.Status != 401 || out.Result.OK || !out.Sent {
			t.Fatalf("status %d error %v ok %v", out.Result.Status, out.Result.Error, out.Result.OK)
		}
		if n, m := len(ts.requests())-before, len(ap.authorizations())-seen; n != 1 || m != 2 {
			t.Fatalf("%d token requests and %d partner requests, want 1 and 2", n, m)
		}
	})
}

// A refusal by the token endpoint is auth_failed, naming the endpoint and
// the OAuth error, never the secret; it is not asked again with the same
// secret at once, and a rotated secret is used at once.
func TestAuthOAuth2Refused(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	s := newSecretMap("env:CS", "wrong-secret-value")
	x := authExecutor(t, s)
	mat := execMaterial(p, "v1", nil)
	conn := oauthConn(ts, ap.URL)
	ts.set(func(ts *tokenServer) {
		ts.respond = func(w http.ResponseWriter, r tokenRequest) bool {
			if r.BasicPass == "right-secret" {
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			// A careless server echoing what it got.
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": "bad secret " + r.BasicPass})
			return true
		}
	})
	call := restCall(t, jobs.Call{Path: "/"})
	out := x.Attempt(context.Background(), call, conn, mat)
	wantError(t, out, jobs.CodeAuthFailed)
	msg := out.Result.Error.Message
	for _, want := range []string{ts.URL, `"invalid_client"`, "bad secret", `client "relay"`, "client_secret_basic"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "wrong-secret-value") || out.Sent || len(ap.authorizations()) != 0 {
		t.Fatalf("secret in message, or the call was sent: %s", msg)
	}
	// The same secret again: refused without asking.
	wantError(t, x.Attempt(context.Background(), call, conn, mat), jobs.CodeAuthFailed)
	if n := len(ts.requests()); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	s.Set("env:CS", "right-secret")
	answer(t, x.Attempt(context.Background(), call, conn, mat))
	if n := len(ts.requests()); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
}

// What goes wrong on the way to the token endpoint is classified as a
// call's failures are: retryable when it may pass.
func TestAuthOAuth2EndpointFailures(t *testing.T) {
	p := newExecPKI(t)
	ap := startAuthPartner(t, p)
	mat := execMaterial(p, "v1", nil)
	call := restCall(t, jobs.Call{Path: "/"})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()

	t.Run("fail/unreachable-is-connect_failed", func(t *testing.T) {
		x := authExecutor(t, newSecretMap("env:CS", "cs"))
		conn := oauthConn(&tokenServer{URL: "https://" + closed + "/token"}, ap.URL)
		out := x.Attempt(context.Background(), call, conn, mat)
		wantError(t, out, jobs.CodeConnectFailed)
		if out.Sent || !strings.Contains(out.Result.Error.Message, "requesting a token for connection") {
			t.Fatalf("sent %v: %s", out.Sent, out.Result.Error.Message)
		}
	})
	t.Run("fail/5xx-is-retryable", func(t *testing.T) {
		ts := startTokenServer(t, p)
		ts.set(func(ts *tokenServer) {
			ts.respond = func(w http.ResponseWriter, _ tokenRequest) bool {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return true
			}
		})
		out := authExecutor(t, newSecretMap("env:CS", "cs")).Attempt(context.Background(), call, oauthConn(ts, ap.URL), mat)
		wantError(t, out, jobs.CodeHTTPStatus)
	})
	t.Run("fail/slow-endpoint-is-timeout", func(t *testing.T) {
		ts := startTokenServer(t, p)
		ts.set(func(ts *tokenServer) { ts.delay = time.Second })
		conn := oauthConn(ts, ap.URL)
		conn.Timeout = catalog.Duration(300 * time.Millisecond)
		out := authExecutor(t, newSecretMap("env:CS", "cs")).Attempt(context.Background(), call, conn, mat)
		wantError(t, out, jobs.CodeTimeout)
	})
	t.Run("fail/untrusted-endpoint", func(t *testing.T) {
		other := newExecPKI(t)
		ts := startTokenServer(t, other) // a server certificate the profile does not trust
		out := authExecutor(t, newSecretMap("env:CS", "cs")).Attempt(context.Background(), call, oauthConn(ts, ap.URL), mat)
		wantError(t, out, jobs.CodeServerCertUntrusted)
	})
	t.Run("fail/not-a-token-answer", func(t *testing.T) {
		ts := startTokenServer(t, p)
		ts.set(func(ts *tokenServer) {
			ts.respond = func(w http.ResponseWriter, _ tokenRequest) bool {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"token_type":"bearer"}`))
				return true
			}
		})
		out := authExecutor(t, newSecretMap("env:CS", "cs")).Attempt(context.Background(), call, oauthConn(ts, ap.URL), mat)
		wantError(t, out, jobs.CodeAuthFailed)
	})
	t.Run("fail/redirect-not-followed", func(t *testing.T) {
		ts := startTokenServer(t, p)
		ts.set(func(ts *tokenServer) {
			ts.respond = func(w http.ResponseWriter, _ tokenRequest) bool {
				w.Header().Set("Location", "https://elsewhere.example/token")
				w.WriteHeader(http.StatusFound)
				return true
			}
		})
		out := authExecutor(t, newSecretMap("env:CS", "cs")).Attempt(context.Background(), call, oauthConn(ts, ap.URL), mat)
		wantError(t, out, jobs.CodeAuthFailed)
		if !strings.Contains(out.Result.Error.Message, "HTTP 302") {
			t.Fatal(out.Result.Error.Message)
		}
	})
}

// Token requests go through the connection's egress dialer, which allows
// the token_url's host for them even when it is a loopback name that
// neither base_url nor allow_hosts names; calls may still not go there.
func TestAuthOAuth2TokenHostAllowedForTokensOnly(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	x := authExecutor(t, newSecretMap("env:CS", "cs"))
	mat := execMaterial(p, "v1", nil)
	// base_url names localhost; the token endpoint is 127.0.0.1, which
	// the egress rules refuse to any request but a token request.
	conn := oauthConn(ts, strings.Replace(ap.URL, "127.0.0.1", "localhost", 1))
	answer(t, x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/"}), conn, mat))
	u, _ := url.Parse(ts.URL)
	out := x.Attempt(context.Background(), restCall(t, jobs.Call{URL: "https://" + u.Host + "/oauth2/token"}), conn, mat)
	wantError(t, out, jobs.CodeHostNotAllowed)
}

// A new profile version (a rotated certificate) gets its own token: a
// certificate-bound token is only good with the certificate it was
// issued for.
func TestAuthOAuth2TokenPerProfileVersion(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	ap := startAuthPartner(t, p)
	x := authExecutor(t, newSecretMap("env:CS", "cs"))
	conn := oauthConn(ts, ap.URL)
	call := restCall(t, jobs.Call{Path: "/"})
	v1, v2 := execMaterial(p, "v1", nil), execMaterial(p, "v2", nil)
	a1 := answer(t, x.Attempt(context.Background(), call, conn, v1))
	a2 := answer(t, x.Attempt(context.Background(), call, conn, v2))
	a1again := answer(t, x.Attempt(context.Background(), call, conn, v1))
	if a1.Authorization == a2.Authorization || a1.Authorization != a1again.Authorization || len(ts.requests()) != 2 {
		t.Fatalf("v1 %q, v2 %q, v1 again %q, %d token requests", a1.Authorization, a2.Authorization, a1again.Authorization, len(ts.requests()))
	}
}

// Token describes the token for `mtlsrelay test`, never showing it.
func TestAuthOAuth2TokenInfo(t *testing.T) {
	p := newExecPKI(t)
	ts := startTokenServer(t, p)
	x := authExecutor(t, newSecretMap())
	mat := execMaterial(p, "v1", nil)
	conn := &catalog.Connection{BaseURL: "https://partner.example", Profile: "partner-a",
		Auth: &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: ts.URL + "?tenant=x", ClientID: "relay", ClientAuth: catalog.PrivateKeyJWT, Scopes: []string{"a"}}}
	info, err := x.Token(context.Background(), "partner-a-api", conn, mat)
	if err != nil {
		t.Fatal(err)
	}
	if info.TokenURL != ts.URL || info.ClientAuth != catalog.PrivateKeyJWT || info.Granted != "a" || !info.GrantedNamed ||
		info.KeyID != outbound.KeyID(p.client.Cert) || info.TokenType != "Bearer" ||
		info.Expiry.Sub(info.Obtained).Round(time.Minute) != time.Hour || !info.RenewAt.Before(info.Expiry) {
		t.Fatalf("info %+v", info)
	}
	b, _ := json.Marshal(info)
	if strings.Contains(string(b), "tok-") {
		t.Fatalf("info holds the token: %s", b)
	}
}

// Following a redirect to another host drops the connection's credentials
// (Go drops Authorization itself; the header of type header too).
func TestAuthRedirectDropsCredentials(t *testing.T) {
	p := newExecPKI(t)
	ap := startAuthPartner(t, p)
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(ap.URL, "127.0.0.1", "localhost", 1)+"/landed", http.StatusFound)
	}))
	redirector.TLS = ap.TLS.Clone()
	redirector.StartTLS()
	t.Cleanup(redirector.Close)
	x := authExecutor(t, newSecretMap("env:KEY", "key-1", "env:TOKEN", "tok"))
	mat := execMaterial(p, "v1", nil)
	u, _ := url.Parse(ap.URL)
	for _, a := range []*catalog.Auth{
		{Type: catalog.AuthHeader, Name: "X-Api-Key", Value: "env:KEY"},
		{Type: catalog.AuthBearer, Token: "env:TOKEN"},
	} {
		conn := &catalog.Connection{BaseURL: redirector.URL, Profile: "partner-a", FollowRedirects: true,
			AllowHosts: []string{"localhost:" + u.Port()}, Auth: a}
		got := answer(t, x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/"}), conn, mat))
		if got.APIKey != "" || got.Authorization != "" {
			t.Fatalf("%s: the redirect target got %+v", a.Type, got)
		}
	}
}

// Connection.Validate checks auth; CheckCall refuses a call's own
// credentials to a connection with auth.
func TestAuthCatalog(t *testing.T) {
	base := func(a *catalog.Auth) catalog.Connection {
		return catalog.Connection{BaseURL: "https://partner.example", Profile: "p", Auth: a}
	}
	oauth := func(mod func(a *catalog.Auth)) *catalog.Auth {
		a := &catalog.Auth{Type: catalog.AuthOAuth2, TokenURL: "https://idp.example/token", ClientID: "c", ClientSecret: "vault:secret/partners/a#client_secret"}
		mod(a)
		return a
	}
	for _, tc := range []struct {
		name string
		auth *catalog.Auth
		says string // "" means valid
	}{
		{"ok/basic", &catalog.Auth{Type: catalog.AuthBasic, Username: "u", Password: "env:P"}, ""},
		{"ok/bearer", &catalog.Auth{Type: catalog.AuthBearer, Token: "file:/run/token"}, ""},
		{"ok/header", &catalog.Auth{Type: catalog.AuthHeader, Name: "X-Api-Key", Value: "value:k"}, ""},
		{"ok/oauth2-default", oauth(func(*catalog.Auth) {}), ""},
		{"ok/oauth2-private_key_jwt", oauth(func(a *catalog.Auth) { a.ClientAuth, a.ClientSecret = catalog.PrivateKeyJWT, "" }), ""},
		{"ok/oauth2-tls_client_auth-params", oauth(func(a *catalog.Auth) {
			a.ClientAuth, a.ClientSecret, a.Params, a.Scopes = catalog.TLSClientAuth, "", map[string]string{"audience": "x"}, []string{"a:b", "c/d"}
		}), ""},
		{"fail/basic-colon", &catalog.Auth{Type: catalog.AuthBasic, Username: "u:x", Password: "env:P"}, "colon"},
		{"fail/basic-literal-password", &catalog.Auth{Type: catalog.AuthBasic, Username: "u", Password: "hunter2"}, "password must be a secret reference"},
		{"fail/header-bad-name", &catalog.Auth{Type: catalog.AuthHeader, Name: "X Key", Value: "env:K"}, "not a valid HTTP field name"},
		{"fail/header-reserved", &catalog.Auth{Type: catalog.AuthHeader, Name: "Proxy-Authorization", Value: "env:K"}, "cannot carry credentials"},
		{"fail/oauth2-http", oauth(func(a *catalog.Auth) { a.TokenURL = "http://idp.example/token" }), "absolute https URL"},
		{"fail/oauth2-userinfo", oauth(func(a *catalog.Auth) { a.TokenURL = "https://u:p@idp.example/token" }), "user information"},
		{"fail/oauth2-no-secret", oauth(func(a *catalog.Auth) { a.ClientSecret = "" }), "needs client_secret"},
		{"fail/oauth2-jwt-with-secret", oauth(func(a *catalog.Auth) { a.ClientAuth = catalog.PrivateKeyJWT }), "remove client_secret"},
		{"fail/oauth2-unknown-method", oauth(func(a *catalog.Auth) { a.ClientAuth = "client_secret_jwt" }), "not supported"},
		{"fail/oauth2-reserved-param", oauth(func(a *catalog.Auth) { a.Params = map[string]string{"grant_type": "password"} }), `params cannot set "grant_type"`},
		{"fail/oauth2-bad-scope", oauth(func(a *catalog.Auth) { a.Scopes = []string{"a b"} }), "not a valid OAuth scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base(tc.auth)
			err := c.Validate("c")
			if tc.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error echoes the password: %v", err)
			}
		})
	}

	header := base(&catalog.Auth{Type: catalog.AuthHeader, Name: "x-api-key", Value: "env:K"})
	none := base(nil)
	for _, tc := range []struct {
		name    string
		conn    catalog.Connection
		headers map[string][]string
		refused bool
	}{
		{"fail/authorization", base(oauth(func(*catalog.Auth) {})), map[string][]string{"authorization": {"Bearer x"}}, true},
		{"fail/header-name-any-case", header, map[string][]string{"X-API-KEY": {"x"}}, true},
		{"fail/authorization-to-header-type", header, map[string][]string{"Authorization": {"x"}}, true},
		{"ok/other-headers", header, map[string][]string{"X-Other": {"x"}}, false},
		{"ok/no-auth", none, map[string][]string{"Authorization": {"x"}}, false},
	} {
		t.Run("check-call/"+tc.name, func(t *testing.T) {
			err := tc.conn.CheckCall(&jobs.Call{Headers: tc.headers}, "c")
			if !tc.refused {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if je := jobs.AsError(err); je == nil || je.Code != jobs.CodeInvalidCall || !strings.Contains(je.Message, "sends its own credentials") {
				t.Fatalf("err = %v, want invalid_call", err)
			}
		})
	}
}
