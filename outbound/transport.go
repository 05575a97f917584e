package outbound

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Defaults of ExecutorOptions.
const (
	DefaultMaxIdleConnsPerHost = 64
	DefaultDialTimeout         = 10 * time.Second
	DefaultTLSHandshakeTimeout = 10 * time.Second
	DefaultIdleConnTimeout     = 90 * time.Second
	DefaultUserAgent           = "mtlsrelay"
)

// ExecutorOptions configure an Executor. Zero values mean the defaults.
type ExecutorOptions struct {
	// MaxIdleConnsPerHost is how many keep-alive connections each profile
	// keeps per partner host; set it to the worker's concurrency.
	// Default 64.
	MaxIdleConnsPerHost int
	// DialTimeout bounds a TCP connect; the attempt's deadline bounds it too.
	// Default 10s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds a TLS handshake; the attempt's deadline
	// bounds it too. Default 10s.
	TLSHandshakeTimeout time.Duration
	// IdleConnTimeout closes a keep-alive connection idle this long.
	// Default 90s.
	IdleConnTimeout time.Duration
	// Proxy chooses an HTTP CONNECT proxy per request. Default nil: direct
	// connections; HTTPS_PROXY and friends are not consulted unless Proxy is
	// set to http.ProxyFromEnvironment. It applies to direct routes only:
	// a connection whose proxy is one of Proxies goes through that one.
	Proxy func(*http.Request) (*url.URL, error)
	// DisableHTTP2 keeps to HTTP/1.1 even when a partner offers HTTP/2.
	// Default false: HTTP/2 is used when the partner offers it through ALPN.
	DisableHTTP2 bool
	// UserAgent is sent when a call sets no User-Agent. Default "mtlsrelay".
	UserAgent string
	// LookupNetIP resolves partner host names; the egress policy checks
	// every address it returns before dialing it. Default
	// net.DefaultResolver.LookupNetIP.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// Bodies keeps bodies too large for a message: request bodies named by
	// body_ref, responses larger than its InlineMax. Default nil: a call
	// with body_ref fails, and responses are kept in the result.
	Bodies Bodies
	// Secrets reads a secret reference (env:, file:, vault:...): the
	// credentials of a connection's auth and of proxies. Default nil:
	// connections with auth, and proxies with a password, fail.
	Secrets func(ctx context.Context, ref string) ([]byte, error)
	// Proxies are the egress proxies by name (a connection's proxy), and
	// DefaultProxy the one of connections that name none ("" or "none":
	// direct).
	Proxies      map[string]catalog.Proxy
	DefaultProxy string
}

