package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// A TLS handshake with a connection's partner on its own, for `mtlsrelay
// test` (worker.Probe): it shows the TLS version, the cipher suite and the
// server's chain even when the partner then refuses the client certificate
// (with TLS 1.3 only a request shows that). It is made as a call's
// connection is made: through the connection's proxy (proxy.go) when it
// has one, with the same CONNECT, headers and proxy credentials, else
// directly with the egress policy's address checks (egress.go).

// ProxyInfo names the proxy a connection goes through, never its
// credentials: `mtlsrelay test` reports it.
type ProxyInfo struct {
	// Name is the proxy's key in ExecutorOptions.Proxies (the worker's
	// proxies:), "" for a proxy chosen by ExecutorOptions.Proxy.
	Name string `json:"name,omitempty"`
	// Host is the proxy's host:port, "" when its URL cannot be used.
	Host string `json:"host,omitempty"`
	// TLS is true for an https:// proxy.
	TLS bool `json:"tls,omitempty"`
	// Username is the user of basic proxy authentication, "" for none.
	// The password is never part of a ProxyInfo.
	Username string `json:"username,omitempty"`
}

// String names the proxy as error messages do: "proxy NAME (HOST)".
func (p *ProxyInfo) String() string {
	switch {
	case p.Name == "":
		return "proxy " + p.Host
	case p.Host == "":
		return "proxy " + p.Name
	}
	return "proxy " + p.Name + " (" + p.Host + ")"
}

// TLSDial is what DialTLS found.
type TLSDial struct {
	// Target is the partner's host:port, from the connection's base_url;
	// "" when base_url cannot be dialed.
	Target string
	// Proxy is the proxy the connection goes through, nil when it goes
	// directly to the partner.
	Proxy *ProxyInfo
	// Tunnel is true once the proxy has opened the CONNECT tunnel to
	// Target. A failure with Proxy set and Tunnel false is the proxy's.
	Tunnel bool
	// State is the TLS handshake with the partner, when it completed.
	State tls.ConnectionState
}

// DialTLS makes a TLS handshake with the partner of connection conn, named
// name, at its base_url's host and port, presenting mat's client
// certificate, and closes the connection: the way the executor's transport
// connects for a call, through the same proxy (the connection's, else the
// default), with the same CONNECT headers and proxy credentials, or
// directly under the same egress policy, with the same TLS settings. It
// runs within conn.AttemptTimeout(nil).
//
// The returned *TLSDial is never nil: it says how far the dial got. The
// error is a *jobs.Error, as a call's would be; no error and no field of
// the TLSDial holds the proxy's password.
func (x *Executor) DialTLS(ctx context.Context, name string, conn *catalog.Connection, mat *secrets.Material) (*TLSDial, error) {
	d := &TLSDial{}
	if conn == nil || mat == nil || mat.Config == nil {
		return d, jobs.Errorf(jobs.CodeInternal, "mtlsrelay dialed without a connection or TLS material; see the worker log")
	}
	// Target stays "" when nothing can be dialed.
	cd := x.derived.connection(name, conn)
	if cd.base == nil || cd.base.Hostname() == "" {
		return d, jobs.Errorf(jobs.CodeInternal, "connection %s has an invalid base_url", name)
	}
	u := cd.base
	if u.Scheme != "https" {
		return d, jobs.Errorf(jobs.CodeInvalidCall, "connection %s targets %s URLs; mtlsrelay only makes https calls", name, u.Scheme)
	}
	d.Target = HostPort(u)
	_, route := x.transports.proxies.route(name, conn.Proxy)
	if route != nil {
		d.Proxy = route.info()
		if route.err != nil {
			return d, route.err
		}
	}
	timeout := conn.AttemptTimeout(nil)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := Target{Host: d.Target, Profile: mat.Profile, SystemRoots: mat.Config.RootCAs == nil, Timeout: timeout, FreshConn: true}
	classify := func(err error, phase string) *jobs.Error {
		// As Attempt does: the context explains failures whose own error
		// does not.
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		t := target
		t.Phase = phase
		return ClassifyError(err, t)
	}

	pt := x.transports.getVia(name, conn.Proxy, LaneQueued, mat)
	defer pt.release()
	tr := pt.rt

	var raw net.Conn
	var err error
	switch {
	case route != nil:
		// The route's dialer reaches the proxy (over TLS for an https
		// proxy) and names it in its failures.
		if raw, err = tr.DialContext(ctx, "tcp", route.host); err != nil {
			return d, classify(err, PhaseConnect)
		}
		err = connectThrough(ctx, raw, tr, route.connectURL, d.Target)
	default:
		var proxyURL *url.URL
		if tr.Proxy != nil {
			// ExecutorOptions.Proxy (embedders; the worker sets none).
			if proxyURL, err = tr.Proxy(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}); err != nil {
				return d, classify(err, PhaseConnect)
			}
		}
		dialCtx := withEgress(ctx, cd.egress)
		if proxyURL == nil {
			if raw, err = tr.DialContext(dialCtx, "tcp", d.Target); err != nil {
				return d, classify(err, PhaseConnect)
			}
			break
		}
		if proxyURL.Scheme != "http" {
			return d, jobs.Errorf(jobs.CodeInternal, "DialTLS reaches a proxy chosen by ExecutorOptions.Proxy over http:// only, not %s://", proxyURL.Scheme)
		}
		host := proxyURL.Host
		if proxyURL.Port() == "" {
			host = net.JoinHostPort(proxyURL.Hostname(), "80")
		}
		d.Proxy = &ProxyInfo{Host: host, Username: proxyURL.User.Username()}
		if raw, err = tr.DialContext(dialCtx, "tcp", d.Proxy.Host); err != nil {
			return d, classify(err, PhaseConnect)
		}
		err = connectThrough(ctx, raw, tr, proxyURL, d.Target)
	}
	if err != nil {
		raw.Close()
		return d, classify(err, PhaseConnect)
	}
	d.Tunnel = d.Proxy != nil

	cfg := tlsConfigFor(tr, u.Hostname())
	tc := tls.Client(raw, cfg)
	defer tc.Close()
	hctx := ctx
	if tr.TLSHandshakeTimeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, tr.TLSHandshakeTimeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		return d, classify(err, PhaseTLS)
	}
	d.State = tc.ConnectionState()
	return d, nil
}

