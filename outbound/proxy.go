package outbound

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/netfail"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Egress through a proxy (docs/PROXIES.md).
//
// A connection reaches its partner directly or through one named proxy of
// ExecutorOptions.Proxies: its own proxy, else ExecutorOptions.DefaultProxy;
// "none" (or nothing at all) is direct. Through a proxy, the transport opens
// an HTTP CONNECT tunnel to the partner's host:port and runs the mutual TLS
// handshake with the partner inside it: the proxy sees the partner's name and
// port, never the request, and never the client certificate.
//
// Each route has its own transports (transportCache keys them by connection,
// profile and route), so a connection made through one proxy never serves a
// call meant for another proxy, or for a direct connection.
//
// What the egress policy does through a proxy: allow_hosts is checked before
// anything is dialed, as for direct calls (Connection.RequestURL). The block
// list of restricted addresses (egress.go) cannot apply to the partner: the
// proxy resolves its name. It does not apply to the proxy either: the proxy
// is the worker's own setting, and corporate proxies live on private
// addresses.
//
// The proxy's password is a secret reference read through
// ExecutorOptions.Secrets each time a connection to the proxy is made, so a
// rotated password is used from the next connection on; connections already
// open keep their tunnel. It goes into the CONNECT's Proxy-Authorization
// header and nowhere else: errors name the proxy by its name and host:port,
// never by its credentials.

// proxyRoute is how the transports of one route reach their partners:
// through the proxy it names. A nil *proxyRoute is the direct route.
type proxyRoute struct {
	// name is the key of ExecutorOptions.Proxies.
	name string
	// host is the proxy's host:port, for dialing and for messages.
	host string
	// connectURL is what the transport's Proxy returns: http://host always.
	// For an https proxy the route's dialer makes the TLS connection to the
	// proxy itself (see dial), so the transport sends its CONNECT over it as
	// over any connection, and the transport's TLS settings, the profile's
	// client certificate and truststore, never apply to the proxy.
	connectURL *url.URL
	// tls is the TLS configuration of an https proxy (system roots, the
	// proxy's host name, no client certificate), nil for an http proxy.
	tls *tls.Config
	// username and password (a secret reference) are the basic proxy
	// authentication, when username is set.
	username, password string
	// err, when set, is the failure of every call on the route: a proxy
	// name the worker does not define, or a proxy URL it cannot use.
	err *jobs.Error
}

// proxyRoutes are the routes of an executor's proxies, built once from its
// options.
type proxyRoutes struct {
	byName       map[string]*proxyRoute
	defaultProxy string
}

func newProxyRoutes(o ExecutorOptions) *proxyRoutes {
	rs := &proxyRoutes{byName: make(map[string]*proxyRoute, len(o.Proxies)), defaultProxy: o.DefaultProxy}
	for name, p := range o.Proxies {
		rs.byName[name] = newProxyRoute(name, p)
	}
	return rs
}

// newProxyRoute returns the route through proxy p, named name. A URL it
// cannot use makes a route whose calls fail; the worker's config
// validation refuses such URLs before it gets here.
func newProxyRoute(name string, p catalog.Proxy) *proxyRoute {
	r := &proxyRoute{name: name, username: p.Username, password: p.Password}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		// The URL is not echoed: it may hold credentials.
		r.err = jobs.Errorf(jobs.CodeConnectFailed,
			"proxies.%s.url is not http://host:port or https://host:port without credentials; fix the worker's config", name).WithRetryable(false)
		return r
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	r.host = net.JoinHostPort(u.Hostname(), port)
	r.connectURL = &url.URL{Scheme: "http", Host: r.host}
	if u.Scheme == "https" {
		r.tls = &tls.Config{
			ServerName: u.Hostname(),
			MinVersion: tls.VersionTLS12,
			// The CONNECT is HTTP/1.1; the partner's own TLS, inside the
			// tunnel, negotiates HTTP/2 if both sides offer it.
			NextProtos: []string{"http/1.1"},
			// RootCAs nil: the system roots, which honour SSL_CERT_FILE
			// and SSL_CERT_DIR (docs/PROXIES.md, a private CA).
		}
	}
	return r
}

