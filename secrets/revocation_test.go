package secrets_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/internal/testocsp"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// revServer is an OCSP responder and CRL server made with Go, whose
// answers each test sets, counting the requests it gets.
type revServer struct {
	srv *httptest.Server

	mu        sync.Mutex
	ocspReply func(*ocsp.Request) (status int, body []byte)
	crl       []byte
	delay     time.Duration
	ocspHits  int
	crlHits   int
}

func newRevServer(t *testing.T) *revServer {
	t.Helper()
	s := &revServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: the server notices a client that went away
		// only once it has.
		der, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		delay, reply, crl := s.delay, s.ocspReply, s.crl
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		switch r.URL.Path {
		case "/ocsp":
			s.mu.Lock()
			s.ocspHits++
			s.mu.Unlock()
			req, err := ocsp.ParseRequest(der)
			if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if reply == nil {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			status, body := reply(req)
			w.WriteHeader(status)
			_, _ = w.Write(body)
		case "/crl":
			s.mu.Lock()
			s.crlHits++
			s.mu.Unlock()
			if crl == nil {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			_, _ = w.Write(crl)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *revServer) ocspURL() string { return s.srv.URL + "/ocsp" }
func (s *revServer) crlURL() string  { return s.srv.URL + "/crl" }

func (s *revServer) setOCSP(f func(*ocsp.Request) (int, []byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ocspReply = f
}

// answer makes the responder always send der.
func (s *revServer) answer(der []byte) {
	s.setOCSP(func(*ocsp.Request) (int, []byte) { return http.StatusOK, der })
}

func (s *revServer) setCRL(der []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crl = der
}

func (s *revServer) setDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

func (s *revServer) hits() (ocspHits, crlHits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ocspHits, s.crlHits
}

// revPKI is a CA, a delegated OCSP responder and a partner certificate
// naming the revServer's URLs.
type revPKI struct {
	ca, other *pki.CA
	delegate  *pki.Leaf
	leaf      *pki.Leaf
	srv       *revServer
}

func newRevPKI(t *testing.T, ocspURL, crlURL bool) *revPKI {
	t.Helper()
	p := &revPKI{srv: newRevServer(t)}
	var err error
	if p.ca, err = pki.NewCA("revocation test CA"); err != nil {
		t.Fatal(err)
	}
	if p.other, err = pki.NewCA("other CA"); err != nil {
		t.Fatal(err)
	}
	if p.delegate, err = p.ca.Issue(pki.LeafOptions{CommonName: "OCSP responder", OCSPSigning: true}); err != nil {
		t.Fatal(err)
	}
	opts := pki.LeafOptions{CommonName: "partner.example", DNSNames: []string{"partner.example", "localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}
	if ocspURL {
		opts.OCSPServer = []string{p.srv.ocspURL()}
	}
	if crlURL {
		opts.CRLDistributionPoints = []string{p.srv.crlURL()}
	}
	if p.leaf, err = p.ca.Issue(opts); err != nil {
		t.Fatal(err)
	}
	return p
}

// ocspResp is an OCSP response about leaf with status, signed by the CA.
func (p *revPKI) ocspResp(t *testing.T, status int, mod ...func(*ocsp.Response)) []byte {
	t.Helper()
	now := time.Now()
	tmpl := ocsp.Response{
		Status:       status,
		SerialNumber: p.leaf.Cert.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		NextUpdate:   now.Add(time.Hour),
	}
	if status == ocsp.Revoked {
		tmpl.RevokedAt = now.Add(-24 * time.Hour)
		tmpl.RevocationReason = ocsp.KeyCompromise
	}
	signerCert, signerKey := p.ca.Cert, crypto.Signer(p.ca.Key)
	for _, f := range mod {
		f(&tmpl)
	}
	if tmpl.Certificate != nil {
		// A delegated (or rogue) signer: the response carries its certificate.
		switch tmpl.Certificate {
		case p.delegate.Cert:
			signerCert, signerKey = p.delegate.Cert, p.delegate.Key
		default:
			t.Fatalf("unknown signer %s", tmpl.Certificate.Subject)
		}
	}
	der, err := ocsp.CreateResponse(p.ca.Cert, signerCert, tmpl, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// signedBy returns an OCSP response about leaf signed by key, carrying cert.
func (p *revPKI) signedBy(t *testing.T, status int, cert *x509.Certificate, key crypto.Signer) []byte {
	t.Helper()
	tmpl := ocsp.Response{Status: status, SerialNumber: p.leaf.Cert.SerialNumber,
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), Certificate: cert}
	der, err := ocsp.CreateResponse(p.ca.Cert, cert, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// crl is a DER CRL by ca listing serials.
func crl(t *testing.T, ca *pki.CA, thisUpdate, nextUpdate time.Time, serials ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Hour), ReasonCode: ocsp.Superseded})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (p *revPKI) state(staple []byte) tls.ConnectionState {
	return tls.ConnectionState{
		ServerName:     "partner.example",
		VerifiedChains: [][]*x509.Certificate{{p.leaf.Cert, p.ca.Cert}},
		OCSPResponse:   staple,
	}
}

// verify runs the check of a profile in mode on p's partner certificate.
func verify(c *secrets.RevocationChecker, mode string, cs tls.ConnectionState) error {
	return c.VerifyConnection("partner-a", mode)(cs)
}

// wantRevoked checks a revoked-certificate failure naming the source.
func wantRevoked(t *testing.T, p *revPKI, err error, source string) {
	t.Helper()
	je := wantCode(t, err, jobs.CodeServerCertRevoked)
	t.Logf("message: %s", je.Message)
	for _, s := range []string{"is revoked", source, p.leaf.SerialHex(), "CN=partner.example", "partner.example"} {
		if !strings.Contains(je.Message, s) {
			t.Errorf("message %q does not name %q", je.Message, s)
		}
	}
	if je.Retryable {
		t.Error("a revoked certificate is retryable")
	}
}

// wantUnavailable checks the require failure when no source answered.
func wantUnavailable(t *testing.T, err error, why ...string) {
	t.Helper()
	je := wantCode(t, err, jobs.CodeServerCertRevoked)
	t.Logf("message: %s", je.Message)
	for _, s := range append([]string{"could not be had", "revocation: require", `profile "partner-a`}, why...) {
		if !strings.Contains(je.Message, s) {
			t.Errorf("message %q does not say %q", je.Message, s)
		}
	}
	if strings.Contains(je.Message, "is revoked") {
		t.Errorf("message %q says revoked", je.Message)
	}
}

func TestRevocationOff(t *testing.T) {
	c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
	for _, mode := range []string{"", secrets.RevocationOff, "bogus"} {
		if f := c.VerifyConnection("p", mode); f != nil {
			t.Errorf("VerifyConnection(%q) is not nil", mode)
		}
	}
}

func TestRevocationOCSP(t *testing.T) {
	p := newRevPKI(t, true, false)
	rogue, err := p.ca.Issue(pki.LeafOptions{CommonName: "another partner", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := p.other.Issue(pki.LeafOptions{CommonName: "other responder", OCSPSigning: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		reply  func(t *testing.T) (int, []byte)
		revoke bool     // the answer is "revoked"
		why    []string // else: the answer is none, for these reasons
	}{
		{"ok/good-signed-by-ca", func(t *testing.T) (int, []byte) { return 200, p.ocspResp(t, ocsp.Good) }, false, nil},
		{"ok/good-signed-by-delegate", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.Certificate = p.delegate.Cert })
		}, false, nil},
		{"ok/good-without-next-update", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.NextUpdate = time.Time{} })
		}, false, nil},
		{"fail/revoked", func(t *testing.T) (int, []byte) { return 200, p.ocspResp(t, ocsp.Revoked) }, true, nil},
		{"fail/revoked-by-delegate", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Revoked, func(r *ocsp.Response) { r.Certificate = p.delegate.Cert })
		}, true, nil},
		{"none/unknown", func(t *testing.T) (int, []byte) { return 200, p.ocspResp(t, ocsp.Unknown) }, false, []string{"status unknown"}},
		// A certificate of the same CA that is not an OCSP signer (another
		// partner's) must not vouch for this one.
		{"none/signed-by-non-ocsp-certificate", func(t *testing.T) (int, []byte) {
			return 200, p.signedBy(t, ocsp.Good, rogue.Cert, rogue.Key)
		}, false, []string{"not issued for OCSP signing"}},
		{"none/signed-by-other-ca-responder", func(t *testing.T) (int, []byte) {
			return 200, p.signedBy(t, ocsp.Good, otherSigner.Cert, otherSigner.Key)
		}, false, []string{"invalid OCSP response"}},
		{"none/signed-by-other-ca", func(t *testing.T) (int, []byte) {
			der, err := ocsp.CreateResponse(p.ca.Cert, p.other.Cert, ocsp.Response{Status: ocsp.Good, SerialNumber: p.leaf.Cert.SerialNumber, ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, p.other.Key)
			if err != nil {
				t.Fatal(err)
			}
			return 200, der
		}, false, []string{"invalid OCSP response"}},
		{"none/stale", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) {
				r.ThisUpdate, r.NextUpdate = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
			})
		}, false, []string{"stale OCSP response"}},
		{"none/from-the-future", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.ThisUpdate = time.Now().Add(time.Hour) })
		}, false, []string{"in the future"}},
		{"none/other-serial", func(t *testing.T) (int, []byte) {
			return 200, p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.SerialNumber = big.NewInt(42) })
		}, false, []string{"invalid OCSP response"}},
		{"none/try-later", func(t *testing.T) (int, []byte) { return 200, ocsp.TryLaterErrorResponse }, false, []string{"tryLater"}},
		{"none/http-500", func(t *testing.T) (int, []byte) { return 500, nil }, false, []string{"HTTP status 500"}},
		{"none/garbage", func(t *testing.T) (int, []byte) { return 200, []byte("<html>") }, false, []string{"invalid OCSP response"}},
		{"none/too-large", func(t *testing.T) (int, []byte) { return 200, make([]byte, 70<<10) }, false, []string{"larger than 65536 bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.reply(t)
			p.srv.setOCSP(func(*ocsp.Request) (int, []byte) { return status, body })
			for _, mode := range []string{secrets.RevocationPrefer, secrets.RevocationRequire} {
				// A checker of its own: nothing cached from other cases.
				c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
				err := verify(c, mode, p.state(nil))
				wantOutcome(t, p, mode, err, "OCSP responder "+p.srv.ocspURL(), tc.revoke, "keyCompromise", tc.why)
			}
		})
	}
}

