// Package catalog defines what calls are made with: connections (where a
// call goes, which hosts it may reach, its limits) and the set of
// connections and profiles a worker uses. The worker's config file and the
// registry both produce them; the worker and the executor read them.
package catalog

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Defaults of a connection's limits.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxAttempts      = 5
	DefaultMaxResponseBytes = 5 << 20
	// MaxResponseBytesLimit bounds max_response_bytes: a body that large
	// streams to the Object Store, never whole into a worker's memory.
	MaxResponseBytesLimit  = 1 << 30
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 30 * time.Second
)

// Connection is a partner endpoint: where calls go and with which profile.
// It comes from the config file or the registry; zero values mean defaults.
type Connection struct {
	// BaseURL is the https URL a call's path is joined to. Required.
	BaseURL string `yaml:"base_url" json:"base_url"`
	// Profile names the mTLS profile whose client certificate is presented. Required.
	Profile string `yaml:"profile" json:"profile"`
	// AllowHosts lists the hosts (host, host:port, *.suffix or
	// *.suffix:port) that a call's absolute url may name; an entry without
	// a port allows port 443 only. BaseURL's host and port are always
	// allowed.
	AllowHosts []string `yaml:"allow_hosts,omitempty" json:"allow_hosts,omitempty"`
	// Timeout is the deadline of one attempt. Default 30s.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// MaxAttempts bounds the attempts of a call. Default 5.
	MaxAttempts int `yaml:"max_attempts,omitempty" json:"max_attempts,omitempty"`
	// MaxConns caps the concurrent calls per worker to this partner, queued
	// and direct together, and so the connections in use. Idle connections
	// are pooled apart for direct calls: over HTTP/1.1 a partner may see up
	// to twice MaxConns open connections from a worker, half of them idle.
	// Default: the worker's concurrency.
	MaxConns int `yaml:"max_conns,omitempty" json:"max_conns,omitempty"`
	// RateLimit caps calls per second per worker to this partner; 0 is no limit.
	RateLimit float64 `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// BreakerFailures is how many consecutive partner failures (connect
	// failures, timeouts, 502/503/504) open the circuit: calls then fail
	// fast with circuit_open (retryable) until BreakerCooldown passes and a
	// trial call succeeds. Default 5; negative disables the breaker.
	BreakerFailures int `yaml:"breaker_failures,omitempty" json:"breaker_failures,omitempty"`
	// BreakerCooldown is how long an open circuit stays open. Default 30s.
	BreakerCooldown Duration `yaml:"breaker_cooldown,omitempty" json:"breaker_cooldown,omitempty"`
	// FollowRedirects follows 3xx responses (at most 5), only to https URLs
	// whose host is allowed. Default false: a 3xx is the result.
	FollowRedirects bool `yaml:"follow_redirects,omitempty" json:"follow_redirects,omitempty"`
	// MaxResponseBytes bounds a response body. Default 5 MiB.
	MaxResponseBytes int64 `yaml:"max_response_bytes,omitempty" json:"max_response_bytes,omitempty"`
	// Auth adds credentials on top of mTLS: basic, bearer, header or an
	// OAuth2 token. A call may then not send its own Authorization.
	Auth *Auth `yaml:"auth,omitempty" json:"auth,omitempty"`
	// Proxy names the egress proxy (a key of proxies), "none" for direct.
	// Empty: worker.proxy.
	Proxy string `yaml:"proxy,omitempty" json:"proxy,omitempty"`
	// WSDL locates the partner's WSDL, so that SOAP calls may name
	// soap.operation: a URL relative to base_url ("?wsdl", "calc.wsdl"),
	// an https URL on an allowed host (both fetched through the
	// connection: its client certificate, proxy and egress rules), or
	// file:/path on the worker. Imports and includes are followed.
	WSDL string `yaml:"wsdl,omitempty" json:"wsdl,omitempty"`
	// SOAP holds SOAP settings: soap.wss signs requests with WS-Security,
	// replacing the profile's soap.wss.
	SOAP *secrets.SOAPSettings `yaml:"soap,omitempty" json:"soap,omitempty"`
	// Zone names the workers that run this connection's calls, durable
	// and direct: those whose worker.zones list it (a DMZ, a payments
	// network). Default "default". A worker that takes a call of another
	// zone forwards it there.
	Zone string `yaml:"zone,omitempty" json:"zone,omitempty"`
}

// ZoneName returns the connection's zone, DefaultZone when it names none.
func (c *Connection) ZoneName() string {
	if c.Zone == "" {
		return jobs.DefaultZone
	}
	return c.Zone
}

// WSDLLocation returns where the connection's WSDL is: an absolute https
// URL (resolved against base_url) or a file path, and whether it is a
// file. It returns "" when the connection has no wsdl.
func (c *Connection) WSDLLocation() (loc string, file bool, err error) {
	if c.WSDL == "" {
		return "", false, nil
	}
	if p, ok := strings.CutPrefix(c.WSDL, "file:"); ok {
		p = strings.TrimPrefix(p, "//")
		if !strings.HasPrefix(p, "/") {
			return "", false, fmt.Errorf("wsdl %q: a file WSDL needs an absolute path, file:/path/to/service.wsdl", c.WSDL)
		}
		return p, true, nil
	}
	base, err := url.Parse(c.BaseURL)
	if err != nil {
		return "", false, fmt.Errorf("base_url does not parse")
	}
	ref, err := url.Parse(c.WSDL)
	if err != nil {
		return "", false, fmt.Errorf("wsdl %q is not a URL, a URL relative to base_url (\"?wsdl\") or file:/path", c.WSDL)
	}
	u := base.ResolveReference(ref)
	if u.Scheme != "https" {
		return "", false, fmt.Errorf("wsdl %q: mtlsrelay fetches WSDLs over https only; use an https URL or file:/path", c.WSDL)
	}
	if !c.HostAllowed(u, base) {
		return "", false, fmt.Errorf("wsdl %q: host %s is not allowed by the connection; add it to allow_hosts", c.WSDL, u.Host)
	}
	return u.String(), false, nil
}

// Validate checks the connection's own fields; name is used in messages.
func (c *Connection) Validate(name string) error {
	if !jobs.ValidName(name) {
		return fmt.Errorf("connection name %q must be 1-128 chars of [A-Za-z0-9_-]", name)
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("connection %s: base_url %q must be an absolute https URL", name, c.BaseURL)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("connection %s: base_url must use https, not %q", name, u.Scheme)
	}
	if c.Profile == "" {
		return fmt.Errorf("connection %s: profile is required", name)
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > jobs.MaxAttemptsLimit {
		return fmt.Errorf("connection %s: max_attempts must be between 1 and %d", name, jobs.MaxAttemptsLimit)
	}
	if c.MaxConns < 0 || c.RateLimit < 0 || c.MaxResponseBytes < 0 {
		return fmt.Errorf("connection %s: max_conns, rate_limit and max_response_bytes must not be negative", name)
	}
	if c.Auth != nil {
		if err := c.Auth.validate(name); err != nil {
			return err
		}
	}
	if c.Zone != "" && !jobs.ValidZone(c.Zone) {
		return fmt.Errorf("connection %s: zone %q must be 1-64 chars of [A-Za-z0-9-]", name, c.Zone)
	}
	if _, _, err := c.WSDLLocation(); err != nil {
		return fmt.Errorf("connection %s: %v", name, err)
	}
	if err := c.SOAP.Validate("connection " + name); err != nil {
		return err
	}
	if c.MaxResponseBytes > MaxResponseBytesLimit {
		return fmt.Errorf("connection %s: max_response_bytes %d is over the limit of 1 GiB (%d)", name, c.MaxResponseBytes, int64(MaxResponseBytesLimit))
	}
	for _, h := range c.AllowHosts {
		host, port, err := net.SplitHostPort(h)
		hasPort := err == nil
		if !hasPort {
			host = h
		}
		// A bare "*." would match every host written with a trailing dot.
		suffix, _ := strings.CutPrefix(host, "*.")
		if suffix == "" || strings.Contains(suffix, "*") || strings.ContainsAny(h, "/ ") {
			return fmt.Errorf("connection %s: allow_hosts entry %q must be a host name, address, host:port, *.suffix or *.suffix:port", name, h)
		}
		// There is no wildcard port, and a port HostAllowed never matches
		// (":https", "+443", "0443") would hide a mistake.
		if hasPort {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
				return fmt.Errorf("connection %s: allow_hosts entry %q: the port must be a number from 1 to 65535 (an entry without a port means 443)", name, h)
			}
		}
	}
	return nil
}

// AttemptTimeout returns the deadline of one attempt of call.
func (c *Connection) AttemptTimeout(call *jobs.Call) time.Duration {
	if call != nil && call.TimeoutMS > 0 {
		return time.Duration(call.TimeoutMS) * time.Millisecond
	}
	if c.Timeout > 0 {
		return c.Timeout.D()
	}
	return DefaultTimeout
}

// Attempts returns how many attempts call may have.
func (c *Connection) Attempts(call *jobs.Call) int {
	if call != nil && call.MaxAttempts > 0 {
		return call.MaxAttempts
	}
	if c.MaxAttempts > 0 {
		return c.MaxAttempts
	}
	return DefaultMaxAttempts
}

// ResponseLimit returns the largest response body accepted.
func (c *Connection) ResponseLimit() int64 {
	if c.MaxResponseBytes > 0 {
		return c.MaxResponseBytes
	}
	return DefaultMaxResponseBytes
}

// RequestURL builds the URL of call: its url when set (whose host must be
// allowed), else base, the connection's base_url parsed (read, never
// written), joined with its path. Then its query is added. Under base_url,
// the call adds to base_url's query and never replaces it: a parameter
// base_url sets (say tenant=A) cannot be given again by the call's path or
// query, where the partner might take the call's value.
func (c *Connection) RequestURL(call *jobs.Call, base *url.URL) (*url.URL, error) {
	if call.URL != "" {
		u, err := url.Parse(call.URL)
		if err != nil {
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "url is not a valid URL")
		}
		if !c.HostAllowed(u, base) {
			return nil, jobs.Errorf(jobs.CodeHostNotAllowed,
				"host %q is not allowed by connection %s; add it to the connection's allow_hosts or use a path under %s",
				u.Host, call.Connection, c.BaseURL)
		}
		if sameHost(u, base) {
			// On base_url's own host a url is a path by another name: it
			// stays under base_url's path and keeps its query.
			if !underPath(u.EscapedPath(), base.EscapedPath()) {
				return nil, jobs.Errorf(jobs.CodeInvalidCall,
					"url %s leaves connection %s's base_url path %s; use path, or a url under it", u.Redacted(), call.Connection, base.EscapedPath())
			}
			if err := checkFixedQuery(base.Query(), u.Query(), call); err != nil {
				return nil, err
			}
		}
		if len(call.Query) > 0 {
			q := u.Query()
			for k, vs := range call.Query {
				for _, v := range vs {
					q.Add(k, v)
				}
			}
			u.RawQuery = q.Encode()
		}
		return u, nil
	}
	u, pathQuery := joinPath(base, call.Path)
	fixed := base.Query()
	given, err := url.ParseQuery(pathQuery)
	if err != nil {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "the query in path does not parse; give parameters in query instead")
	}
	if err := checkFixedQuery(fixed, given, call); err != nil {
		return nil, err
	}
	var parts []string
	for _, p := range []string{base.RawQuery, pathQuery} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(call.Query) > 0 {
		parts = append(parts, url.Values(call.Query).Encode())
	}
	u.RawQuery = strings.Join(parts, "&")
	return u, nil
}

// checkFixedQuery refuses a call that gives (in given, or in its query) a
// parameter base_url sets, compared without case: ASP.NET and others read
// query names so.
func checkFixedQuery(fixed, given url.Values, call *jobs.Call) error {
	names := make([]string, 0, len(given)+len(call.Query))
	for k := range given {
		names = append(names, k)
	}
	for k := range call.Query {
		names = append(names, k)
	}
	for _, k := range names {
		for f := range fixed {
			if strings.EqualFold(k, f) {
				return jobs.Errorf(jobs.CodeInvalidCall,
					"query parameter %q is set by connection %s's base_url, and a call cannot give it again; drop it from the call's path and query", k, call.Connection)
			}
		}
	}
	return nil
}

// sameHost reports whether u names base's host and port.
func sameHost(u, base *url.URL) bool {
	if base == nil {
		return false
	}
	port := func(x *url.URL) string {
		if p := x.Port(); p != "" {
			return p
		}
		return "443"
	}
	return strings.EqualFold(u.Hostname(), base.Hostname()) && port(u) == port(base)
}

// underPath reports whether the escaped path p is base or under it.
func underPath(p, base string) bool {
	base = strings.TrimSuffix(base, "/")
	return p == base || strings.HasPrefix(p, base+"/") || (base == "" && (p == "" || strings.HasPrefix(p, "/")))
}

// joinPath appends path to base with one slash between them, so
// "https://h/v1" + "/orders" and "https://h/v1/" + "orders" both give
// https://h/v1/orders. It returns the query path carries, if any, apart:
// the URL keeps base's.
func joinPath(base *url.URL, path string) (*url.URL, string) {
	u := *base
	if path == "" {
		return &u, ""
	}
	rel, _ := url.Parse(path) // validated by jobs.Call.Normalize
	p := strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(rel.Path, "/")
	u.Path = p
	u.RawPath = ""
	if rel.RawPath != "" || rel.Path != "" {
		ep := strings.TrimSuffix(base.EscapedPath(), "/") + "/" + strings.TrimPrefix(rel.EscapedPath(), "/")
		if ep != u.EscapedPath() {
			u.RawPath = ep
		}
	}
	return &u, rel.RawQuery
}

// HostAllowed reports whether u's host and port are those of base
// (base_url parsed; nil when it does not parse) or match one of
// allow_hosts; a URL without a port is on 443. Entries match a host name or
// address exactly (case-insensitive), and "*.example.com" matches any
// subdomain of example.com (not example.com itself). An entry's port is
// the one it names ("host:8443", "*.example.com:8443"), else 443: an entry
// without a port, a wildcard above all, must not open every port of its
// hosts (ssh, admin consoles) to a flow.
func (c *Connection) HostAllowed(u, base *url.URL) bool {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, "%") {
		return false // an IPv6 zone would match a wildcard by its text
	}
	if port == "" {
		port = "443"
	}
	if base != nil {
		bport := base.Port()
		if bport == "" {
			bport = "443"
		}
		if strings.EqualFold(base.Hostname(), host) && bport == port {
			return true
		}
	}
	for _, entry := range c.AllowHosts {
		entry = strings.ToLower(entry)
		eh, ep := entry, ""
		if h, p, err := net.SplitHostPort(entry); err == nil {
			eh, ep = h, p
		}
		eh = strings.Trim(eh, "[]")
		if ep == "" {
			ep = "443"
		}
		if ep != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(eh, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if eh == host {
			return true
		}
	}
	return false
}

// Breaker returns how many consecutive partner failures open the
// connection's circuit (0: never) and how long it stays open.
func (c *Connection) Breaker() (failures int, cooldown time.Duration) {
	switch {
	case c.BreakerFailures < 0:
		failures = 0
	case c.BreakerFailures == 0:
		failures = DefaultBreakerFailures
	default:
		failures = c.BreakerFailures
	}
	cooldown = DefaultBreakerCooldown
	if c.BreakerCooldown > 0 {
		cooldown = c.BreakerCooldown.D()
	}
	return failures, cooldown
}
