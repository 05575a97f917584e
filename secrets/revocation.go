package secrets

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
	"golang.org/x/sync/singleflight"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Revocation checking (profile key revocation: off | prefer | require).
//
// The check runs in the client tls.Config's VerifyConnection, after
// crypto/tls has verified the partner's chain against the profile's
// truststore, on every handshake (resumed ones too). It checks the leaf of
// the first verified chain against its issuer, the chain's second
// certificate, asking in turn:
//
//  1. the OCSP response the partner stapled to the handshake;
//  2. the OCSP responders the certificate names (Authority Information
//     Access), over HTTP;
//  3. the CRLs the certificate names (CRL Distribution Points), over HTTP.
//
// The first source that gives a valid answer, good or revoked, decides. An
// answer is valid only when it is signed by the issuer (OCSP: or by a
// responder whose certificate the issuer signed for OCSP signing) and is
// current (thisUpdate not in the future, nextUpdate not past, with
// RevocationSkew of tolerance). A revoked certificate fails the handshake
// with jobs.CodeServerCertRevoked under prefer and require; when no source
// answers, prefer lets the handshake go on and require fails it with the
// same code and a message saying the status could not be had.
//
// Answers fetched over HTTP are cached, shared by every profile and
// Resolver of the process (the checker is package-level): an OCSP answer
// per responder URL, issuer and serial, a CRL per URL and issuer, each
// until its nextUpdate (DefaultRevocationTTL when it has none). A fetch
// that failed is remembered for RevocationFailureTTL so that a responder
// that is down does not slow every handshake. Concurrent handshakes that
// need the same answer share one fetch. Stapled responses are not cached:
// they come with each handshake.
//
// Fetches go direct (no egress proxy), over plain HTTP as RFC 6960 and
// RFC 5280 expect (the answers are signed), bounded by
// RevocationFetchTimeout each and RevocationCheckTimeout in all, and by
// MaxOCSPResponseBytes and MaxCRLBytes.

// Defaults of RevocationOptions.
const (
	// RevocationFetchTimeout bounds one OCSP or CRL fetch.
	RevocationFetchTimeout = 3 * time.Second
	// RevocationCheckTimeout bounds the whole check of one handshake, all
	// fetches included; it stays below the executor's TLS handshake
	// timeout (10s).
	RevocationCheckTimeout = 5 * time.Second
	// MaxOCSPResponseBytes caps an OCSP response.
	MaxOCSPResponseBytes = 64 << 10
	// MaxCRLBytes caps a CRL.
	MaxCRLBytes = 10 << 20
	// DefaultRevocationTTL is how long an answer without a nextUpdate (the
	// responder saying newer information is always available) is kept.
	DefaultRevocationTTL = time.Minute
	// RevocationFailureTTL is how long a source that gave no answer (down,
	// slow, invalid answer) is not asked again.
	RevocationFailureTTL = 30 * time.Second
	// RevocationSkew is the clock skew tolerated on thisUpdate and
	// nextUpdate.
	RevocationSkew = 5 * time.Minute
)

// maxRevocationURLs is how many OCSP responders, and how many CRL
// distribution points, of one certificate are asked at most.
const maxRevocationURLs = 3

// RevocationOptions configure a RevocationChecker. Zero values mean the
// defaults above.
type RevocationOptions struct {
	FetchTimeout time.Duration
	CheckTimeout time.Duration
	MaxOCSPBytes int64
	MaxCRLBytes  int64
	DefaultTTL   time.Duration
	FailureTTL   time.Duration
	// Now is the clock for validity and caching. Default time.Now.
	Now func() time.Time
}

// RevocationChecker checks partner certificates for revocation by OCSP and
// CRL, caching what it fetched. It is safe for concurrent use. The
// Resolver's profiles share one (see Material.Config); tests make their
// own.
type RevocationChecker struct {
	opts   RevocationOptions
	client *http.Client
	group  singleflight.Group

	mu    sync.Mutex
	cache map[string]*revEntry
}

// defaultRevocation is the checker of every profile the Resolver builds:
// one cache per process, shared across profiles.
var defaultRevocation = NewRevocationChecker(RevocationOptions{})

