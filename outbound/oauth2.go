package outbound

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// OAuth2 client credentials (RFC 6749 section 4.4) for connections with
// auth type oauth2.
//
// Tokens are requested over mTLS with the connection's profile, through
// the connection's own pooled transport (so its egress proxy and address
// checks apply; the token_url's host is allowed explicitly for token
// requests only), and cached per connection, profile version and auth
// settings. A cached token is renewed in the background once 20% of its
// lifetime is left, or 30 seconds (at most half its lifetime), whichever
// comes first; calls keep using it meanwhile. Calls that find no usable
// token share one request (one per lifetime however many calls run at
// once). A token endpoint's refusal (auth_failed) is remembered for
// refusalHold: calls in that time fail at once, without asking again with
// the same credentials, unless the secret read for the request changed.

const (
	// noExpiryLifetime is how long a token whose answer has no expires_in
	// is used (a 401 renews it sooner).
	noExpiryLifetime = time.Hour
	// refusalHold is how long a refusal with unchanged credentials is
	// answered without asking the token endpoint again.
	refusalHold = 5 * time.Second
	// renewalBackoff is how long after a failed background renewal the
	// next one waits, while the current token is still usable.
	renewalBackoff = 2 * time.Second
	// maxTokenSlots is how many cached tokens a connection keeps: the
	// current profile version's and the previous one's, while calls still
	// hold the old material.
	maxTokenSlots = 2
	// jwtBearerAssertion is RFC 7523's client_assertion_type.
	jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// oauthTokens caches the tokens of every oauth2 connection. Safe for
// concurrent use.
type oauthTokens struct {
	// salt keys the digests of settings and secrets kept to recognize them,
	// so that what stays in memory says nothing of a secret.
	salt [32]byte

	mu     sync.Mutex
	byConn map[string][]*tokenSlot
}

func newOAuthTokens() *oauthTokens {
	o := &oauthTokens{byConn: map[string][]*tokenSlot{}}
	_, _ = rand.Read(o.salt[:])
	return o
}

// tokenSlot holds the token of one connection, profile version and auth
// settings, and the request for a new one, if any.
type tokenSlot struct {
	key string

	mu      sync.Mutex
	tok     *heldToken
	fetch   *tokenFetch
	retryAt time.Time // no background renewal before this
	refused *refusal
}

// heldToken is a token and when to renew it.
type heldToken struct {
	value     string // the Authorization header value
	tokenType string
	obtained  time.Time
	expiry    time.Time // zero when the endpoint gave no expires_in
	renewAt   time.Time
	useUntil  time.Time
	scope     string // as granted; the requested scopes when the answer names none
	granted   bool   // the answer named the scopes
}

// tokenFetch is one token request that calls wait for.
type tokenFetch struct {
	done chan struct{}
	tok  *heldToken
	err  *jobs.Error
}

// refusal is the token endpoint's last refusal of the credentials whose
// digest it holds.
type refusal struct {
	digest [32]byte
	until  time.Time
	err    *jobs.Error
}

// digest returns a keyed digest of parts.
func (o *oauthTokens) digest(parts ...[]byte) [32]byte {
	h := hmac.New(sha256.New, o.salt[:])
	for _, p := range parts {
		h.Write([]byte(strconv.Itoa(len(p))))
		h.Write([]byte{0})
		h.Write(p)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// slot returns the token slot of connection name for mat and its auth
// settings, making it when new; a connection keeps its maxTokenSlots most
// recent slots.
func (o *oauthTokens) slot(name string, conn *catalog.Connection, mat *secrets.Material) *tokenSlot {
	settings, _ := json.Marshal(conn.Auth)
	d := o.digest([]byte(mat.Profile), []byte(mat.Version), settings)
	key := string(d[:])
	o.mu.Lock()
	defer o.mu.Unlock()
	slots := o.byConn[name]
	for i, s := range slots {
		if s.key == key {
			if i > 0 { // most recently used first
				copy(slots[1:i+1], slots[:i])
				slots[0] = s
			}
			return s
		}
	}
	s := &tokenSlot{key: key}
	slots = append([]*tokenSlot{s}, slots...)
	if len(slots) > maxTokenSlots {
		slots = slots[:maxTokenSlots]
	}
	o.byConn[name] = slots
	return s
}

// credential returns the token credential of an attempt on connection
// name: the cached token while it is usable (starting its renewal in the
// background when due), else a new one, requested once for all the calls
// that need it. ctx bounds the wait only: the request itself runs within
// the connection's timeout, whoever else waits for it.
func (o *oauthTokens) credential(ctx context.Context, x *Executor, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) (*credential, *jobs.Error) {
	s := o.slot(name, conn, mat)
	return o.credentialFrom(ctx, s, x, name, conn, mat, pt)
}

func (o *oauthTokens) credentialFrom(ctx context.Context, s *tokenSlot, x *Executor, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) (*credential, *jobs.Error) {
	now := time.Now()
	s.mu.Lock()
	if t := s.tok; t != nil && now.Before(t.useUntil) {
		if !now.Before(t.renewAt) && s.fetch == nil && !now.Before(s.retryAt) {
			s.fetch = o.start(ctx, s, x, name, conn, mat, pt)
		}
		s.mu.Unlock()
		return &credential{header: "Authorization", value: t.value, slot: s, token: t}, nil
	}
	f := s.fetch
	if f == nil {
		f = o.start(ctx, s, x, name, conn, mat, pt)
		s.fetch = f
	}
	s.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, waitError(ctx, name, conn.Auth.TokenURL)
	}
	if f.err != nil {
		return nil, f.err
	}
	return &credential{header: "Authorization", value: f.tok.value, slot: s, token: f.tok}, nil
}

// renew is called after the partner answered 401 to a request made with
// used: that token is dropped (unless another call dropped it already and
// a newer one is there) and the credential of a new one returned.
func (o *oauthTokens) renew(ctx context.Context, used *credential, x *Executor, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) (*credential, *jobs.Error) {
	s := used.slot
	s.mu.Lock()
	if s.tok == used.token {
		s.tok = nil
	}
	s.mu.Unlock()
	return o.credentialFrom(ctx, s, x, name, conn, mat, pt)
}

// start begins a token request for s; s.mu is held. The request runs on
// its own, within the connection's timeout, so that a call that stops
// waiting does not fail the others.
func (o *oauthTokens) start(ctx context.Context, s *tokenSlot, x *Executor, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) *tokenFetch {
	f := &tokenFetch{done: make(chan struct{})}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), conn.AttemptTimeout(nil))
	go func() {
		defer cancel()
		tok, err := o.request(rctx, s, x, name, conn, mat, pt)
		s.mu.Lock()
		if err == nil {
			s.tok = tok
			s.retryAt = time.Time{}
		} else {
			s.retryAt = time.Now().Add(renewalBackoff)
		}
		s.fetch = nil
		f.tok, f.err = tok, err
		s.mu.Unlock()
		close(f.done)
	}()
	return f
}