// wantOutcome checks what a check against source under mode gave: revoked
// (with reason in the message), else passed when there was an answer (why
// nil), else passed under prefer and unavailable, naming source and why,
// under require.
func wantOutcome(t *testing.T, p *revPKI, mode string, err error, source string, revoked bool, reason string, why []string) {
	t.Helper()
	switch {
	case revoked:
		wantRevoked(t, p, err, source)
		if !strings.Contains(err.Error(), reason) {
			t.Errorf("message %q does not give the reason", err)
		}
	case why == nil:
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
	case mode == secrets.RevocationPrefer:
		if err != nil {
			t.Fatalf("prefer without an answer: %v", err)
		}
	default:
		wantUnavailable(t, err, append([]string{source}, why...)...)
	}
}

func TestRevocationStaple(t *testing.T) {
	t.Run("ok/good-staple-needs-no-url", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		if err := verify(c, secrets.RevocationRequire, p.state(p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.Certificate = p.delegate.Cert }))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/revoked-staple", func(t *testing.T) {
		p := newRevPKI(t, true, true)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		for _, mode := range []string{secrets.RevocationPrefer, secrets.RevocationRequire} {
			wantRevoked(t, p, verify(c, mode, p.state(p.ocspResp(t, ocsp.Revoked))), "the stapled OCSP response")
		}
		if o, r := p.srv.hits(); o+r != 0 {
			t.Errorf("a valid staple still fetched: %d OCSP, %d CRL requests", o, r)
		}
	})
	t.Run("ok/invalid-staple-falls-back-to-responder", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		rogue, err := p.other.Issue(pki.LeafOptions{CommonName: "x", OCSPSigning: true})
		if err != nil {
			t.Fatal(err)
		}
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		if err := verify(c, secrets.RevocationRequire, p.state(p.signedBy(t, ocsp.Revoked, rogue.Cert, rogue.Key))); err != nil {
			t.Fatal(err)
		}
		if o, _ := p.srv.hits(); o != 1 {
			t.Errorf("OCSP requests = %d, want 1", o)
		}
	})
	t.Run("fail/stale-staple-and-nothing-else", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		stale := p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) {
			r.ThisUpdate, r.NextUpdate = time.Now().Add(-72*time.Hour), time.Now().Add(-48*time.Hour)
		})
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(stale)), "the stapled OCSP response: stale OCSP response")
		if err := verify(c, secrets.RevocationPrefer, p.state(stale)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRevocationCRL(t *testing.T) {
	now := time.Now()
	idp := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0x00}}
	tests := []struct {
		name    string
		crl     func(p *revPKI) []byte
		revoked bool
		why     []string
	}{
		{"ok/not-listed", func(p *revPKI) []byte { return crl(t, p.ca, now.Add(-time.Hour), now.Add(time.Hour), big.NewInt(7)) }, false, nil},
		{"ok/pem", func(p *revPKI) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl(t, p.ca, now.Add(-time.Hour), now.Add(time.Hour))})
		}, false, nil},
		{"fail/listed", func(p *revPKI) []byte {
			return crl(t, p.ca, now.Add(-time.Hour), now.Add(time.Hour), big.NewInt(7), p.leaf.Cert.SerialNumber)
		}, true, nil},
		{"none/other-issuer", func(p *revPKI) []byte {
			return crl(t, p.other, now.Add(-time.Hour), now.Add(time.Hour), p.leaf.Cert.SerialNumber)
		}, false, []string{"not by the certificate's issuer"}},
		{"none/bad-signature", func(p *revPKI) []byte {
			der := crl(t, p.ca, now.Add(-time.Hour), now.Add(time.Hour), p.leaf.Cert.SerialNumber)
			der[len(der)-3] ^= 0xff
			return der
		}, false, []string{"CRL"}},
		{"none/stale", func(p *revPKI) []byte {
			return crl(t, p.ca, now.Add(-72*time.Hour), now.Add(-48*time.Hour), p.leaf.Cert.SerialNumber)
		}, false, []string{"stale CRL"}},
		{"none/partitioned", func(p *revPKI) []byte {
			tmpl := &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(time.Hour), ExtraExtensions: []pkix.Extension{idp}}
			der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.ca.Cert, p.ca.Key)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}, false, []string{"critical extension 2.5.29.28"}},
		{"none/too-large", func(p *revPKI) []byte { return make([]byte, 2<<10) }, false, []string{"larger than 1024 bytes"}},
		{"none/garbage", func(p *revPKI) []byte { return []byte("not a CRL") }, false, []string{"invalid CRL"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newRevPKI(t, false, true)
			p.srv.setCRL(tc.crl(p))
			for _, mode := range []string{secrets.RevocationPrefer, secrets.RevocationRequire} {
				var opts secrets.RevocationOptions
				if tc.name == "none/too-large" {
					opts.MaxCRLBytes = 1024
				}
				c := secrets.NewRevocationChecker(opts)
				err := verify(c, mode, p.state(nil))
				wantOutcome(t, p, mode, err, "CRL "+p.srv.crlURL(), tc.revoked, "superseded", tc.why)
			}
		})
	}
}