// NewRevocationChecker returns a checker with an empty cache and its own
// HTTP client, which connects directly (no proxy).
func NewRevocationChecker(o RevocationOptions) *RevocationChecker {
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = RevocationFetchTimeout
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = RevocationCheckTimeout
	}
	if o.MaxOCSPBytes <= 0 {
		o.MaxOCSPBytes = MaxOCSPResponseBytes
	}
	if o.MaxCRLBytes <= 0 {
		o.MaxCRLBytes = MaxCRLBytes
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultRevocationTTL
	}
	if o.FailureTTL <= 0 {
		o.FailureTTL = RevocationFailureTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tr := &http.Transport{
		Proxy:                 nil, // direct, whatever HTTP_PROXY says
		DialContext:           (&net.Dialer{Timeout: o.FetchTimeout}).DialContext,
		TLSHandshakeTimeout:   o.FetchTimeout,
		ResponseHeaderTimeout: o.FetchTimeout,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s: URL", req.URL.Scheme)
			}
			return nil
		},
	}
	return &RevocationChecker{opts: o, client: client, cache: map[string]*revEntry{}}
}

// revStatus is what a source said of a certificate.
type revStatus int

const (
	revNoAnswer revStatus = iota // down, invalid answer, or "unknown"
	revGood
	revRevoked
)

// revAnswer is one source's answer about one certificate.
type revAnswer struct {
	status    revStatus
	revokedAt time.Time
	reason    int
	// why says, when status is revNoAnswer, why there is no answer.
	why string
}

// revEntry is a cached fetch: an OCSP answer, or a CRL's revoked serials,
// or the failure to get either.
type revEntry struct {
	until time.Time
	// ocsp is the OCSP answer (OCSP entries).
	ocsp revAnswer
	// revoked maps serial (hex) to its CRL entry (CRL entries); nil with
	// failure set when the CRL could not be had.
	revoked map[string]crlRevoked
	// failure is why the fetch gave no usable answer, "" when it did.
	failure string
}

type crlRevoked struct {
	at     time.Time
	reason int
}

// VerifyConnection returns the tls.Config.VerifyConnection of a profile
// whose revocation setting is mode, or nil when mode is off. The function
// returns a *jobs.Error with CodeServerCertRevoked when the partner's
// certificate is revoked, or, under require, when its status could not be
// had.
func (c *RevocationChecker) VerifyConnection(profile, mode string) func(tls.ConnectionState) error {
	if mode != RevocationPrefer && mode != RevocationRequire {
		return nil
	}
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) < 2 {
			// No chain (verification off, which profiles never do), or the
			// partner's certificate is itself a trust anchor of the
			// truststore: there is no issuer to ask. Taking it out of the
			// truststore is how such a certificate is revoked.
			return nil
		}
		leaf, issuer := cs.VerifiedChains[0][0], cs.VerifiedChains[0][1]
		return c.check(profile, mode, cs.ServerName, leaf, issuer, cs.OCSPResponse)
	}
}

// check asks the sources in turn and decides.
func (c *RevocationChecker) check(profile, mode, host string, leaf, issuer *x509.Certificate, staple []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.CheckTimeout)
	defer cancel()
	var problems []string
	decide := func(a revAnswer, source string) (error, bool) {
		switch a.status {
		case revGood:
			return nil, true
		case revRevoked:
			return revokedError(host, leaf, issuer, a, source), true
		}
		problems = append(problems, source+": "+a.why)
		return nil, false
	}
	if len(staple) > 0 {
		if err, done := decide(c.stapled(staple, leaf, issuer), "the stapled OCSP response"); done {
			return err
		}
	}
	ocspURLs, skipped := revocationURLs(leaf.OCSPServer)
	problems = append(problems, skipped...)
	for _, u := range ocspURLs {
		if err, done := decide(c.ocspStatus(ctx, u, leaf, issuer), "OCSP responder "+u); done {
			return err
		}
	}
	crlURLs, skipped := revocationURLs(leaf.CRLDistributionPoints)
	problems = append(problems, skipped...)
	for _, u := range crlURLs {
		if err, done := decide(c.crlStatus(ctx, u, leaf, issuer), "CRL "+u); done {
			return err
		}
	}
	if mode != RevocationRequire {
		return nil
	}
	hint := "check that the worker reaches these URLs directly (not through a proxy)"
	if len(ocspURLs)+len(crlURLs) == 0 {
		hint = "ask the partner to staple OCSP responses, or for a certificate that names an OCSP responder or a CRL"
	}
	if len(problems) == 0 {
		problems = append(problems, "the partner stapled no OCSP response and the certificate names no OCSP responder and no CRL distribution point")
	}
	return jobs.Errorf(jobs.CodeServerCertRevoked,
		"the revocation status of the server certificate %s could not be had (%s), and profile %q has revocation: require, which refuses a certificate whose status is unknown; %s, or set revocation: prefer to accept a certificate whose status cannot be had",
		describeServerCert(host, leaf, issuer), strings.Join(problems, "; "), profile, hint)
}