// waitError is the error of a call whose deadline passed, or that was
// canceled, while it waited for a token.
func waitError(ctx context.Context, name, tokenURL string) *jobs.Error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return jobs.Wrap(ctx.Err(), jobs.CodeCanceled,
			"the call was canceled while it waited for a token from %s for connection %s", displayURL(tokenURL), name)
	}
	return jobs.Wrap(ctx.Err(), jobs.CodeTimeout,
		"no token from %s for connection %s within the attempt's deadline (timed out); check that the token endpoint is up and reachable, or raise the connection's timeout",
		displayURL(tokenURL), name)
}

// request asks the token endpoint for a token (clientcredentials), through
// pt with the egress rules of connection name and its token_url's host.
func (o *oauthTokens) request(ctx context.Context, s *tokenSlot, x *Executor, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport) (*heldToken, *jobs.Error) {
	a := conn.Auth
	tu, err := url.Parse(a.TokenURL)
	if err != nil || tu.Host == "" {
		return nil, jobs.Errorf(jobs.CodeInternal, "connection %s has an invalid token_url", name)
	}
	method := ClientAuthMethod(a)
	cfg := &clientcredentials.Config{
		ClientID:       a.ClientID,
		TokenURL:       a.TokenURL,
		Scopes:         a.Scopes,
		EndpointParams: url.Values{},
	}
	for k, v := range a.Params {
		cfg.EndpointParams.Set(k, v)
	}
	var secret []byte
	switch method {
	case catalog.ClientSecretBasic, catalog.ClientSecretPost:
		var jerr *jobs.Error
		if secret, jerr = x.readAuthSecret(ctx, name, "client_secret", a.ClientSecret); jerr != nil {
			return nil, jerr
		}
		defer clear(secret)
		cfg.ClientSecret = string(secret)
		cfg.AuthStyle = oauth2.AuthStyleInParams
		if method == catalog.ClientSecretBasic {
			cfg.AuthStyle = oauth2.AuthStyleInHeader
		}
	case catalog.PrivateKeyJWT:
		assertion, jerr := clientAssertion(name, a.ClientID, a.TokenURL, mat, time.Now())
		if jerr != nil {
			return nil, jerr
		}
		cfg.EndpointParams.Set("client_assertion_type", jwtBearerAssertion)
		cfg.EndpointParams.Set("client_assertion", assertion)
		cfg.AuthStyle = oauth2.AuthStyleInParams
	case catalog.TLSClientAuth:
		// RFC 8705 section 2: client_id in the body, the certificate of
		// the TLS connection is the credential.
		cfg.AuthStyle = oauth2.AuthStyleInParams
	default:
		return nil, jobs.Errorf(jobs.CodeInternal, "connection %s has client_auth %q, which this worker does not know", name, method)
	}

	digest := o.digest([]byte(method), secret)
	s.mu.Lock()
	if r := s.refused; r != nil && r.digest == digest && time.Now().Before(r.until) {
		s.mu.Unlock()
		return nil, r.err
	}
	s.mu.Unlock()

	tr := &tracer{start: time.Now()}
	hc := &http.Client{
		Transport: pt.rt,
		// A token endpoint that redirects is misconfigured; following it
		// would send the client's credentials to another URL.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	rctx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	rctx = withEgress(rctx, tokenEgress(name, conn, tu))
	rctx = httptrace.WithClientTrace(rctx, tr.clientTrace())
	obtained := time.Now()
	tok, err := cfg.Token(rctx)
	if err != nil {
		jerr := tokenError(ctx, err, name, conn, mat, tu, tr)
		jerr = redactError(jerr, secret, []byte(cfg.EndpointParams.Get("client_assertion")))
		if jerr.Code == jobs.CodeAuthFailed {
			s.mu.Lock()
			s.refused = &refusal{digest: digest, until: time.Now().Add(refusalHold), err: jerr}
			s.mu.Unlock()
		}
		return nil, jerr
	}
	s.mu.Lock()
	s.refused = nil
	s.mu.Unlock()
	typ := tok.TokenType
	if typ != "" && !strings.EqualFold(typ, "bearer") {
		return nil, jobs.Errorf(jobs.CodeAuthFailed,
			"the token endpoint %s issued a token of type %q for connection %s; mtlsrelay sends Bearer tokens only (RFC 6750)",
			displayURL(a.TokenURL), printable(typ, 32), name)
	}
	h := &heldToken{value: "Bearer " + tok.AccessToken, tokenType: "Bearer", obtained: obtained, expiry: tok.Expiry}
	h.renewAt, h.useUntil = schedule(obtained, tok.Expiry)
	if sc, ok := tok.Extra("scope").(string); ok {
		h.scope, h.granted = sc, true
	} else {
		h.scope = strings.Join(a.Scopes, " ")
	}
	return h, nil
}

// schedule returns when a token obtained at obtained and expiring at expiry
// is renewed, and until when it is used at all: renewed once 20% of its
// lifetime is left, or 30 seconds (at most half its lifetime), whichever
// comes first; used until a few seconds (at most a tenth of its lifetime)
// before it expires, for clock skew and the time a request takes.
func schedule(obtained, expiry time.Time) (renewAt, useUntil time.Time) {
	if expiry.IsZero() {
		expiry = obtained.Add(noExpiryLifetime)
	}
	lifetime := expiry.Sub(obtained)
	if lifetime <= 0 {
		return obtained, obtained
	}
	margin := max(lifetime/5, min(30*time.Second, lifetime/2))
	skew := min(5*time.Second, lifetime/10)
	return expiry.Add(-margin), expiry.Add(-skew)
}

// tokenEgress is the egress policy of connection name's token requests:
// the connection's, with the token_url's host named explicitly.
func tokenEgress(name string, conn *catalog.Connection, tu *url.URL) *egressPolicy {
	p := newEgressPolicy(name, conn)
	h := strings.ToLower(strings.Trim(tu.Hostname(), "[]"))
	if a, err := netip.ParseAddr(h); err == nil {
		h = a.Unmap().String()
	}
	p.explicit[h] = true
	return p
}

// tokenError classifies a failed token request. The token endpoint's
// refusal (4xx) is auth_failed, with its OAuth error code and description;
// 5xx, 408 and 429 are http_status (retryable); network and TLS failures
// are classified as a call's are (connect_failed, timeout,
// client_cert_rejected...), their message saying it was the token request.
func tokenError(ctx context.Context, err error, name string, conn *catalog.Connection, mat *secrets.Material, tu *url.URL, tr *tracer) *jobs.Error {
	a := conn.Auth
	where := displayURL(a.TokenURL)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		switch {
		case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
			return jobs.Errorf(jobs.CodeHTTPStatus,
				"the token endpoint %s answered HTTP %d to connection %s's token request; it is overloaded or down, the call is retried",
				where, status, name).WithRetryable(true)
		case re.ErrorCode == "":
			return jobs.Errorf(jobs.CodeAuthFailed,
				"the token endpoint %s answered HTTP %d without an OAuth error to connection %s's token request (client %q, client_auth %s); check token_url",
				where, status, name, a.ClientID, ClientAuthMethod(a))
		}
		desc := ""
		if re.ErrorDescription != "" {
			desc = fmt.Sprintf(" (%s)", printable(re.ErrorDescription, 300))
		}
		return jobs.Errorf(jobs.CodeAuthFailed,
			"the token endpoint %s refused client %q of connection %s (client_auth %s): HTTP %d, OAuth error %q%s; %s",
			where, a.ClientID, name, ClientAuthMethod(a), status, printable(re.ErrorCode, 64), desc, oauthHint(re.ErrorCode, ClientAuthMethod(a)))
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "oauth2: server response missing access_token") ||
		strings.HasPrefix(msg, "oauth2: cannot parse") {
		return jobs.Errorf(jobs.CodeAuthFailed,
			"the token endpoint %s answered connection %s's token request without an access token; check token_url", where, name)
	}
	if strings.HasPrefix(msg, "oauth2: cannot fetch token") {
		// Reading the answer failed; the cause is not wrapped.
		return jobs.Errorf(jobs.CodeConnectFailed,
			"the connection to the token endpoint %s broke while reading its answer to connection %s's token request", where, name)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	target := Target{Host: HostPort(tu), Profile: mat.Profile, SystemRoots: mat.Config.RootCAs == nil, Timeout: conn.AttemptTimeout(nil)}
	tr.describe(&target)
	je := ClassifyError(err, target)
	e := *je
	e.Message = fmt.Sprintf("requesting a token for connection %s from %s: %s", name, where, je.Message)
	return &e
}

// redactError returns e with any of the given secrets cut out of its
// message: an authorization server might echo what it was sent.
func redactError(e *jobs.Error, vals ...[]byte) *jobs.Error {
	msg := e.Message
	for _, s := range vals {
		if len(s) >= 4 && strings.Contains(msg, string(s)) {
			msg = strings.ReplaceAll(msg, string(s), "[redacted]")
		}
	}
	if msg == e.Message {
		return e
	}
	c := *e
	c.Message = msg
	return &c
}

// oauthHint says what to check after an OAuth error.
func oauthHint(code, method string) string {
	switch code {
	case "invalid_client":
		switch method {
		case catalog.PrivateKeyJWT:
			return "check client_id, and that the authorization server holds the public key of the profile's certificate (kid: its SHA-256 thumbprint) with the right signing algorithm"
		case catalog.TLSClientAuth:
			return "check client_id, and that the authorization server expects the subject of the profile's certificate"
		}
		return "check client_id and the client secret; a rotated secret must be changed in both places"
	case "invalid_scope":
		return "check the connection's scopes against what the client may ask for"
	case "unauthorized_client":
		return "the client may not use the client_credentials grant, or this client_auth; ask the authorization server's owner"
	case "invalid_request":
		return "check the connection's params and client_auth"
	case "invalid_grant":
		return "check the connection's params (an audience the client may not ask for, say)"
	}
	return "check the connection's auth settings with the authorization server's owner"
}

// ClientAuthMethod returns a's client_auth with its default,
// client_secret_basic.
func ClientAuthMethod(a *catalog.Auth) string {
	if a.ClientAuth == "" {
		return catalog.ClientSecretBasic
	}
	return a.ClientAuth
}

// displayURL returns u without user information, query or fragment, for
// messages.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the token_url"
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return v.String()
}