func (o ExecutorOptions) withDefaults() ExecutorOptions {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.TLSHandshakeTimeout <= 0 {
		o.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.LookupNetIP == nil {
		o.LookupNetIP = net.DefaultResolver.LookupNetIP
	}
	return o
}

// pooledTransport is the HTTP transport of one version of a profile's TLS
// material.
type pooledTransport struct {
	version string
	rt      *http.Transport
	// retired is set once a newer version took this one's place: calls still
	// running on it finish, then close the connections they leave idle.
	retired atomic.Bool
	// firsts holds a *firstConn per partner host (host:port): a connection
	// whose calls may go to several allowed hosts makes each host's first
	// connection once.
	firsts sync.Map
}

// first returns the first-connection gate of host.
func (t *pooledTransport) first(host string) *firstConn {
	if f, ok := t.firsts.Load(host); ok {
		return f.(*firstConn)
	}
	f, _ := t.firsts.LoadOrStore(host, new(firstConn))
	return f.(*firstConn)
}

// firstConn lets one call make a transport's first connection to a host
// while the others wait for it. Until a TLS handshake with the partner has been made,
// every call would dial its own connection: a worker that starts with a
// backlog would open one per call, each with a full handshake, where one
// connection serves them all (HTTP/2) or lets the others resume its
// session (HTTP/1.1).
type firstConn struct {
	made atomic.Bool // a call got a connection: no more waiting

	mu     sync.Mutex
	making chan struct{} // closed when the call making the connection lets the others go
}

// wait returns when the caller may use the transport. When the caller is
// the one to make the first connection, it gets end, which lets the others
// go: end(true) once it has a connection, end(false) if it got none. After
// a failure the calls that waited go on together, each making its own
// attempt and reporting its own failure within its own deadline: queued
// behind one try after another at an unreachable partner, they would fail
// with the deadline's timeout instead, without having tried. end may be
// called more than once; the first call counts. A caller whose ctx ends
// while it waits gets ctx's error.
func (f *firstConn) wait(ctx context.Context) (end func(connected bool), err error) {
	if f.made.Load() {
		return nil, nil
	}
	f.mu.Lock()
	if f.making == nil {
		turn := make(chan struct{})
		f.making = turn
		f.mu.Unlock()
		var once sync.Once
		return func(connected bool) { once.Do(func() { f.end(turn, connected) }) }, nil
	}
	making := f.making
	f.mu.Unlock()
	select {
	case <-making:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *firstConn) end(turn chan struct{}, connected bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if connected {
		f.made.Store(true)
	}
	close(turn)
	if f.making == turn {
		f.making = nil
	}
}

// ticketWait is how long the first call's HTTP/1.1 connection holds the
// others back once it is up: the TLS 1.3 session ticket arrives just after
// the handshake, and the calls that dial next resume with it. An HTTP/2
// connection lets them go at once: they share it.
const ticketWait = 20 * time.Millisecond

// release is called when an attempt is done with t.
func (t *pooledTransport) release() {
	if t.retired.Load() {
		t.rt.CloseIdleConnections()
	}
}

// profileTransports holds the current transport of a profile and the one it
// replaced, so that a call still holding the previous material (resolved
// just before a rotation) does not force yet another transport.
type profileTransports struct {
	cur, prev *pooledTransport
}

// transportCache keeps one *http.Transport per connection, profile and
// material version. Lookups take no lock: the map is copied on write, which is rare
// (a new profile or a rotated secret), and read through an atomic pointer.
type transportCache struct {
	opts ExecutorOptions
	// proxies are the routes through ExecutorOptions.Proxies (proxy.go).
	proxies *proxyRoutes

	mu        sync.Mutex // serializes writers
	byProfile atomic.Pointer[map[string]profileTransports]
}

func newTransportCache(opts ExecutorOptions) *transportCache {
	c := &transportCache{opts: opts, proxies: newProxyRoutes(opts)}
	empty := map[string]profileTransports{}
	c.byProfile.Store(&empty)
	return c
}

// get returns the transport of connection conn for mat, building it when
// the pair is new or the material's Version changed. When a newer version
// replaces one, the old transport's idle connections are closed; calls in
// flight on it finish.
//
// Pools are per connection, not only per profile, because each connection
// has its own egress rules: a pooled connection that one connection's
// allow_hosts permitted must not serve another connection's call.
//
// get is getVia for a connection that names no proxy (the worker's
// default proxy, if any).
func (c *transportCache) get(conn string, mat *secrets.Material) *pooledTransport {
	return c.getVia(conn, "", LaneQueued, mat)
}

// getVia is get for a connection whose proxy setting is proxy
// (catalog.Connection.Proxy: "" for the worker's default, "none", or a
// proxy's name). Pools are per route too (proxy.go): a connection through
// one proxy never serves a call meant for another proxy or for a direct
// connection. And per lane: direct calls have pools of their own.
func (c *transportCache) getVia(conn, proxy string, lane Lane, mat *secrets.Material) *pooledTransport {
	routeKey, route := c.proxies.route(conn, proxy)
	key := conn + "\x00" + mat.Profile + "\x00" + routeKey + "\x00" + string('0'+rune(lane))
	if pt, ok := (*c.byProfile.Load())[key]; ok && pt.cur.version == mat.Version {
		return pt.cur
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.byProfile.Load()
	pt := old[key]
	if pt.cur != nil && pt.cur.version == mat.Version {
		return pt.cur
	}
	var next profileTransports
	switch {
	case pt.prev != nil && pt.prev.version == mat.Version:
		// Back to the previous version: reuse its transport.
		next = profileTransports{cur: pt.prev, prev: pt.cur}
	default:
		if pt.prev != nil {
			pt.prev.rt.CloseIdleConnections()
		}
		next = profileTransports{cur: &pooledTransport{version: mat.Version, rt: c.newTransport(mat, route)}, prev: pt.cur}
	}
	next.cur.retired.Store(false)
	if next.prev != nil {
		next.prev.retired.Store(true)
		next.prev.rt.CloseIdleConnections()
	}
	m := make(map[string]profileTransports, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[key] = next
	c.byProfile.Store(&m)
	return next.cur
}

// closeIdle closes the idle connections of every transport.
func (c *transportCache) closeIdle() {
	for _, pt := range *c.byProfile.Load() {
		pt.cur.rt.CloseIdleConnections()
		if pt.prev != nil {
			pt.prev.rt.CloseIdleConnections()
		}
	}
}

// StreamReceiveWindow is the HTTP/2 receive window of one response: the
// most of a response body a worker holds unread. 1 MiB keeps 64 MB/s per
// stream at 16 ms of round trip.
const StreamReceiveWindow = 1 << 20

// newTransport builds the HTTP transport of one version of a profile's
// material: TLS settings cloned from it, keep-alive pool sized by the
// options, HTTP/2 when the partner offers it, no redirects (the executor
// calls RoundTrip directly). route, when not nil, is the proxy the
// transport reaches partners through.
func (c *transportCache) newTransport(mat *secrets.Material, route *proxyRoute) *http.Transport {
	o := c.opts
	cfg := mat.Config.Clone()
	secrets.PresentAlways(cfg)
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                  o.Proxy,
		DialContext:            dialEgress(dialer, o.LookupNetIP),
		TLSClientConfig:        cfg,
		TLSHandshakeTimeout:    o.TLSHandshakeTimeout,
		ForceAttemptHTTP2:      !o.DisableHTTP2,
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		IdleConnTimeout:        o.IdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		HTTP2: &http.HTTP2Config{
			// Detect a dead HTTP/2 connection instead of queuing calls on it.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
			// What a response may hold in the worker's heap before the
			// partner waits for the worker (HTTP/2 flow control): a body
			// streamed to the Object Store is read only as fast as
			// JetStream stores it (Go's default, 4 MiB, held 88-93% of the
			// heap with 64 large bodies in flight).
			MaxReceiveBufferPerStream: StreamReceiveWindow,
		},
	}
	if route != nil {
		// Through a proxy (proxy.go): CONNECT to the partner, mutual TLS
		// inside the tunnel. The dialer reaches the proxy only, without
		// the egress policy's address checks (the proxy resolves the
		// partner's name); allow_hosts was checked before any dial.
		route.configure(tr, dialer, o.TLSHandshakeTimeout, o.UserAgent, o.Secrets)
	}
	// A partner that renegotiates to ask for the client certificate (old
	// IIS set-ups) can only do so on HTTP/1.1: HTTP/2 forbids renegotiation.
	if o.DisableHTTP2 || cfg.Renegotiation != tls.RenegotiateNever {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		tr.Protocols = p
	}
	return tr
}