func TestRevocationSources(t *testing.T) {
	t.Run("ok/ocsp-decides-before-crl", func(t *testing.T) {
		p := newRevPKI(t, true, true)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		p.srv.setCRL(crl(t, p.ca, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), p.leaf.Cert.SerialNumber))
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		if err := verify(c, secrets.RevocationRequire, p.state(nil)); err != nil {
			t.Fatal(err)
		}
		if o, r := p.srv.hits(); o != 1 || r != 0 {
			t.Errorf("requests: %d OCSP, %d CRL; want 1, 0", o, r)
		}
	})
	t.Run("fail/crl-when-responder-has-no-answer", func(t *testing.T) {
		p := newRevPKI(t, true, true)
		p.srv.setOCSP(func(*ocsp.Request) (int, []byte) { return 503, nil })
		p.srv.setCRL(crl(t, p.ca, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), p.leaf.Cert.SerialNumber))
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		wantRevoked(t, p, verify(c, secrets.RevocationPrefer, p.state(nil)), "CRL "+p.srv.crlURL())
	})
	t.Run("fail/require-responder-down", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		down := testocsp.ClosedURL(t, "/ocsp")
		downCRL := testocsp.ClosedURL(t, "/crl")
		var err error
		p.leaf, err = p.ca.Issue(pki.LeafOptions{CommonName: "partner.example", Server: true, OCSPServer: []string{down}, CRLDistributionPoints: []string{downCRL}})
		if err != nil {
			t.Fatal(err)
		}
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "OCSP responder "+down, "CRL "+downCRL, "connection refused")
		if err := verify(c, secrets.RevocationPrefer, p.state(nil)); err != nil {
			t.Fatalf("prefer with the responder down: %v", err)
		}
	})
	t.Run("fail/require-no-source", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "names no OCSP responder and no CRL distribution point")
		if err := verify(c, secrets.RevocationPrefer, p.state(nil)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/require-unsupported-scheme", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		var err error
		p.leaf, err = p.ca.Issue(pki.LeafOptions{CommonName: "partner.example", Server: true, CRLDistributionPoints: []string{"ldap://ldap.example/cn=CA?certificateRevocationList"}})
		if err != nil {
			t.Fatal(err)
		}
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "ldap: URLs are not supported")
	})
	t.Run("fail/require-responder-too-slow", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		p.srv.setDelay(2 * time.Second)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{FetchTimeout: 200 * time.Millisecond})
		start := time.Now()
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "no answer within 200ms")
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("the check took %s, beyond its fetch timeout", d)
		}
	})
	t.Run("fail/check-timeout-bounds-all-fetches", func(t *testing.T) {
		p := newRevPKI(t, true, true)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		p.srv.setDelay(2 * time.Second)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{FetchTimeout: time.Second, CheckTimeout: 300 * time.Millisecond})
		start := time.Now()
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "no answer within the check's 300ms")
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Errorf("the check took %s, beyond its check timeout", d)
		}
	})
	t.Run("ok/trust-anchor-leaf", func(t *testing.T) {
		p := newRevPKI(t, false, false)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{p.ca.Cert}}}
		if err := verify(c, secrets.RevocationRequire, cs); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRevocationCache(t *testing.T) {
	t.Run("ok/ocsp-until-next-update-shared-by-profiles", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.answer(p.ocspResp(t, ocsp.Good)) // nextUpdate in an hour
		clock := newFakeClock()
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{Now: clock.Now})
		for _, profile := range []string{"a", "b", "a"} {
			if err := c.VerifyConnection(profile, secrets.RevocationRequire)(p.state(nil)); err != nil {
				t.Fatal(err)
			}
		}
		if o, _ := p.srv.hits(); o != 1 {
			t.Fatalf("OCSP requests = %d after three checks, want 1", o)
		}
		clock.Advance(59 * time.Minute)
		_ = verify(c, secrets.RevocationRequire, p.state(nil))
		if o, _ := p.srv.hits(); o != 1 {
			t.Fatalf("OCSP requests = %d before nextUpdate, want 1", o)
		}
		clock.Advance(2 * time.Minute)
		p.srv.answer(p.ocspResp(t, ocsp.Revoked, func(r *ocsp.Response) {
			r.ThisUpdate, r.NextUpdate = clock.Now(), clock.Now().Add(time.Hour)
		}))
		wantRevoked(t, p, verify(c, secrets.RevocationPrefer, p.state(nil)), "OCSP responder")
		if o, _ := p.srv.hits(); o != 2 {
			t.Fatalf("OCSP requests = %d after nextUpdate, want 2", o)
		}
	})
	t.Run("ok/no-next-update-kept-default-ttl", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.answer(p.ocspResp(t, ocsp.Good, func(r *ocsp.Response) { r.NextUpdate = time.Time{} }))
		clock := newFakeClock()
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{Now: clock.Now, DefaultTTL: 10 * time.Second})
		_ = verify(c, secrets.RevocationRequire, p.state(nil))
		_ = verify(c, secrets.RevocationRequire, p.state(nil))
		clock.Advance(11 * time.Second)
		_ = verify(c, secrets.RevocationRequire, p.state(nil))
		if o, _ := p.srv.hits(); o != 2 {
			t.Fatalf("OCSP requests = %d, want 2", o)
		}
	})
	t.Run("ok/crl-until-next-update", func(t *testing.T) {
		p := newRevPKI(t, false, true)
		clock := newFakeClock()
		p.srv.setCRL(crl(t, p.ca, clock.Now().Add(-time.Minute), clock.Now().Add(30*time.Minute)))
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{Now: clock.Now})
		for range 3 {
			if err := verify(c, secrets.RevocationRequire, p.state(nil)); err != nil {
				t.Fatal(err)
			}
		}
		if _, r := p.srv.hits(); r != 1 {
			t.Fatalf("CRL requests = %d, want 1", r)
		}
		clock.Advance(31 * time.Minute)
		p.srv.setCRL(crl(t, p.ca, clock.Now(), clock.Now().Add(30*time.Minute), p.leaf.Cert.SerialNumber))
		wantRevoked(t, p, verify(c, secrets.RevocationRequire, p.state(nil)), "CRL")
		if _, r := p.srv.hits(); r != 2 {
			t.Fatalf("CRL requests = %d, want 2", r)
		}
	})
	t.Run("ok/failure-kept-failure-ttl", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.setOCSP(func(*ocsp.Request) (int, []byte) { return 500, nil })
		clock := newFakeClock()
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{Now: clock.Now, FailureTTL: 30 * time.Second})
		wantUnavailable(t, verify(c, secrets.RevocationRequire, p.state(nil)), "HTTP status 500")
		if err := verify(c, secrets.RevocationPrefer, p.state(nil)); err != nil {
			t.Fatal(err)
		}
		if o, _ := p.srv.hits(); o != 1 {
			t.Fatalf("OCSP requests = %d, want 1 (the failure is remembered)", o)
		}
		clock.Advance(31 * time.Second)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		if err := verify(c, secrets.RevocationRequire, p.state(nil)); err != nil {
			t.Fatalf("after the failure TTL: %v", err)
		}
		if o, _ := p.srv.hits(); o != 2 {
			t.Fatalf("OCSP requests = %d, want 2", o)
		}
	})
	t.Run("ok/concurrent-checks-share-one-fetch", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		p.srv.answer(p.ocspResp(t, ocsp.Good))
		p.srv.setDelay(200 * time.Millisecond)
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for range 32 {
			wg.Go(func() { errs <- verify(c, secrets.RevocationRequire, p.state(nil)) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if o, _ := p.srv.hits(); o != 1 {
			t.Fatalf("OCSP requests = %d for 32 concurrent checks, want 1", o)
		}
	})
	t.Run("ok/per-certificate", func(t *testing.T) {
		p := newRevPKI(t, true, false)
		goodSerial := p.leaf.Cert.SerialNumber
		p.srv.setOCSP(func(req *ocsp.Request) (int, []byte) {
			status := ocsp.Good
			if req.SerialNumber.Cmp(goodSerial) != 0 {
				status = ocsp.Revoked
			}
			der, err := ocsp.CreateResponse(p.ca.Cert, p.ca.Cert, ocsp.Response{Status: status, SerialNumber: req.SerialNumber,
				ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), RevokedAt: time.Now()}, p.ca.Key)
			if err != nil {
				return 500, nil
			}
			return 200, der
		})
		c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
		if err := verify(c, secrets.RevocationRequire, p.state(nil)); err != nil {
			t.Fatal(err)
		}
		first := p.leaf
		second, err := p.ca.Issue(pki.LeafOptions{CommonName: "partner.example", Server: true, OCSPServer: []string{p.srv.ocspURL()}})
		if err != nil {
			t.Fatal(err)
		}
		p.leaf = second
		wantRevoked(t, p, verify(c, secrets.RevocationRequire, p.state(nil)), "OCSP responder")
		p.leaf = first
		if err := verify(c, secrets.RevocationRequire, p.state(nil)); err != nil {
			t.Fatal(err)
		}
		if o, _ := p.srv.hits(); o != 2 {
			t.Fatalf("OCSP requests = %d, want one per certificate", o)
		}
	})
}