// printable returns s cut to n bytes and with control characters replaced,
// for text another server wrote.
func printable(s string, n int) string {
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// TokenInfo describes the OAuth2 token of a connection without the token
// itself: for `mtlsrelay test` and logs.
type TokenInfo struct {
	// TokenURL is the token endpoint, without query.
	TokenURL string `json:"token_url"`
	// ClientID and ClientAuth say which client authenticated, and how.
	ClientID   string `json:"client_id"`
	ClientAuth string `json:"client_auth"`
	// Requested are the scopes asked for; Granted those the token
	// endpoint granted (the requested ones when its answer named none,
	// GrantedNamed false).
	Requested    []string `json:"scopes_requested,omitempty"`
	Granted      string   `json:"scopes_granted"`
	GrantedNamed bool     `json:"scopes_named"`
	// TokenType is Bearer.
	TokenType string `json:"token_type"`
	// Obtained is when the token was requested; Expiry when it expires
	// (zero: the endpoint gave no expires_in); RenewAt when the executor
	// renews it.
	Obtained time.Time `json:"obtained"`
	Expiry   time.Time `json:"expiry,omitzero"`
	RenewAt  time.Time `json:"renew_at"`
	// KeyID is the kid of private_key_jwt assertions, "" for other
	// client_auth methods.
	KeyID string `json:"kid,omitempty"`
}

// Token gets the token of connection name, an oauth2 connection, as a
// call would (the cached one while it is usable, else a new one), and
// describes it. The error is a *jobs.Error, as a call's would be.
func (x *Executor) Token(ctx context.Context, name string, conn *catalog.Connection, mat *secrets.Material) (*TokenInfo, error) {
	if conn == nil || conn.Auth == nil || conn.Auth.Type != catalog.AuthOAuth2 {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "connection %s has no oauth2 auth", name)
	}
	if mat == nil || mat.Config == nil {
		return nil, jobs.Errorf(jobs.CodeInternal, "no TLS material for connection %s", name)
	}
	ctx, cancel := context.WithTimeout(ctx, conn.AttemptTimeout(nil))
	defer cancel()
	pt := x.transports.getVia(name, conn.Proxy, LaneQueued, mat)
	defer pt.release()
	cred, jerr := x.oauth.credential(ctx, x, name, conn, mat, pt)
	if jerr != nil {
		return nil, jerr
	}
	a, t := conn.Auth, cred.token
	info := &TokenInfo{
		TokenURL: displayURL(a.TokenURL), ClientID: a.ClientID, ClientAuth: ClientAuthMethod(a),
		Requested: a.Scopes, Granted: t.scope, GrantedNamed: t.granted, TokenType: t.tokenType,
		Obtained: t.obtained, Expiry: t.expiry, RenewAt: t.renewAt,
	}
	if info.ClientAuth == catalog.PrivateKeyJWT && mat.Leaf != nil {
		info.KeyID = KeyID(mat.Leaf)
	}
	return info, nil
}
