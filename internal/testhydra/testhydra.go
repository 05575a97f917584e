// Package testhydra starts a real OAuth2 server for tests: Ory Hydra
// v2.3.0, built from the Go module proxy (the module in tools/ pins it and
// its dependencies; the product never links Hydra, tests only run it).
//
// The binary is found at $MTLSRELAY_HYDRA_BIN, else at
// os.UserCacheDir()/mtlsrelay/hydra-2.3.0; when neither exists it is built
// there (minutes the first time: the module proxy, then cgo for the SQLite
// store; seconds with a warm Go build cache). tools/build.sh builds the
// same binary for CI. Tests never skip for want of a binary.
//
// Hydra runs with --dev (plain HTTP) on loopback ports, in memory
// (DSN=memory: a restart forgets every client and token). Its public port
// is only reached through a TLS reverse proxy that requires and verifies
// a client certificate, so token requests are made over mTLS as they are
// in production; Hydra's own URLs (issuer, token endpoint) are the
// proxy's, so the audience of a private_key_jwt assertion is the proxy's
// token URL. The admin port (clients, introspection) is plain HTTP on
// loopback.
//
// Hydra does not implement RFC 8705 (tls_client_auth); tests of it need a
// token endpoint of their own.
package testhydra

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testserver"
)

// Version is the Hydra version tools/ builds.
const Version = "2.3.0"

// BinaryEnv names the environment variable that points at a prebuilt binary.
const BinaryEnv = "MTLSRELAY_HYDRA_BIN"

// Options configure Start. Certificate and ClientCAs are required.
type Options struct {
	// Certificate is the TLS proxy's server certificate (for 127.0.0.1).
	Certificate tls.Certificate
	// ClientCAs verify the client certificates the proxy requires.
	ClientCAs *x509.CertPool
	// AccessTokenTTL is the lifetime of access tokens. Default 1h; a
	// client's TokenLifespan overrides it.
	AccessTokenTTL time.Duration
}

// Hydra is a running Hydra behind its mTLS proxy. Methods that take a
// testing.TB fail the test and must be called from its goroutine; the
// others are safe for concurrent use (a partner's handler may introspect).
type Hydra struct {
	// PublicURL is the proxy's https URL, Hydra's issuer and public URL:
	// "https://127.0.0.1:PORT/".
	PublicURL string
	// TokenURL is the token endpoint through the proxy.
	TokenURL string
	// AdminURL is Hydra's admin API, plain HTTP on loopback.
	AdminURL string

	t       testing.TB
	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	proxy   *http.Server
	admin   *http.Client

	mu       sync.Mutex
	requests map[string]int // token requests through the proxy, by client_id
	total    int
	seen     []string // credentials seen by the proxy
}

// Start builds Hydra if needed, starts it on free loopback ports with its
// TLS proxy, waits until it is ready and stops both when the test ends.
func Start(t testing.TB, opts Options) *Hydra {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs an Ory Hydra server, built from the module proxy when not cached")
	}
	if opts.ClientCAs == nil || len(opts.Certificate.Certificate) == 0 {
		t.Fatal("testhydra: Options.Certificate and ClientCAs are required")
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = time.Hour
	}
	bin := Binary(t)
	h := &Hydra{t: t, dir: t.TempDir(), requests: map[string]int{}, admin: &http.Client{Timeout: 10 * time.Second}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.PublicURL = fmt.Sprintf("https://127.0.0.1:%d/", ln.Addr().(*net.TCPAddr).Port)
	h.TokenURL = h.PublicURL + "oauth2/token"
	var public string
	for range 5 {
		var ports []int
		if ports, err = testserver.FreePorts(2); err != nil {
			continue
		}
		public = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		h.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		if err = h.start(bin, ports[0], ports[1], opts.AccessTokenTTL); err == nil {
			break
		}
	}
	if err != nil {
		ln.Close()
		t.Fatalf("testhydra: %v", err)
	}
	t.Cleanup(h.stop)
	target, _ := url.Parse(public)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		ErrorLog: discardLog,
	}
	h.proxy = &http.Server{
		Handler: h.counting(rp),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{opts.Certificate},
			ClientCAs:    opts.ClientCAs,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          discardLog,
	}
	go func() { _ = h.proxy.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { h.proxy.Close() })
	return h
}

