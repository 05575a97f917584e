package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// ProbeStep is one check of a connection test, in plain words.
type ProbeStep struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// ProbeReport is what `mtlsrelay test CONNECTION` found, step by step.
type ProbeReport struct {
	Connection string      `json:"connection"`
	BaseURL    string      `json:"base_url,omitempty"`
	Profile    string      `json:"profile,omitempty"`
	Steps      []ProbeStep `json:"steps"`
	// Accepted is true when the partner answered an HTTP request made with
	// the client certificate (any status: the certificate was accepted).
	Accepted bool `json:"accepted"`
	// Status is the HTTP status of the test request, 0 when none came.
	Status int `json:"status,omitempty"`
	// Error is the first failure, with its stable code.
	Error *jobs.Error `json:"error,omitempty"`
}

func (r *ProbeReport) step(name string, ok bool, format string, args ...any) {
	r.Steps = append(r.Steps, ProbeStep{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

func (r *ProbeReport) fail(name string, err error) *ProbeReport {
	r.Error = jobs.AsError(err)
	r.step(name, false, "%s: %s", r.Error.Code, r.Error.Message)
	return r
}

// Probe checks connection name end to end, as the enterprise tool's "Test
// connection" does: the connection and its profile, the keystore and its
// certificate's validity, a TLS handshake (version, server chain), and a GET
// of the base URL that shows whether the partner accepts the client
// certificate (with TLS 1.3 a refusal only shows once a request is made).
func Probe(ctx context.Context, cat *catalog.Catalog, resolver *secrets.Resolver, name string) *ProbeReport {
	r := &ProbeReport{Connection: name}
	conn, prof, err := cat.Lookup(name)
	if err != nil {
		return r.fail("connection", err)
	}
	r.BaseURL, r.Profile = conn.BaseURL, conn.Profile
	r.step("connection", true, "%s -> %s with profile %s", name, conn.BaseURL, conn.Profile)

	mat, err := resolver.Resolve(ctx, conn.Profile, *prof)
	if err != nil {
		return r.fail("keystore", err)
	}
	leaf := mat.Leaf
	r.step("keystore", true, "client certificate %s, issued by %s, serial %s, valid until %s (%d days left)",
		leaf.Subject, leaf.Issuer, secrets.SerialHex(leaf), leaf.NotAfter.UTC().Format(time.RFC3339),
		int(time.Until(leaf.NotAfter).Hours()/24))

	u, _ := url.Parse(conn.BaseURL)
	host := outbound.HostPort(u)
	cfg := mat.Config.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: conn.AttemptTimeout(nil)}, Config: cfg}
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return r.fail("tls", outbound.ClassifyError(err, outbound.Target{Host: host, Profile: conn.Profile, SystemRoots: cfg.RootCAs == nil, Phase: outbound.PhaseTLS, FreshConn: true}))
	}
	tc := raw.(*tls.Conn)
	st := tc.ConnectionState()
	tc.Close()
	r.step("tls", true, "%s with %s, ALPN %q", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.NegotiatedProtocol)
	for i, c := range st.PeerCertificates {
		r.step("server chain", true, "[%d] %s, issued by %s, valid until %s", i, c.Subject, c.Issuer, c.NotAfter.UTC().Format(time.DateOnly))
	}

	x := outbound.NewExecutor(outbound.ExecutorOptions{MaxIdleConnsPerHost: 1})
	defer x.Close()
	out := x.Attempt(ctx, &jobs.Call{ID: "mtlsrelay-test", Connection: name, Method: "GET"}, conn, mat)
	if out.Result.Error != nil {
		return r.fail("client certificate", out.Result.Error)
	}
	r.Accepted, r.Status = true, out.Result.Status
	r.step("client certificate", true, "accepted: GET %s answered HTTP %d", conn.BaseURL, out.Result.Status)
	return r
}