// info describes r without its password.
func (r *proxyRoute) info() *ProxyInfo {
	return &ProxyInfo{Name: r.name, Host: r.host, TLS: r.tls != nil, Username: r.username}
}

// connectThrough asks the proxy at the other end of c for a tunnel to
// target, as the transport does: its CONNECT headers (GetProxyConnectHeader,
// else ProxyConnectHeader and the proxy URL's user), its verdict on the
// answer (OnProxyConnectResponse), and 200 only. It returns with c at the
// start of the tunnel. ctx bounds the exchange.
func connectThrough(ctx context.Context, c net.Conn, tr *http.Transport, proxyURL *url.URL, target string) error {
	var hdr http.Header
	var err error
	if tr.GetProxyConnectHeader != nil {
		if hdr, err = tr.GetProxyConnectHeader(ctx, proxyURL, target); err != nil {
			return err
		}
	} else {
		hdr = tr.ProxyConnectHeader.Clone()
	}
	if hdr == nil {
		hdr = make(http.Header)
	}
	if u := proxyURL.User; u != nil {
		password, _ := u.Password()
		hdr = hdr.Clone()
		hdr.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+password)))
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target, Header: hdr}
	// The deadline, or a cancellation, ends a proxy that does not answer.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(c); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if tr.OnProxyConnectResponse != nil {
		if err := tr.OnProxyConnectResponse(ctx, proxyURL, req, resp); err != nil {
			return err
		}
	}
	if resp.StatusCode != http.StatusOK {
		return jobs.Errorf(jobs.CodeConnectFailed, "proxy %s answered the CONNECT to %s with %s", proxyURL.Host, target, resp.Status)
	}
	if br.Buffered() > 0 {
		return jobs.Errorf(jobs.CodeConnectFailed, "proxy %s sent data after its answer to the CONNECT to %s", proxyURL.Host, target)
	}
	if !stop() {
		return ctx.Err()
	}
	return c.SetDeadline(time.Time{})
}

// tlsConfigFor returns the TLS settings the transport tr uses with a
// partner named host: the profile's (TLSClientConfig, which newTransport
// made from the material), with the protocols the transport offers
// through ALPN, and the server name. tr.Clone sets the transport's ALPN
// defaults under the transport's own once, so the copy is taken without
// racing calls that use tr.
func tlsConfigFor(tr *http.Transport, host string) *tls.Config {
	cfg := tr.Clone().TLSClientConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	return cfg
}
