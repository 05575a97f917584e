package integration

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/testocsp"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// revocationProfiles are the profiles of the revocation tests: the same
// keystore and truststore (the OpenSSL CA), each with its revocation mode.
// require-b exists to show that the cache is shared across profiles.
var revocationProfiles = map[string]string{
	"off":       "",
	"prefer":    "revocation: prefer",
	"require":   "revocation: require",
	"require-b": "revocation: require",
}

// revocationEnv is an OpenSSL CA with an OCSP responder and a CRL, a
// partner per server certificate, and a worker whose connections call each
// partner with each profile ("<partner>-<profile>").
type revocationEnv struct {
	ca       *testocsp.CA
	certs    map[string]*testocsp.Cert
	partners map[string]*partner.Server
	env      *relayEnv
}

func newRevocationEnv(t *testing.T) *revocationEnv {
	t.Helper()
	ca := testocsp.New(t)
	both := testocsp.IssueOptions{OCSPURL: ca.OCSPURL(), CRLURL: ca.CRLURL()}
	down := testocsp.IssueOptions{OCSPURL: testocsp.ClosedURL(t, "/ocsp"), CRLURL: testocsp.ClosedURL(t, "/crl.der")}
	e := &revocationEnv{ca: ca, certs: map[string]*testocsp.Cert{}, partners: map[string]*partner.Server{}}
	for name, opts := range map[string]testocsp.IssueOptions{
		"good":            both,                                         // good: the responder says so
		"revoked":         both,                                         // revoked: the responder decides first
		"crl-revoked":     {CRLURL: ca.CRLURL()},                        // revoked: only a CRL names it
		"stapled-revoked": {},                                           // revoked: only the staple says so
		"stapled-good":    {},                                           // good: only the staple says so
		"down":            down,                                         // responder and CRL server down
		"cached":          {OCSPURL: ca.OCSPURL()},                      // good, for counting requests
		"no-source":       {},                                           // nothing to ask, no staple
		"revoked-off":     {OCSPURL: ca.OCSPURL(), CRLURL: ca.CRLURL()}, // revoked, called with revocation off
	} {
		e.certs[name] = ca.Issue(t, name, opts)
	}
	ca.Revoke(t, e.certs["revoked"], "keyCompromise")
	ca.Revoke(t, e.certs["crl-revoked"], "superseded")
	ca.Revoke(t, e.certs["stapled-revoked"], "cessationOfOperation")
	ca.Revoke(t, e.certs["revoked-off"], "keyCompromise")
	ca.GenCRL(t)
	ca.StartResponder(t)
	staples := map[string][]byte{
		"stapled-revoked": ca.Staple(t, e.certs["stapled-revoked"]),
		"stapled-good":    ca.Staple(t, e.certs["stapled-good"]),
	}

	var names []string
	for name, cert := range e.certs {
		names = append(names, name)
		p, err := partner.Start(partner.Options{
			Certificate: cert.TLSCertificate(t),
			ClientCAs:   poolFromPEM("ca.pem"),
			OCSPStaple:  staples[name],
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.partners[name] = p
	}
	sort.Strings(names)

	var cfg strings.Builder
	cfg.WriteString("worker: {concurrency: 4, admin_addr: \"off\", retry_base: 20ms, retry_max: 200ms, ack_wait: 5s}\n")
	cfg.WriteString("log: {level: debug, format: json}\nprofiles:\n")
	for _, prof := range []string{"off", "prefer", "require", "require-b"} {
		extra := ""
		if r := revocationProfiles[prof]; r != "" {
			extra = ", " + r
		}
		fmt.Fprintf(&cfg, "  %s: {keystore: \"file:FIX/client-openssl.p12\", password: \"value:fixture-pass-123\", truststore: \"file:%s\"%s}\n", prof, ca.CertFile, extra)
	}
	cfg.WriteString("connections:\n")
	for _, name := range names {
		for _, prof := range []string{"off", "prefer", "require", "require-b"} {
			fmt.Fprintf(&cfg, "  %s-%s: {base_url: \"https://localhost:%s/\", profile: %s, max_attempts: 3}\n", name, prof, port(e.partners[name].URL()), prof)
		}
	}

	srv := startNATS(t)
	_, logs := startWorker(t, srv.ClientURL(), configYAML(t, cfg.String()))
	nc, js := connect(t, srv.ClientURL())
	e.env = &relayEnv{nc: nc, js: js, logs: logs, natsURL: srv.ClientURL()}
	return e
}

// call calls partner name's /echo through connection name-profile.
func (e *revocationEnv) call(t *testing.T, name, profile string) *jobs.Result {
	t.Helper()
	return call(t, e.env.nc, e.env.js, name+"-"+profile, map[string]any{"path": "echo"})
}

// wantOK checks a successful call.
func wantOK(t *testing.T, r *jobs.Result) {
	t.Helper()
	if !r.OK || r.Status != 200 || r.Error != nil {
		t.Fatalf("result: ok=%v status=%d error=%+v; want 200", r.OK, r.Status, r.Error)
	}
}

// wantRevokedResult checks a server_cert_revoked result, made at the first
// attempt and not retried, whose message says all of want.
func wantRevokedResult(t *testing.T, r *jobs.Result, want ...string) {
	t.Helper()
	if r.OK || r.Error == nil || r.Error.Code != jobs.CodeServerCertRevoked {
		t.Fatalf("result: ok=%v status=%d error=%+v; want %s", r.OK, r.Status, r.Error, jobs.CodeServerCertRevoked)
	}
	t.Logf("message: %s", r.Error.Message)
	if r.Error.Retryable || r.Attempt != 1 {
		t.Errorf("retryable=%v attempt=%d; want a failure that is not retried", r.Error.Retryable, r.Attempt)
	}
	for _, s := range want {
		if !strings.Contains(r.Error.Message, s) {
			t.Errorf("message %q does not say %q", r.Error.Message, s)
		}
	}
	if strings.Contains(r.Error.Message, fixturePassword) {
		t.Errorf("message holds the keystore password: %s", r.Error.Message)
	}
}

// TestRevocation runs calls through a worker, configured by YAML, to
// partners whose certificates OpenSSL issued, revoked, answered for
// (openssl ocsp), listed in a CRL (openssl ca -gencrl) and stapled.
func TestRevocation(t *testing.T) {
	e := newRevocationEnv(t)
	ca := e.ca
	// First, before any other call can warm the cache: two calls on two
	// connections of two profiles (two pools, two full handshakes), one
	// OCSP request.
	t.Run("ok/answers-cached-across-calls-and-profiles", func(t *testing.T) {
		before := e.partners["cached"].Requests().Handshakes
		wantOK(t, e.call(t, "cached", "require"))
		wantOK(t, e.call(t, "cached", "require-b"))
		wantOK(t, e.call(t, "cached", "prefer"))
		if hs := e.partners["cached"].Requests().Handshakes - before; hs < 3 {
			t.Fatalf("the partner saw %d handshakes, want 3 (one per connection)", hs)
		}
		if n := ca.OCSPRequests(e.certs["cached"]); n != 1 {
			t.Fatalf("the responder got %d OCSP requests for three handshakes, want 1", n)
		}
	})
	for _, mode := range []string{"prefer", "require"} {
		t.Run("ok/good/"+mode, func(t *testing.T) {
			wantOK(t, e.call(t, "good", mode))
		})
		t.Run("fail/revoked-by-responder/"+mode, func(t *testing.T) {
			c := e.certs["revoked"]
			wantRevokedResult(t, e.call(t, "revoked", mode),
				"is revoked", "keyCompromise", "according to OCSP responder "+ca.OCSPURL(),
				`subject "CN=revoked"`, "serial "+c.SerialHex(), "of localhost")
		})
		t.Run("fail/revoked-by-crl/"+mode, func(t *testing.T) {
			c := e.certs["crl-revoked"]
			wantRevokedResult(t, e.call(t, "crl-revoked", mode),
				"is revoked", "superseded", "according to CRL "+ca.CRLURL(), `subject "CN=crl-revoked"`, "serial "+c.SerialHex())
		})
		t.Run("fail/revoked-by-staple/"+mode, func(t *testing.T) {
			wantRevokedResult(t, e.call(t, "stapled-revoked", mode),
				"is revoked", "cessationOfOperation", "according to the stapled OCSP response", `subject "CN=stapled-revoked"`)
		})
	}
	t.Run("ok/revoked-responses-cached-across-profiles", func(t *testing.T) {
		if n := ca.OCSPRequests(e.certs["revoked"]); n != 1 {
			t.Errorf("OCSP requests for the revoked certificate = %d after prefer and require, want 1", n)
		}
		if n := ca.CRLRequests(); n != 1 {
			t.Errorf("CRL requests = %d, want 1", n)
		}
	})
	t.Run("ok/good-staple-alone/require", func(t *testing.T) {
		wantOK(t, e.call(t, "stapled-good", "require"))
	})
	t.Run("ok/off-does-not-check", func(t *testing.T) {
		before := ca.TotalOCSPRequests()
		wantOK(t, e.call(t, "revoked-off", "off"))
		wantOK(t, e.call(t, "stapled-revoked", "off"))
		if n := ca.TotalOCSPRequests() - before; n != 0 {
			t.Errorf("revocation off still asked the responder %d times", n)
		}
	})
	t.Run("ok/responder-down/prefer", func(t *testing.T) {
		wantOK(t, e.call(t, "down", "prefer"))
	})
	t.Run("fail/responder-down/require", func(t *testing.T) {
		c := e.certs["down"]
		wantRevokedResult(t, e.call(t, "down", "require"),
			"the revocation status of the server certificate of localhost", "could not be had",
			"OCSP responder "+c.Cert.OCSPServer[0], "CRL "+c.Cert.CRLDistributionPoints[0], "connection refused",
			`profile "require" has revocation: require`, "set revocation: prefer")
	})
	t.Run("ok/no-source/prefer", func(t *testing.T) {
		wantOK(t, e.call(t, "no-source", "prefer"))
	})
	t.Run("fail/no-source/require", func(t *testing.T) {
		wantRevokedResult(t, e.call(t, "no-source", "require"),
			"could not be had", "names no OCSP responder and no CRL distribution point")
	})
}
