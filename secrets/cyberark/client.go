// Package cyberark fetches secrets from CyberArk's Central Credential
// Provider (CCP) for references of the form
//
//	cyberark:<safe>/<object>#<property>
//
// through the CCP's documented GetPassword REST web service
// (GET <ccp>/AIMWebService/api/Accounts?AppID=..&Safe=..&Folder=..&Object=..).
// The property defaults to Content, the password; any other property of the
// answer (UserName, Address, a custom property) may be named instead. A
// keystore kept in CyberArk is stored as base64 text in the object's
// content, which secrets.DecodeKeystore accepts.
//
// The CCP has no version field, so a Secret's Version is a keyed hash of the
// value: a password rotated in the vault gets a new Version and the
// Resolver decodes the profile again.
//
// Its tests run against internal/fakeccp, a fake built from CyberArk's
// documentation, not against a real CCP; see docs/SECRETS-CYBERARK.md.
package cyberark

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

var _ secrets.Source = (*Client)(nil)

// maxAnswer bounds the size of a CCP answer; a keystore in base64 is a few
// kilobytes.
const maxAnswer = 4 << 20

// Client is a CCP client and the secrets.Source of cyberark: references.
// It is safe for concurrent use.
type Client struct {
	cfg      Config
	base     string // cfg.URL, for messages
	endpoint *url.URL
	http     *http.Client
	tr       *http.Transport
	log      zerolog.Logger
	key      []byte // keys the Versions
	// certs serves the client certificate, nil without client_keystore.
	certs *secrets.ClientCertificate
}

// clientProfile names the CCP client certificate in the messages of the
// resolver that serves it.
const clientProfile = "cyberark client_keystore"