// revokedError is the failure of a revoked certificate.
func revokedError(host string, leaf, issuer *x509.Certificate, a revAnswer, source string) error {
	return jobs.Errorf(jobs.CodeServerCertRevoked,
		"the server certificate %s is revoked (since %s, reason %s) according to %s; the partner must replace its certificate",
		describeServerCert(host, leaf, issuer), a.revokedAt.UTC().Format(time.RFC3339), reasonName(a.reason), source)
}

// describeServerCert names a partner's certificate for a message.
func describeServerCert(host string, leaf, issuer *x509.Certificate) string {
	s := ""
	if host != "" {
		s = "of " + host + " "
	}
	return fmt.Sprintf("%s(subject %q, serial %s, issuer %q)", s, leaf.Subject.String(), SerialHex(leaf), issuer.Subject.String())
}

// revocationURLs returns the http and https URLs of list, at most
// maxRevocationURLs, and a note for each URL left out.
func revocationURLs(list []string) (use, skipped []string) {
	for _, s := range list {
		u, err := url.Parse(s)
		switch {
		case err != nil || u.Host == "":
			skipped = append(skipped, fmt.Sprintf("%q: not a URL", s))
		case u.Scheme != "http" && u.Scheme != "https":
			skipped = append(skipped, fmt.Sprintf("%s: %s: URLs are not supported (only http and https)", s, u.Scheme))
		case len(use) == maxRevocationURLs:
			skipped = append(skipped, s+": not asked (more than 3 URLs)")
		default:
			use = append(use, s)
		}
	}
	return use, skipped
}

// stapled checks an OCSP response stapled to the handshake.
func (c *RevocationChecker) stapled(staple []byte, leaf, issuer *x509.Certificate) revAnswer {
	a, _ := c.parseOCSP(staple, leaf, issuer)
	return a
}

// ocspStatus returns the answer of the OCSP responder at u, from the cache
// or fetched.
func (c *RevocationChecker) ocspStatus(ctx context.Context, u string, leaf, issuer *x509.Certificate) revAnswer {
	key := "ocsp\x00" + u + "\x00" + issuerKey(issuer) + "\x00" + leaf.SerialNumber.Text(16)
	e, err := c.cached(ctx, key, func() *revEntry { return c.fetchOCSP(u, leaf, issuer) })
	if err != nil {
		return revAnswer{why: err.Error()}
	}
	if e.failure != "" {
		return revAnswer{why: e.failure}
	}
	return e.ocsp
}

// crlStatus looks the certificate up in the CRL at u, from the cache or
// fetched.
func (c *RevocationChecker) crlStatus(ctx context.Context, u string, leaf, issuer *x509.Certificate) revAnswer {
	key := "crl\x00" + u + "\x00" + issuerKey(issuer)
	e, err := c.cached(ctx, key, func() *revEntry { return c.fetchCRL(u, issuer) })
	if err != nil {
		return revAnswer{why: err.Error()}
	}
	if e.failure != "" {
		return revAnswer{why: e.failure}
	}
	if r, ok := e.revoked[leaf.SerialNumber.Text(16)]; ok {
		return revAnswer{status: revRevoked, revokedAt: r.at, reason: r.reason}
	}
	return revAnswer{status: revGood}
}

// cached returns the entry of key while it is current, else fetches it
// (one fetch for concurrent callers) and keeps it until its until. It gives
// up when ctx ends, leaving the fetch to finish for the next caller.
func (c *RevocationChecker) cached(ctx context.Context, key string, fetch func() *revEntry) (*revEntry, error) {
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	if ok && c.opts.Now().Before(e.until) {
		return e, nil
	}
	ch := c.group.DoChan(key, func() (any, error) {
		e := fetch()
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.cache) >= 1024 {
			c.pruneLocked()
		}
		c.cache[key] = e
		return e, nil
	})
	select {
	case r := <-ch:
		return r.Val.(*revEntry), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer within the check's %s", c.opts.CheckTimeout)
	}
}

