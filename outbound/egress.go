package outbound

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// egressPolicy says which restricted addresses one connection may reach.
// Loopback, private, link-local (cloud metadata among them), shared (CGNAT),
// unspecified and multicast addresses are refused unless the connection
// names the host or the address explicitly: in base_url, or as an
// allow_hosts entry without a wildcard. A partner on a private network is
// normal; a wildcard is not explicit.
type egressPolicy struct {
	connection string
	explicit   map[string]bool // lower-case host names and canonical addresses
}

type egressKey struct{}

// newEgressPolicy returns the policy of conn, named name.
func newEgressPolicy(name string, conn *catalog.Connection) *egressPolicy {
	p := &egressPolicy{connection: name, explicit: map[string]bool{}}
	add := func(h string) {
		h = strings.ToLower(strings.Trim(h, "[]"))
		if h == "" || strings.Contains(h, "*") {
			return
		}
		if a, err := netip.ParseAddr(h); err == nil {
			h = a.Unmap().String()
		}
		p.explicit[h] = true
	}
	if u, err := url.Parse(conn.BaseURL); err == nil {
		add(u.Hostname())
	}
	for _, e := range conn.AllowHosts {
		if h, _, err := net.SplitHostPort(e); err == nil {
			e = h
		}
		add(e)
	}
	return p
}

func withEgress(ctx context.Context, p *egressPolicy) context.Context {
	return context.WithValue(ctx, egressKey{}, p)
}

// restricted reports whether a is an address a partner on the internet
// never has, and what kind it is.
func restricted(a netip.Addr) (string, bool) {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return "a loopback address", true
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local address (cloud metadata services live there)", true
	case a.IsPrivate():
		return "a private address", true
	case a.IsUnspecified():
		return "the unspecified address", true
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast address", true
	case a.Is4() && cgnat.Contains(a):
		return "a shared (carrier-grade NAT) address", true
	}
	return "", false
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// errEgressRefused marks a dial refused by the egress policy.
var errEgressRefused = errors.New("egress refused")

// dialEgress resolves addr itself, checks every address against the policy
// in ctx, and dials only addresses it checked: a DNS answer that changes
// between the check and the dial (rebinding) cannot slip through.
func dialEgress(d *net.Dialer, lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		pol, _ := ctx.Value(egressKey{}).(*egressPolicy)
		if pol == nil {
			return d.DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else {
			ips, err := lookup(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			addrs = ips
		}
		hostExplicit := pol.explicit[strings.ToLower(host)]
		var refused *jobs.Error
		var lastErr error
		for _, a := range addrs {
			if kind, bad := restricted(a); bad && !hostExplicit && !pol.explicit[a.Unmap().String()] {
				refused = jobs.Wrap(errEgressRefused, jobs.CodeHostNotAllowed,
					"%s resolves to %s, %s; connection %s may reach it only if its base_url or allow_hosts names %q or %q explicitly",
					host, a, kind, pol.connection, host, a.Unmap().String())
				continue
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
		if lastErr != nil {
			return nil, lastErr
		}
		if refused != nil {
			return nil, refused
		}
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
}