// route returns the key and the route of a connection, named conn, whose
// proxy setting is choice (catalog.Connection.Proxy): "" for the default
// proxy, "none" for direct, else a proxy's name. The key is "" for the
// direct route, else the proxy's name.
func (rs *proxyRoutes) route(conn, choice string) (string, *proxyRoute) {
	name := choice
	if name == "" {
		name = rs.defaultProxy
	}
	if name == "" || name == catalog.ProxyNone {
		return "", nil
	}
	if r, ok := rs.byName[name]; ok {
		return name, r
	}
	what := "connection " + conn + "'s proxy"
	if choice == "" {
		what = "the worker's default proxy (worker.proxy)"
	}
	return name, &proxyRoute{name: name, err: jobs.Errorf(jobs.CodeConnectFailed,
		"%s is %q, which is not a proxy of this worker (proxies:); define it, or set the connection's proxy to another proxy or to none", what, name).WithRetryable(false)}
}

// describe names the proxy in messages: its name and host:port.
func (r *proxyRoute) describe() string {
	if r.host == "" {
		return "proxy " + r.name
	}
	return "proxy " + r.name + " (" + r.host + ")"
}

// configure makes tr reach partners through r. d dials the proxy; the
// egress policy's address checks do not apply to it (see the top of this
// file). userAgent is sent with the CONNECT.
func (r *proxyRoute) configure(tr *http.Transport, d *net.Dialer, handshakeTimeout time.Duration, userAgent string, readSecret func(ctx context.Context, ref string) ([]byte, error)) {
	tr.Proxy = func(*http.Request) (*url.URL, error) {
		if r.err != nil {
			return nil, r.err
		}
		return r.connectURL, nil
	}
	tr.DialContext = r.dial(d, handshakeTimeout)
	tr.GetProxyConnectHeader = func(ctx context.Context, _ *url.URL, target string) (http.Header, error) {
		h := make(http.Header, 2)
		if userAgent != "" {
			h.Set("User-Agent", userAgent)
		}
		if r.username != "" {
			v, err := r.authorization(ctx, readSecret)
			if err != nil {
				return nil, err
			}
			h.Set("Proxy-Authorization", v)
		}
		return h, nil
	}
	tr.OnProxyConnectResponse = func(_ context.Context, _ *url.URL, req *http.Request, resp *http.Response) error {
		return r.connectResult(req.Host, resp.StatusCode)
	}
}

// authorization returns the Proxy-Authorization value: basic, with the
// password read now from its reference.
func (r *proxyRoute) authorization(ctx context.Context, readSecret func(ctx context.Context, ref string) ([]byte, error)) (string, error) {
	field := "proxies." + r.name + ".password"
	if readSecret == nil {
		return "", jobs.Errorf(jobs.CodeInternal,
			"%s has a password, but this executor has no secret reader (ExecutorOptions.Secrets); see the worker log", r.describe())
	}
	password, err := readSecret(ctx, r.password)
	if err != nil {
		je := jobs.AsError(err)
		return "", jobs.Wrap(err, je.Code, "%s (%s): %s", field, secrets.RedactRef(r.password), je.Message).WithRetryable(je.Retryable)
	}
	defer clear(password)
	if len(password) == 0 {
		return "", jobs.Errorf(jobs.CodeSecretUnavailable,
			"%s (%s) is empty; put the proxy's password there", field, secrets.RedactRef(r.password)).WithRetryable(false)
	}
	cred := make([]byte, 0, len(r.username)+1+len(password))
	cred = append(append(append(cred, r.username...), ':'), password...)
	defer clear(cred)
	return "Basic " + base64.StdEncoding.EncodeToString(cred), nil
}