// pruneLocked drops expired entries.
func (c *RevocationChecker) pruneLocked() {
	now := c.opts.Now()
	for k, e := range c.cache {
		if !now.Before(e.until) {
			delete(c.cache, k)
		}
	}
}

// failed is an entry for a fetch that gave no usable answer.
func (c *RevocationChecker) failed(format string, args ...any) *revEntry {
	return &revEntry{until: c.opts.Now().Add(c.opts.FailureTTL), failure: fmt.Sprintf(format, args...)}
}

// keepUntil is how long an answer with this nextUpdate is kept.
func (c *RevocationChecker) keepUntil(nextUpdate time.Time) time.Time {
	if nextUpdate.IsZero() {
		return c.opts.Now().Add(c.opts.DefaultTTL)
	}
	return nextUpdate
}

// fetchOCSP asks the responder at u about leaf.
func (c *RevocationChecker) fetchOCSP(u string, leaf, issuer *x509.Certificate) *revEntry {
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return c.failed("cannot make the OCSP request: %v", err)
	}
	body, err := c.fetch(http.MethodPost, u, req, "application/ocsp-request", c.opts.MaxOCSPBytes)
	if err != nil {
		return c.failed("%v", err)
	}
	a, next := c.parseOCSP(body, leaf, issuer)
	if a.status == revNoAnswer && next.IsZero() {
		// Invalid or unusable response: not an answer to keep long.
		return c.failed("%s", a.why)
	}
	return &revEntry{until: c.keepUntil(next), ocsp: a}
}

// parseOCSP checks an OCSP response about leaf and returns its answer and
// its nextUpdate (zero when the response is not a valid answer or has
// none).
func (c *RevocationChecker) parseOCSP(der []byte, leaf, issuer *x509.Certificate) (revAnswer, time.Time) {
	resp, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		// A response signed by the issuer that also carries the issuer's
		// certificate fails above when the issuer is not self-signed:
		// accept it when the embedded certificate is the issuer (whose
		// signature on the response was then checked).
		if r2, err2 := ocsp.ParseResponseForCert(der, leaf, nil); err2 == nil && r2.Certificate != nil && r2.Certificate.Equal(issuer) {
			resp, err = r2, nil
		}
	}
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return revAnswer{why: fmt.Sprintf("the responder answered %s", ocspStatusName(re.Status))}, time.Time{}
		}
		return revAnswer{why: "invalid OCSP response: " + trimErr(err)}, time.Time{}
	}
	now := c.opts.Now()
	if signer := resp.Certificate; signer != nil && !signer.Equal(issuer) {
		// A delegated responder: the issuer signed its certificate (checked
		// by ParseResponseForCert); it must be meant for OCSP signing and
		// be valid now (RFC 6960 4.2.2.2).
		if !hasOCSPSigning(signer) {
			return revAnswer{why: fmt.Sprintf("invalid OCSP response: signed by %q, whose certificate is not issued for OCSP signing", signer.Subject.String())}, time.Time{}
		}
		if now.Before(signer.NotBefore) || now.After(signer.NotAfter) {
			return revAnswer{why: fmt.Sprintf("invalid OCSP response: the responder certificate %q is not valid now", signer.Subject.String())}, time.Time{}
		}
	}
	if resp.ThisUpdate.After(now.Add(RevocationSkew)) {
		return revAnswer{why: "invalid OCSP response: its thisUpdate " + resp.ThisUpdate.UTC().Format(time.RFC3339) + " is in the future"}, time.Time{}
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate.Add(RevocationSkew)) {
		return revAnswer{why: "stale OCSP response: its nextUpdate " + resp.NextUpdate.UTC().Format(time.RFC3339) + " has passed"}, time.Time{}
	}
	next := resp.NextUpdate
	if next.IsZero() {
		next = now.Add(c.opts.DefaultTTL)
	}
	switch resp.Status {
	case ocsp.Good:
		return revAnswer{status: revGood}, next
	case ocsp.Revoked:
		return revAnswer{status: revRevoked, revokedAt: resp.RevokedAt, reason: resp.RevocationReason}, next
	}
	return revAnswer{why: "the responder does not know the certificate (status unknown)"}, next
}

