package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
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
	// Status is the HTTP status of the test request, 0 when none came: the
	// request with the connection's credentials when it has auth.
	Status int `json:"status,omitempty"`
	// Error is the first failure, with its stable code.
	Error *jobs.Error `json:"error,omitempty"`
	// Proxy is the egress proxy the connection goes through (its name,
	// host:port and user, never its password), absent when it goes
	// directly to the partner.
	Proxy *outbound.ProxyInfo `json:"proxy,omitempty"`
}

func (r *ProbeReport) step(name string, ok bool, format string, args ...any) {
	r.Steps = append(r.Steps, ProbeStep{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

func (r *ProbeReport) fail(name string, err error) *ProbeReport {
	r.Error = jobs.AsError(err)
	r.step(name, false, "%s: %s", r.Error.Code, r.Error.Message)
	return r
}

// ExecutorOptions returns the options of the executor with which a worker
// configured by cfg makes its calls, reading secrets (connection auth,
// proxy passwords) through resolver: its egress proxies and default proxy.
// The worker adds its large-body store; Probe takes them as they are, so
// that `mtlsrelay test` reaches a partner as the worker does.
func ExecutorOptions(cfg *Config, resolver *secrets.Resolver) outbound.ExecutorOptions {
	return outbound.ExecutorOptions{
		MaxIdleConnsPerHost: cfg.Worker.Concurrency,
		Secrets:             resolver.Secret,
		Proxies:             cfg.Proxies,
		DefaultProxy:        cfg.Worker.Proxy,
	}
}

// Probe checks connection name end to end, as the enterprise tool's "Test
// connection" does, with an executor made from opts (ExecutorOptions: the
// worker's), so that it goes where a call goes and as a call goes:
//
//   - connection: the connection and its profile;
//   - keystore: the client certificate and its validity;
//   - proxy: the route, direct or through the connection's proxy (else
//     worker.proxy), whose CONNECT tunnel to the partner is opened with the
//     proxy's credentials; the step names the proxy and its user, never
//     the password;
//   - tls and server chain: a TLS handshake with the partner over that
//     route (version, cipher suite, ALPN, the server's chain);
//   - client certificate: a GET of the base URL without the connection's
//     credentials, which shows whether the partner accepts the client
//     certificate (with TLS 1.3 a refusal only shows once a request is
//     made); any status is an acceptance, a 401 included;
//   - for a connection with auth, token (oauth2: endpoint, client
//     authentication, scopes, expiry, never the token) and credentials: a
//     GET of the base URL with the credentials, as a call sends them; a 401
//     fails it (auth_failed).
//
// It stops at the first failure, which is the report's Error. When
// opts.Secrets is nil, secrets are read through resolver.
func Probe(ctx context.Context, cat *catalog.Catalog, resolver *secrets.Resolver, opts outbound.ExecutorOptions, name string) *ProbeReport {
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

	if opts.Secrets == nil {
		opts.Secrets = resolver.Secret
	}
	x := outbound.NewExecutor(opts)
	defer x.Close()

	d, err := x.DialTLS(ctx, name, conn, mat)
	switch {
	case d.Target == "":
		// base_url cannot be dialed: there is no route to speak of.
		return r.fail("tls", err)
	case d.Proxy == nil:
		r.step("proxy", true, "none: %s", describeDirect(conn, opts, d.Target))
	case !d.Tunnel:
		r.Proxy = d.Proxy
		return r.fail("proxy", err)
	default:
		r.Proxy = d.Proxy
		r.step("proxy", true, "%s: the CONNECT to %s opened a tunnel", describeProxy(conn, d.Proxy), d.Target)
	}
	if err != nil {
		return r.fail("tls", err)
	}
	st := d.State
	via := ""
	if d.Proxy != nil {
		via = ", through the tunnel of " + d.Proxy.String()
	}
	r.step("tls", true, "%s with %s, ALPN %q%s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.NegotiatedProtocol, via)
	for i, c := range st.PeerCertificates {
		r.step("server chain", true, "[%d] %s, issued by %s, valid until %s", i, c.Subject, c.Issuer, c.NotAfter.UTC().Format(time.DateOnly))
	}

	// The client certificate alone: the request without the credentials.
	bare := *conn
	bare.Auth = nil
	out := x.Attempt(ctx, probeCall(name), &bare, mat)
	if out.Result.Error != nil {
		return r.fail("client certificate", out.Result.Error)
	}
	r.Accepted, r.Status = true, out.Result.Status
	r.step("client certificate", true, "accepted: GET %s answered HTTP %d", conn.BaseURL, out.Result.Status)
	if conn.Auth == nil {
		return r
	}

	// The credentials, as a call sends them.
	a := conn.Auth
	var what string
	if a.Type == catalog.AuthOAuth2 {
		info, err := x.Token(ctx, name, conn, mat)
		if err != nil {
			return r.fail("token", err)
		}
		r.step("token", true, "%s", describeToken(info))
		what = "the token"
	} else {
		what = describeStaticAuth(a)
	}
	out = x.Attempt(ctx, probeCall(name), conn, mat)
	switch {
	case out.Result.Error != nil:
		return r.fail("credentials", out.Result.Error)
	case out.Result.Status == http.StatusUnauthorized:
		return r.fail("credentials", jobs.Errorf(jobs.CodeAuthFailed,
			"GET %s with %s answered HTTP 401: the partner does not accept the credentials; check them with the partner", conn.BaseURL, what))
	}
	r.Status = out.Result.Status
	r.step("credentials", true, "GET %s with %s answered HTTP %d", conn.BaseURL, what, out.Result.Status)
	return r
}

// probeCall is the test request: a GET of the connection's base URL.
func probeCall(conn string) *jobs.Call {
	return &jobs.Call{ID: "mtlsrelay-test", Connection: conn, Method: http.MethodGet}
}

// describeDirect says why a connection goes directly to its partner.
func describeDirect(conn *catalog.Connection, opts outbound.ExecutorOptions, target string) string {
	if conn.Proxy == catalog.ProxyNone && opts.DefaultProxy != "" && opts.DefaultProxy != catalog.ProxyNone {
		return fmt.Sprintf("direct to %s (the connection's proxy is none; the worker's default proxy %s is not used)", target, opts.DefaultProxy)
	}
	return fmt.Sprintf("direct to %s", target)
}

// describeProxy names the proxy a connection goes through, where that
// choice comes from, and its user, never its password.
func describeProxy(conn *catalog.Connection, p *outbound.ProxyInfo) string {
	var b strings.Builder
	b.WriteString(p.String())
	if p.TLS {
		b.WriteString(" over TLS")
	}
	if conn.Proxy == "" {
		b.WriteString(", the worker's default proxy (worker.proxy)")
	} else {
		b.WriteString(", the connection's proxy")
	}
	if p.Username != "" {
		fmt.Fprintf(&b, ", basic authentication as user %q", p.Username)
	} else {
		b.WriteString(", no proxy authentication")
	}
	return b.String()
}

// describeToken says what a token step found, never the token.
func describeToken(t *outbound.TokenInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "from %s for client %q, client_auth %s", t.TokenURL, t.ClientID, t.ClientAuth)
	if t.KeyID != "" {
		fmt.Fprintf(&b, " (kid %s)", t.KeyID)
	}
	switch {
	case t.GrantedNamed && t.Granted == "":
		b.WriteString(", no scopes granted")
	case t.GrantedNamed:
		fmt.Fprintf(&b, ", scopes granted %q", t.Granted)
	case t.Granted != "":
		fmt.Fprintf(&b, ", scopes %q (as requested; the answer named none)", t.Granted)
	}
	if t.Expiry.IsZero() {
		fmt.Fprintf(&b, ", %s token without expiry (renewed at %s)", t.TokenType, t.RenewAt.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, ", %s token valid until %s (%s), renewed at %s", t.TokenType, t.Expiry.UTC().Format(time.RFC3339),
			t.Expiry.Sub(t.Obtained).Round(time.Second), t.RenewAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// describeStaticAuth names the credentials of a basic, bearer or header
// auth, never their value.
func describeStaticAuth(a *catalog.Auth) string {
	switch a.Type {
	case catalog.AuthBasic:
		return fmt.Sprintf("basic credentials of user %q (password %s)", a.Username, secrets.RedactRef(a.Password))
	case catalog.AuthBearer:
		return fmt.Sprintf("the bearer token %s", secrets.RedactRef(a.Token))
	case catalog.AuthHeader:
		return fmt.Sprintf("header %s from %s", a.Name, secrets.RedactRef(a.Value))
	}
	return a.Type
}
