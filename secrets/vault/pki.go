package vault

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

var _ secrets.Source = (*pkiSource)(nil)

// pkiRetryEvery is how often a failed renewal is tried again while the
// certificate issued before is still valid.
const pkiRetryEvery = 2 * time.Second

// pkiRef is a parsed vault-pki: reference, MOUNT/issue/ROLE?PARAMS.
type pkiRef struct {
	mount, role string
	params      url.Values
}

// parsePKIRef parses the body of a vault-pki: reference. The mount is what
// precedes the last "/issue/" and may have several segments; the query's
// parameters (common_name, ttl, alt_names, ip_sans, uri_sans...) are sent
// to Vault as they are, a repeated one joined with commas.
func parsePKIRef(body string) (pkiRef, error) {
	bad := func(why string) (pkiRef, error) {
		return pkiRef{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference vault-pki:%s %s; write vault-pki:MOUNT/issue/ROLE?common_name=NAME&ttl=24h", body, why)
	}
	loc, query, _ := strings.Cut(body, "?")
	i := strings.LastIndex(loc, "/issue/")
	if i < 0 {
		return bad("has no /issue/ROLE")
	}
	r := pkiRef{mount: strings.Trim(loc[:i], "/"), role: loc[i+len("/issue/"):]}
	if r.mount == "" || r.role == "" || strings.Contains(r.role, "/") {
		return bad("needs a mount before /issue/ and one role name after it")
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return bad("has a query that does not parse")
	}
	if f := params.Get("format"); f != "" && f != "pem" {
		return bad("asks for format " + f + "; only pem is supported (leave format out)")
	}
	r.params = params
	return r, nil
}

func (r pkiRef) path() string { return r.mount + "/issue/" + r.role }

// pkiSource serves vault-pki: references: it issues a certificate on first
// use, keeps it and its private key in memory only, and issues a new one
// once the renew fraction of its lifetime has passed.
type pkiSource struct {
	c  *Client
	mu sync.Mutex
	m  map[string]*pkiEntry
}

// pkiEntry is the certificate of one reference.
type pkiEntry struct {
	// sem is held by the one goroutine issuing for this reference.
	sem chan struct{}
	cur atomic.Pointer[pkiCert]
	// retryAt is when a failed renewal may be tried again; guarded by sem.
	retryAt time.Time
}

// pkiCert is one issued certificate; never modified once stored.
type pkiCert struct {
	bundle   []byte // PEM: certificate, CA chain, private key
	serial   string
	cn       string
	notAfter time.Time
	renewAt  time.Time
}

func (p *pkiCert) secret() secrets.Secret {
	return secrets.Secret{Data: bytes.Clone(p.bundle), Version: "pki:" + p.serial}
}

func (s *pkiSource) entry(key string) *pkiEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil {
		e = &pkiEntry{sem: make(chan struct{}, 1)}
		s.m[key] = e
	}
	return e
}

// clear forgets every certificate and key.
func (s *pkiSource) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = map[string]*pkiEntry{}
}