// fetchCRL fetches and checks the CRL at u, issued by issuer.
func (c *RevocationChecker) fetchCRL(u string, issuer *x509.Certificate) *revEntry {
	body, err := c.fetch(http.MethodGet, u, nil, "", c.opts.MaxCRLBytes)
	if err != nil {
		return c.failed("%v", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("-----BEGIN")) {
		// RFC 5280 says DER; some servers serve PEM.
		if b, _ := pem.Decode(body); b != nil && b.Type == "X509 CRL" {
			body = b.Bytes
		}
	}
	rl, err := x509.ParseRevocationList(body)
	if err != nil {
		return c.failed("invalid CRL: %s", trimErr(err))
	}
	if !bytes.Equal(rl.RawIssuer, issuer.RawSubject) {
		return c.failed("the CRL is issued by %q, not by the certificate's issuer", rl.Issuer.String())
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return c.failed("invalid CRL: its signature does not verify with the issuer's key: %s", trimErr(err))
	}
	for _, ext := range rl.Extensions {
		if ext.Critical {
			// Issuing distribution point, delta CRL indicator: a partial
			// or delta CRL, which this check does not read.
			return c.failed("the CRL has a critical extension %s that is not supported (delta or partitioned CRL)", ext.Id)
		}
	}
	now := c.opts.Now()
	if rl.ThisUpdate.After(now.Add(RevocationSkew)) {
		return c.failed("invalid CRL: its thisUpdate %s is in the future", rl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !rl.NextUpdate.IsZero() && now.After(rl.NextUpdate.Add(RevocationSkew)) {
		return c.failed("stale CRL: its nextUpdate %s has passed", rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	revoked := make(map[string]crlRevoked, len(rl.RevokedCertificateEntries))
	for _, r := range rl.RevokedCertificateEntries {
		if r.SerialNumber == nil {
			continue
		}
		revoked[r.SerialNumber.Text(16)] = crlRevoked{at: r.RevocationTime, reason: r.ReasonCode}
	}
	return &revEntry{until: c.keepUntil(rl.NextUpdate), revoked: revoked}
}

// fetch makes one bounded HTTP request and returns the body of a 200.
func (c *RevocationChecker) fetch(method, u string, body []byte, contentType string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.FetchTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %s", trimErr(err))
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "mtlsrelay")
	resp, err := c.client.Do(req)
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("no answer within %s", c.opts.FetchTimeout)
		}
		return nil, errors.New(fetchErrorText(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("no complete answer within %s", c.opts.FetchTimeout)
		}
		return nil, fmt.Errorf("reading the answer: %s", fetchErrorText(err))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("the answer is larger than %d bytes", limit)
	}
	return b, nil
}

// fetchErrorText describes a failed fetch without repeating its URL.
func fetchErrorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return trimErr(err)
}

// trimErr returns err's text, cut to a length fit for a message.
func trimErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// issuerKey identifies an issuing certificate in cache keys.
func issuerKey(issuer *x509.Certificate) string {
	sum := sha256.Sum256(issuer.Raw)
	return hex.EncodeToString(sum[:16])
}

func hasOCSPSigning(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageOCSPSigning {
			return true
		}
	}
	return false
}

// ocspStatusName names an OCSP error response status.
func ocspStatusName(s ocsp.ResponseStatus) string {
	switch s {
	case ocsp.Malformed:
		return "malformedRequest"
	case ocsp.InternalError:
		return "internalError"
	case ocsp.TryLater:
		return "tryLater"
	case ocsp.SignatureRequired:
		return "sigRequired"
	case ocsp.Unauthorized:
		return "unauthorized"
	}
	return fmt.Sprintf("status %d", int(s))
}

// reasonName names a CRLReason (RFC 5280 5.3.1).
func reasonName(r int) string {
	names := map[int]string{
		ocsp.Unspecified:          "unspecified",
		ocsp.KeyCompromise:        "keyCompromise",
		ocsp.CACompromise:         "cACompromise",
		ocsp.AffiliationChanged:   "affiliationChanged",
		ocsp.Superseded:           "superseded",
		ocsp.CessationOfOperation: "cessationOfOperation",
		ocsp.CertificateHold:      "certificateHold",
		ocsp.RemoveFromCRL:        "removeFromCRL",
		ocsp.PrivilegeWithdrawn:   "privilegeWithdrawn",
		ocsp.AACompromise:         "aACompromise",
	}
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("%d", r)
}