// New returns a client for the CCP that cfg describes. It fetches the
// client keystore and truststore that cfg references through sources (the
// file:, env:, vault:... sources; not cyberark: itself), so a wrong
// password or a missing file fails here, at start, rather than on the first
// call. Errors are *jobs.Error values prefixed with the config field.
func New(ctx context.Context, cfg Config, sources *secrets.Sources, log zerolog.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	ep, refs, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	if sources == nil && (!refs.keystore.IsZero() || !refs.truststore.IsZero()) {
		return nil, configErrorf("client_keystore and truststore need secret sources to be read from; pass the worker's secrets.Sources")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var leaf *x509.Certificate
	var certs *secrets.ClientCertificate
	if !refs.keystore.IsZero() {
		// Read once here, so a wrong password or a missing file fails at
		// start with the config key in its message.
		cert, err := loadClientCertificate(ctx, sources, refs)
		if err != nil {
			return nil, err
		}
		leaf = cert.Leaf
		certs = secrets.NewClientCertificate(sources, clientProfile,
			secrets.Profile{Keystore: cfg.ClientKeystore, Password: cfg.ClientPassword}, cfg.Timeout)
		certs.Changed(ctx)
		// Offered whatever CAs the CCP lists (IIS lists them loosely; the
		// CCP is the one to decide), and read through the resolver on each
		// new connection, so a rotated keystore is presented at once.
		tlsCfg.GetClientCertificate = certs.Get
	}
	if !refs.truststore.IsZero() {
		pool, err := loadTruststore(ctx, sources, refs)
		if err != nil {
			return nil, err
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		// HTTP/1.1 only: one GET gains nothing from HTTP/2, and Go's HTTP/2
		// client reports a TLS alert received right after the handshake
		// (the CCP refusing our certificate, in TLS 1.3) as "client conn
		// could not be established", losing what classify needs.
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetHTTP1(true)
	key := make([]byte, 32)
	// crypto/rand.Read does not fail since Go 1.24; it crashes instead.
	_, _ = rand.Read(key)
	c := &Client{
		cfg:      cfg,
		base:     strings.TrimRight(cfg.URL, "/"),
		endpoint: ep,
		http:     &http.Client{Transport: tr, Timeout: cfg.Timeout},
		tr:       tr,
		log:      log.With().Str("component", "cyberark").Logger(),
		key:      key,
		certs:    certs,
	}
	ev := c.log.Info().Str("url", c.base).Str("app_id", cfg.AppID).Str("folder", cfg.Folder)
	if leaf != nil {
		ev = ev.Str("client_cert_subject", leaf.Subject.String()).Str("client_cert_serial", secrets.SerialHex(leaf)).
			Time("client_cert_not_after", leaf.NotAfter)
		if err := secrets.CheckValidity("cyberark client_keystore", leaf, time.Now()); err != nil {
			c.log.Warn().Str("client_cert_serial", secrets.SerialHex(leaf)).Time("client_cert_not_after", leaf.NotAfter).
				Str("reason", err.Message).Msg("the client certificate for the CCP is not valid now; the CCP will refuse it: renew client_keystore")
		}
	}
	ev.Msg("CyberArk CCP client ready")
	return c, nil
}

// loadClientCertificate fetches and decodes the client keystore.
func loadClientCertificate(ctx context.Context, sources *secrets.Sources, refs configRefs) (tls.Certificate, error) {
	in := "cyberark config client_keystore " + refs.keystore.String()
	ks, err := sources.Fetch(ctx, refs.keystore)
	if err != nil {
		return tls.Certificate{}, prefix(err, in)
	}
	var password []byte
	if !refs.password.IsZero() {
		pw, err := sources.Fetch(ctx, refs.password)
		if err != nil {
			return tls.Certificate{}, prefix(err, "cyberark config client_password "+refs.password.String())
		}
		password = trimNewline(pw.Data)
		defer clear(password)
	}
	store, err := secrets.DecodeKeystore(ks.Data, password)
	if err != nil {
		return tls.Certificate{}, prefix(err, in)
	}
	cert, err := store.ClientCertificate("")
	if err != nil {
		return tls.Certificate{}, prefix(err, in)
	}
	return cert, nil
}

// loadTruststore fetches and decodes the truststore.
func loadTruststore(ctx context.Context, sources *secrets.Sources, refs configRefs) (*x509.CertPool, error) {
	in := "cyberark config truststore " + refs.truststore.String()
	ts, err := sources.Fetch(ctx, refs.truststore)
	if err != nil {
		return nil, prefix(err, in)
	}
	var password []byte
	if !refs.truststorePassword.IsZero() {
		pw, err := sources.Fetch(ctx, refs.truststorePassword)
		if err != nil {
			return nil, prefix(err, "cyberark config truststore_password "+refs.truststorePassword.String())
		}
		password = trimNewline(pw.Data)
		defer clear(password)
	}
	pool, _, err := secrets.DecodeTruststore(ts.Data, password)
	if err != nil {
		return nil, prefix(err, in)
	}
	return pool, nil
}

// trimNewline returns a copy of a password without one trailing newline, as
// the Resolver reads passwords.
func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return bytes.Clone(b)
}

// Register makes c the Source of cyberark: references in s.
func (c *Client) Register(s *secrets.Sources) { s.Register(secrets.SchemeCyberArk, c) }

// Close closes the client's idle connections to the CCP.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Fetch asks the CCP for the object that ref names and returns the
// property the reference selects. Every call is one GetPassword request:
// the Resolver calls at most once per refresh interval per reference, and
// the CCP caches what it gets from the vault.
//
// Failures follow the secrets.Source contract; see classify for the
// mapping of the CCP's answers.
func (c *Client) Fetch(ctx context.Context, ref secrets.Ref) (secrets.Secret, error) {
	loc, err := locate(ref)
	if err != nil {
		return secrets.Secret{}, err
	}
	if c.certs != nil && c.certs.Changed(ctx) {
		// The client keystore was rotated: connections kept alive still
		// present the old certificate.
		c.log.Info().Msg("the client certificate for the CCP changed; new connections present it")
		c.tr.CloseIdleConnections()
	}
	acct, f := c.getPassword(ctx, loc)
	if f != nil {
		jerr := c.classify(loc, *f)
		ev := c.log.Warn()
		if errors.Is(jerr, secrets.ErrNotFound) {
			ev = c.log.Info()
		}
		ev.Str("safe", loc.Safe).Str("object", loc.Object).Str("folder", c.cfg.Folder).
			Int("status", f.status).Str("ccp_error_code", f.code).Str("ccp_error_msg", f.msg).
			Bool("retryable", jerr.Retryable).Err(jerr).Msg("CCP did not return the secret")
		return secrets.Secret{}, jerr
	}
	val, err := acct.property(loc, c.cfg.Folder)
	if err != nil {
		return secrets.Secret{}, err
	}
	data := []byte(val)
	ver := "cyberark-" + c.sum(data)
	c.log.Debug().Str("safe", loc.Safe).Str("object", loc.Object).Str("property", loc.Property).
		Str("version", ver).Msg("fetched secret from the CCP")
	return secrets.Secret{Data: data, Version: ver}, nil
}

// sum returns a short keyed hash of data, which reveals nothing of it.
func (c *Client) sum(data []byte) string {
	m := hmac.New(sha256.New, c.key)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil)[:12])
}