// Fetch returns a PEM bundle (certificate, CA chain, PKCS#8 private key)
// with Version "pki:SERIAL". It issues once for concurrent first uses, then
// returns the same certificate until the renew fraction of its lifetime has
// passed. When Vault fails at renewal time, the certificate issued before is
// returned (and a warning logged) for as long as it is valid; only then the
// failure is reported.
func (s *pkiSource) Fetch(ctx context.Context, ref secrets.Ref) (secrets.Secret, error) {
	r, err := parsePKIRef(ref.Body)
	if err != nil {
		return secrets.Secret{}, err
	}
	e := s.entry(r.path() + "?" + r.params.Encode())
	cur := e.cur.Load()
	if cur != nil && time.Now().Before(cur.renewAt) {
		return cur.secret(), nil
	}
	select {
	case e.sem <- struct{}{}:
	default:
		if cur != nil && time.Now().Before(cur.notAfter) {
			return cur.secret(), nil // another goroutine is renewing it
		}
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			return secrets.Secret{}, classify(ctx.Err(), s.c.addr, op{doing: "issuing a certificate from PKI role " + r.path()})
		}
	}
	defer func() { <-e.sem }()
	now := time.Now()
	cur = e.cur.Load()
	if cur != nil && (now.Before(cur.renewAt) || (now.Before(e.retryAt) && now.Before(cur.notAfter))) {
		return cur.secret(), nil
	}
	next, err := s.c.issue(ctx, r)
	if err != nil {
		if cur != nil && time.Now().Before(cur.notAfter) {
			e.retryAt = time.Now().Add(pkiRetryEvery)
			s.c.log.Warn().Err(err).Str("role", r.path()).Str("serial", cur.serial).Time("not_after", cur.notAfter).
				Msg("cannot renew the Vault PKI certificate; still using the one issued before while it is valid")
			return cur.secret(), nil
		}
		if cur != nil {
			je := jobs.AsError(err)
			out := jobs.Wrap(je, je.Code, "the certificate from Vault PKI role %s (serial %s) expired at %s and could not be renewed: %s",
				r.path(), cur.serial, cur.notAfter.UTC().Format(time.RFC3339), je.Message)
			out.Retryable = je.Retryable
			return secrets.Secret{}, out
		}
		return secrets.Secret{}, err
	}
	e.cur.Store(next)
	ev := s.c.log.Info()
	if cur != nil {
		ev = ev.Str("previous_serial", cur.serial)
	}
	ev.Str("role", r.path()).Str("serial", next.serial).Str("common_name", next.cn).
		Time("not_after", next.notAfter).Time("renew_at", next.renewAt).Msg("issued a client certificate from Vault PKI")
	return next.secret(), nil
}

// issue asks Vault's PKI engine for a new certificate and key.
func (c *Client) issue(ctx context.Context, r pkiRef) (*pkiCert, error) {
	data := map[string]any{}
	for k, v := range r.params {
		data[k] = strings.Join(v, ",")
	}
	if _, ok := data["private_key_format"]; !ok {
		data["private_key_format"] = "pkcs8"
	}
	what := "a certificate from PKI role " + r.path()
	start := time.Now()
	sec, err := c.do(ctx, op{doing: "issuing " + what, path: r.path(), capability: "update"}, func(cl *api.Client) (*api.Secret, error) {
		return cl.Logical().WriteWithContext(ctx, r.path(), data)
	})
	if err != nil {
		return nil, err
	}
	incomplete := func(missing string) (*pkiCert, error) {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable,
			"Vault at %s issued %s without %s; check that %s is a PKI engine's issue endpoint", c.addr, what, missing, r.path())
	}
	if sec == nil || sec.Data == nil {
		return incomplete("any data")
	}
	certPEM, _ := sec.Data["certificate"].(string)
	keyPEM, _ := sec.Data["private_key"].(string)
	if certPEM == "" {
		return incomplete("a certificate")
	}
	if keyPEM == "" {
		return incomplete("a private key")
	}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return incomplete("a PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return incomplete("a certificate that parses")
	}
	var b bytes.Buffer
	b.WriteString(strings.TrimSpace(certPEM) + "\n")
	chain, _ := sec.Data["ca_chain"].([]any)
	for _, c := range chain {
		if s, ok := c.(string); ok && s != "" {
			b.WriteString(strings.TrimSpace(s) + "\n")
		}
	}
	if len(chain) == 0 {
		if ca, _ := sec.Data["issuing_ca"].(string); ca != "" {
			b.WriteString(strings.TrimSpace(ca) + "\n")
		}
	}
	b.WriteString(strings.TrimSpace(keyPEM) + "\n")
	// The lifetime counts from when the certificate became usable here:
	// Vault backdates NotBefore (30s by default), which would make a
	// short-lived certificate look half used at birth.
	from := leaf.NotBefore
	if start.After(from) {
		from = start
	}
	life := leaf.NotAfter.Sub(from)
	return &pkiCert{
		bundle:   b.Bytes(),
		serial:   secrets.SerialHex(leaf),
		cn:       leaf.Subject.CommonName,
		notAfter: leaf.NotAfter,
		renewAt:  from.Add(time.Duration(float64(life) * c.cfg.PKIRenewFraction)),
	}, nil
}

// String describes a certificate without its key, for debugging.
func (p *pkiCert) String() string {
	return fmt.Sprintf("pki certificate serial %s CN=%s not after %s", p.serial, p.cn, p.notAfter.UTC().Format(time.RFC3339))
}