// counting counts the token requests that reach the proxy, by client_id
// (from the form, the basic credentials or the client assertion's iss).
func (h *Hydra) counting(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth2/token" {
			next.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		id := clientOf(r, body)
		form, _ := url.ParseQuery(string(body))
		seen := []string{form.Get("client_secret"), form.Get("client_assertion")}
		if _, pass, ok := r.BasicAuth(); ok {
			seen = append(seen, pass)
			if p, err := url.QueryUnescape(pass); err == nil {
				seen = append(seen, p)
			}
		}
		h.mu.Lock()
		h.requests[id]++
		h.total++
		h.mu.Unlock()
		tee := &teeWriter{ResponseWriter: w}
		next.ServeHTTP(tee, r)
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(tee.buf.Bytes(), &tok)
		seen = append(seen, tok.AccessToken)
		h.mu.Lock()
		for _, s := range seen {
			if s != "" {
				h.seen = append(h.seen, s)
			}
		}
		h.mu.Unlock()
	})
}

// teeWriter keeps a copy of what a handler writes.
type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.buf.Len() < 1<<20 {
		w.buf.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Credentials returns every client secret, client assertion and access
// token that went through the proxy's token endpoint so far, for tests
// that check none of them shows anywhere.
func (h *Hydra) Credentials() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

// clientOf returns the client_id a token request names.
func clientOf(r *http.Request, body []byte) string {
	form, _ := url.ParseQuery(string(body))
	if id := form.Get("client_id"); id != "" {
		return id
	}
	if u, _, ok := r.BasicAuth(); ok {
		if id, err := url.QueryUnescape(u); err == nil {
			return id
		}
		return u
	}
	if a := form.Get("client_assertion"); a != "" {
		parts := strings.Split(a, ".")
		if len(parts) == 3 {
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c struct {
				Iss string `json:"iss"`
			}
			if json.Unmarshal(payload, &c) == nil {
				return c.Iss
			}
		}
	}
	return ""
}

// TokenRequests returns how many token requests for clientID reached the
// proxy ("" counts all).
func (h *Hydra) TokenRequests(clientID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if clientID == "" {
		return h.total
	}
	return h.requests[clientID]
}

// Logs returns what Hydra printed so far.
func (h *Hydra) Logs() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

func (h *Hydra) start(bin string, public, admin int, ttl time.Duration) error {
	h.logPath = filepath.Join(h.dir, fmt.Sprintf("hydra-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	self := strings.TrimSuffix(h.PublicURL, "/")
	// A clean environment: nothing of the developer's shell, a HOME of
	// its own.
	cmd.Env = []string{
		"HOME=" + h.dir,
		"PATH=" + os.Getenv("PATH"),
		"DSN=memory",
		"SECRETS_SYSTEM=" + testserver.RandomHex(24),
		"SERVE_PUBLIC_HOST=127.0.0.1",
		"SERVE_PUBLIC_PORT=" + strconv.Itoa(public),
		"SERVE_ADMIN_HOST=127.0.0.1",
		"SERVE_ADMIN_PORT=" + strconv.Itoa(admin),
		"URLS_SELF_ISSUER=" + self,
		"URLS_SELF_PUBLIC=" + self,
		"TTL_ACCESS_TOKEN=" + ttl.String(),
		"LOG_LEVEL=warn",
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	if err := waitReady(h.AdminURL, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		out, _ := os.ReadFile(h.logPath)
		return fmt.Errorf("hydra on ports %d and %d: %w\n%s", public, admin, err, testserver.Tail(out, 3000))
	}
	h.cmd, h.exited = cmd, exited
	return nil
}

func (h *Hydra) stop() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
	h.cmd = nil
}

// waitReady polls the admin port's /health/ready until it answers 200.
func waitReady(admin string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		default:
		}
		resp, err := client.Get(admin + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not ready within 60s")
}

// Client is an OAuth2 client of the client_credentials grant.
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is the client_secret of client_secret_basic and _post.
	Secret string
	// AuthMethod is token_endpoint_auth_method: client_secret_basic,
	// client_secret_post or private_key_jwt.
	AuthMethod string
	// Scope lists the scopes the client may ask for, space-separated.
	Scope string
	// Audience lists the audiences the client may ask for.
	Audience []string
	// JWKS are the public keys of private_key_jwt (see JWK), and
	// SigningAlg the algorithm its assertions use (RS256, ES256...).
	JWKS       []map[string]any
	SigningAlg string
	// TokenLifespan, when set, is the lifetime of the client's access
	// tokens instead of Options.AccessTokenTTL.
	TokenLifespan time.Duration
}

// CreateClient registers c with Hydra.
func (h *Hydra) CreateClient(t testing.TB, c Client) {
	t.Helper()
	body := map[string]any{
		"client_id":                  c.ID,
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": c.AuthMethod,
		"scope":                      c.Scope,
	}
	if c.Secret != "" {
		body["client_secret"] = c.Secret
	}
	if len(c.Audience) > 0 {
		body["audience"] = c.Audience
	}
	if len(c.JWKS) > 0 {
		body["jwks"] = map[string]any{"keys": c.JWKS}
		body["token_endpoint_auth_signing_alg"] = c.SigningAlg
	}
	if err := h.adminJSON(http.MethodPost, "/admin/clients", body, http.StatusCreated); err != nil {
		t.Fatalf("testhydra: create client %s: %v", c.ID, err)
	}
	if c.TokenLifespan > 0 {
		ls := map[string]any{"client_credentials_grant_access_token_lifespan": c.TokenLifespan.String()}
		if err := h.adminJSON(http.MethodPut, "/admin/clients/"+url.PathEscape(c.ID)+"/lifespans", ls, http.StatusOK); err != nil {
			t.Fatalf("testhydra: lifespan of client %s: %v", c.ID, err)
		}
	}
}

// SetSecret replaces the client_secret of client id: the old secret is
// refused from then on (tokens already issued stay valid).
func (h *Hydra) SetSecret(t testing.TB, id, secret string) {
	t.Helper()
	patch := []map[string]any{{"op": "replace", "path": "/client_secret", "value": secret}}
	if err := h.adminJSON(http.MethodPatch, "/admin/clients/"+url.PathEscape(id), patch, http.StatusOK); err != nil {
		t.Fatalf("testhydra: set the secret of client %s: %v", id, err)
	}
}

func (h *Hydra) adminJSON(method, path string, body any, want int) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, h.AdminURL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.admin.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, out)
	}
	return nil
}