// TestRevocationOpenSSL checks certificates issued, revoked and answered
// for by OpenSSL (openssl ca, openssl ocsp, openssl ca -gencrl).
func TestRevocationOpenSSL(t *testing.T) {
	ca := testocsp.New(t)
	both := testocsp.IssueOptions{OCSPURL: ca.OCSPURL(), CRLURL: ca.CRLURL()}
	good := ca.Issue(t, "good", both)
	revoked := ca.Issue(t, "revoked", both)
	crlGood := ca.Issue(t, "crl-good", testocsp.IssueOptions{CRLURL: ca.CRLURL()})
	crlRevoked := ca.Issue(t, "crl-revoked", testocsp.IssueOptions{CRLURL: ca.CRLURL()})
	stapled := ca.Issue(t, "stapled", testocsp.IssueOptions{})
	ca.Revoke(t, revoked, "keyCompromise")
	ca.Revoke(t, crlRevoked, "superseded")
	ca.Revoke(t, stapled, "cessationOfOperation")
	ca.GenCRL(t)
	ca.StartResponder(t)
	staple := ca.Staple(t, stapled)

	c := secrets.NewRevocationChecker(secrets.RevocationOptions{})
	state := func(leaf *testocsp.Cert, staple []byte) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf.Cert, ca.Cert}}, OCSPResponse: staple}
	}
	check := func(leaf *testocsp.Cert, staple []byte) error {
		return c.VerifyConnection("p", secrets.RevocationRequire)(state(leaf, staple))
	}
	if err := check(good, nil); err != nil {
		t.Errorf("good: %v", err)
	}
	for _, tc := range []struct {
		cert           *testocsp.Cert
		staple         []byte
		source, reason string
	}{
		{revoked, nil, "OCSP responder " + ca.OCSPURL(), "keyCompromise"},
		{crlRevoked, nil, "CRL " + ca.CRLURL(), "superseded"},
		{stapled, staple, "the stapled OCSP response", "cessationOfOperation"},
	} {
		je := wantCode(t, check(tc.cert, tc.staple), jobs.CodeServerCertRevoked)
		for _, s := range []string{"is revoked", tc.source, tc.reason, "CN=" + tc.cert.Name, tc.cert.SerialHex()} {
			if !strings.Contains(je.Message, s) {
				t.Errorf("%s: message %q does not name %q", tc.cert.Name, je.Message, s)
			}
		}
	}
	if err := check(crlGood, nil); err != nil {
		t.Errorf("crl-good: %v", err)
	}
	// Cached: asking again fetches nothing.
	_ = check(good, nil)
	_ = check(revoked, nil)
	_ = check(crlGood, nil)
	if n := ca.TotalOCSPRequests(); n != 2 {
		t.Errorf("OCSP requests = %d, want 2 (good and revoked, once each)", n)
	}
	if n := ca.CRLRequests(); n != 1 {
		t.Errorf("CRL requests = %d, want 1", n)
	}
}