// failure is what went wrong with one GetPassword request, before
// classification.
type failure struct {
	// err is the transport error, nil when the CCP answered.
	err error
	// status is the HTTP status, 0 when none was received.
	status int
	// code and msg are the CCP's ErrorCode and ErrorMsg, when it sent them.
	// msg is logged, never put in an error message.
	code, msg string
	// badAnswer is set when a 200 answer is not a GetPassword JSON object.
	badAnswer bool
	// canceled is set when the caller canceled the request.
	canceled bool
}

// getPassword makes one GetPassword request.
func (c *Client) getPassword(ctx context.Context, loc Locator) (account, *failure) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	q := url.Values{}
	q.Set("AppID", c.cfg.AppID)
	q.Set("Safe", loc.Safe)
	q.Set("Folder", c.cfg.Folder)
	q.Set("Object", loc.Object)
	if c.cfg.Reason != "" {
		q.Set("Reason", c.cfg.Reason)
	}
	u := *c.endpoint
	// The CCP does not support "+" in values, so spaces go as %20.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &failure{err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &failure{err: err, canceled: ctx.Err() == context.Canceled}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, &failure{err: err, status: resp.StatusCode, canceled: ctx.Err() == context.Canceled}
	}
	if resp.StatusCode == http.StatusOK {
		acct, ok := decodeAccount(body)
		if !ok || len(body) > maxAnswer {
			return nil, &failure{status: resp.StatusCode, badAnswer: true}
		}
		return acct, nil
	}
	f := &failure{status: resp.StatusCode}
	var eb struct{ ErrorCode, ErrorMsg string }
	if json.Unmarshal(body, &eb) == nil {
		f.code, f.msg = eb.ErrorCode, truncate(eb.ErrorMsg, 500)
	}
	return nil, f
}

// account is the answer of GetPassword: property name to value.
type account map[string]string

// decodeAccount decodes a GetPassword answer, a flat JSON object whose
// values are strings (PasswordChangeInProcess may be a boolean).
func decodeAccount(body []byte) (account, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, false
	}
	acct := make(account, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case string:
			acct[k] = v
		case bool:
			acct[k] = map[bool]string{true: "True", false: "False"}[v]
		case json.Number:
			acct[k] = v.String()
		case nil:
			acct[k] = ""
		}
	}
	return acct, true
}

// property returns the value of loc.Property: an exact match of the name
// first, else a case-insensitive one. A property that is absent or empty
// (the CCP returns an empty value for a property the object does not have)
// is not found.
func (a account) property(loc Locator, folder string) (string, error) {
	v, ok := a[loc.Property]
	if !ok {
		for k, kv := range a {
			if strings.EqualFold(k, loc.Property) {
				v, ok = kv, true
				break
			}
		}
	}
	if ok && v != "" {
		return v, nil
	}
	var names []string
	for k, kv := range a {
		if kv != "" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	what := "has no property"
	if ok {
		what = "has an empty property"
	}
	return "", jobs.Wrap(secrets.ErrNotFound, jobs.CodeSecretUnavailable,
		"CyberArk password object %s %s %q; it has %s: fix the #property of reference cyberark:%s",
		objectText(loc, folder), what, loc.Property, strings.Join(names, ", "), loc).WithRetryable(false)
}

// objectText names a password object as the CCP prints a query.
func objectText(loc Locator, folder string) string {
	return fmt.Sprintf("[Safe=%s;Folder=%s;Object=%s]", loc.Safe, folder, loc.Object)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