// Introspection is Hydra's answer about a token (RFC 7662).
type Introspection struct {
	Active   bool     `json:"active"`
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	Audience []string `json:"aud"`
	Exp      int64    `json:"exp"`
}

// Introspect asks Hydra's admin API about token.
func (h *Hydra) Introspect(ctx context.Context, token string) (*Introspection, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.AdminURL+"/admin/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := h.admin.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("introspect: HTTP %d", resp.StatusCode)
	}
	var in Introspection
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

// JWK returns the public key of cert as a JWK of a private_key_jwt client
// (use sig), with kid the base64url SHA-256 thumbprint of the DER
// certificate (what mtlsrelay puts in its assertions), and the JWS
// algorithm of that key: RS256, ES256/384/512 or EdDSA.
func JWK(cert *x509.Certificate) (map[string]any, string) {
	sum := sha256.Sum256(cert.Raw)
	k := map[string]any{"use": "sig", "kid": base64.RawURLEncoding.EncodeToString(sum[:])}
	b64 := base64.RawURLEncoding.EncodeToString
	var alg string
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		alg = "RS256"
		k["kty"], k["n"], k["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		crv := pub.Curve.Params().Name
		alg = map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[crv]
		ecdh, err := pub.ECDH()
		if err != nil {
			panic(err)
		}
		raw := ecdh.Bytes() // 0x04 || X || Y
		k["kty"], k["crv"], k["x"], k["y"] = "EC", crv, b64(raw[1:1+size]), b64(raw[1+size:])
	case ed25519.PublicKey:
		alg = "EdDSA"
		k["kty"], k["crv"], k["x"] = "OKP", "Ed25519", b64(pub)
	default:
		panic(fmt.Sprintf("testhydra: no JWK for a %T", pub))
	}
	k["alg"] = alg
	return k, alg
}

var discardLog = log.New(io.Discard, "", 0)