// TestRevocationResolverHandshake checks the hook the Resolver installs, in
// a real TLS handshake: a partner stapling a revoked response fails it with
// server_cert_revoked, through crypto/tls and net/http.
func TestRevocationResolverHandshake(t *testing.T) {
	p := newRevPKI(t, false, false)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, p.ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(pemCert(t, "ca.pem"))
	start := func(staple []byte) string {
		srv, err := partner.Start(partner.Options{Certificate: p.leaf.TLSCertificate(), ClientCAs: clientCAs, OCSPStaple: staple})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv.URL()
	}
	revokedURL := start(p.ocspResp(t, ocsp.Revoked))
	goodURL := start(p.ocspResp(t, ocsp.Good))
	noStapleURL := start(nil)

	r := secrets.NewResolver(secrets.DefaultSources(""))
	get := func(profile secrets.Profile, url string) error {
		m, err := r.Resolve(context.Background(), "partner-a-"+profile.Revocation, profile)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: m.Config.Clone(), ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(url + "/echo")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	base := secrets.Profile{Keystore: "file:" + fixturePath(t, "client.pem"), Truststore: "file:" + caFile}
	for _, mode := range []string{secrets.RevocationPrefer, secrets.RevocationRequire} {
		prof := base
		prof.Revocation = mode
		err := get(prof, revokedURL)
		je := wantCode(t, err, jobs.CodeServerCertRevoked)
		if !strings.Contains(je.Message, "the stapled OCSP response") {
			t.Errorf("%s: message %q", mode, je.Message)
		}
		var tlsAlert tls.AlertError
		if errors.As(err, &tlsAlert) {
			t.Errorf("%s: error is a received alert, not the client's own verdict: %v", mode, err)
		}
		if err := get(prof, goodURL); err != nil {
			t.Errorf("%s, good staple: %v", mode, err)
		}
	}
	for _, mode := range []string{"", secrets.RevocationOff} {
		prof := base
		prof.Revocation = mode
		if err := get(prof, revokedURL); err != nil {
			t.Errorf("revocation %q checked the staple: %v", mode, err)
		}
	}
	prof := base
	prof.Revocation = secrets.RevocationRequire
	wantUnavailable(t, get(prof, noStapleURL), "names no OCSP responder")
	prof.Revocation = secrets.RevocationPrefer
	if err := get(prof, noStapleURL); err != nil {
		t.Errorf("prefer without any source: %v", err)
	}
}