// connectResult turns the proxy's answer to the CONNECT to target into the
// call's failure, nil for 200: 403 and 407 are proxy_refused (another
// attempt gets the same answer); any other status is connect_failed
// (retryable: a proxy that could not reach the partner may next time).
func (r *proxyRoute) connectResult(target string, status int) error {
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusProxyAuthRequired:
		hint := "proxies." + r.name + " has no username and password: add them"
		if r.username != "" {
			hint = "it refused the credentials of proxies." + r.name + ": check its username and the password its reference holds with the proxy's administrators"
		}
		return jobs.Errorf(jobs.CodeProxyRefused,
			"%s asked for authentication (407 Proxy Authentication Required) for the CONNECT to %s; %s", r.describe(), target, hint)
	case http.StatusForbidden:
		return jobs.Errorf(jobs.CodeProxyRefused,
			"%s refused the CONNECT to %s (403 Forbidden): its rules do not let this worker reach that host and port; ask the proxy's administrators to allow it, or set the connection's proxy to another proxy or to none",
			r.describe(), target)
	}
	return jobs.Errorf(jobs.CodeConnectFailed,
		"%s could not open a tunnel to %s: it answered the CONNECT with %d %s; check that the partner is up and that the proxy can reach it",
		r.describe(), target, status, http.StatusText(status))
}

// dial returns the transport's DialContext of the route: it connects to
// the proxy, over TLS for an https proxy. Its failures name the proxy,
// never the partner (whose address the worker never dials).
func (r *proxyRoute) dial(d *net.Dialer, handshakeTimeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		// addr is the proxy's: with a proxy, the transport dials nothing else.
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, r.dialFailed(err)
		}
		pc := &proxyConn{Conn: c, route: r}
		if r.tls == nil {
			return pc, nil
		}
		tc := tls.Client(pc, r.tls)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, r.tlsFailed(err)
		}
		return tc, nil
	}
}

// dialFailed describes a failure to connect to the proxy: connect_failed,
// but for a canceled call, which stays what it is.
func (r *proxyRoute) dialFailed(err error) error {
	f := netfail.Classify(err)
	what := "could not be reached"
	switch f.Kind {
	case netfail.Canceled:
		return err
	case netfail.Timeout:
		what = "did not accept the connection in time"
	case netfail.DNS:
		what = "has a host name that did not resolve"
	case netfail.Refused:
		what = "refused the connection"
	case netfail.Unreachable:
		what = "is unreachable from this worker"
	}
	return jobs.Wrap(err, jobs.CodeConnectFailed,
		"could not connect to %s: it %s; check proxies.%s.url and that the proxy is up and reachable from the worker",
		r.describe(), what, r.name)
}

// tlsFailed describes a failed TLS handshake with an https proxy.
func (r *proxyRoute) tlsFailed(err error) error {
	var je *jobs.Error
	if errors.As(err, &je) {
		return je // the proxy closed the connection (proxyConn)
	}
	switch netfail.Classify(err).Kind {
	case netfail.Canceled:
		return err
	case netfail.Untrusted, netfail.NameMismatch:
		return jobs.Wrap(err, jobs.CodeTLSHandshakeFailed,
			"the certificate of %s does not verify against the worker's system roots for that name; add the proxy's CA to the system's trust store (docs/PROXIES.md)", r.describe())
	case netfail.Alert, netfail.NotTLS, netfail.LocalTLS:
		return jobs.Wrap(err, jobs.CodeTLSHandshakeFailed,
			"the TLS handshake with %s failed; check that it speaks TLS on that port (else write its url with http://)", r.describe())
	}
	return jobs.Wrap(err, jobs.CodeConnectFailed,
		"the TLS handshake with %s did not complete; check that the proxy is up and reachable from the worker", r.describe())
}

// proxyConn is a connection to a proxy. Until the proxy has sent a byte,
// the connection closing is the proxy's doing, and its error says so: the
// transport would report it as the partner closing the connection.
type proxyConn struct {
	net.Conn
	route *proxyRoute
	heard atomic.Bool
}

func (c *proxyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.heard.Store(true)
	} else if err != nil && !c.heard.Load() && netfail.Classify(err).Kind == netfail.Closed {
		return n, jobs.Wrap(err, jobs.CodeConnectFailed,
			"%s closed the connection before answering the CONNECT; check the proxy's logs", c.route.describe())
	}
	return n, err
}
