package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// egressPolicy says which restricted addresses one connection may reach.
// Addresses no partner on the internet has (see restricted: loopback,
// private, link-local with cloud metadata among them, NAT64 and the other
// special-purpose blocks) are refused unless the connection names the host
// or the address explicitly: in base_url, or as an allow_hosts entry
// without a wildcard. A partner on a private network is normal; a wildcard
// is not explicit.
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
	// An IPv4-mapped address (::ffff:0:0/96) is checked as the IPv4
	// address it is; a zone (fe80::1%eth0) would make every prefix miss.
	a = a.Unmap().WithZone("")
	for _, b := range specialBlocks {
		if b.prefix.Contains(a) {
			return fmt.Sprintf("%s (%s, %s)", b.name, b.prefix, b.rfc), true
		}
	}
	if a.Is6() && !globalUnicast.Contains(a) {
		return "an IPv6 address outside the global unicast space (2000::/3, RFC 4291)", true
	}
	return "", false
}

// specialBlock is a block of addresses that restricted refuses.
type specialBlock struct {
	prefix netip.Prefix
	name   string // the kind of address, for messages
	rfc    string
}

// specialBlocks are the blocks of the IANA IPv4 Special-Purpose Address
// Registry (https://www.iana.org/assignments/iana-ipv4-special-registry/)
// and the IANA IPv6 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv6-special-registry/) that are
// not "Globally Reachable = True", with multicast, IPv4-compatible and
// NAT64 addresses besides. The few globally reachable assignments inside
// these blocks (anycast for PCP and TURN, AS112, AMT, ORCHIDv2) are
// protocol services, never a partner's server, and are refused with them.
// IPv4-mapped addresses are not listed: restricted checks the IPv4 address
// they carry.
//
// The first block that holds an address names it: a block comes before
// any block that holds it.
var specialBlocks = []specialBlock{
	{netip.MustParsePrefix("0.0.0.0/32"), "the unspecified address", "RFC 1122"},
	{netip.MustParsePrefix("0.0.0.0/8"), `a "this network" address`, "RFC 791"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address", "RFC 1918"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT) address", "RFC 6598"},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address", "RFC 1122"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address, where cloud metadata services live", "RFC 3927"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address", "RFC 1918"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment", "RFC 6890"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address", "RFC 5737"},
	{netip.MustParsePrefix("192.88.99.0/24"), "a 6to4 relay anycast address (deprecated)", "RFC 7526"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address", "RFC 1918"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address", "RFC 2544"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address", "RFC 5737"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address", "RFC 5737"},
	// Multicast is not in the special-purpose registry but in IANA's
	// multicast registries; no partner's server is a group.
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address", "RFC 5771"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the limited broadcast address", "RFC 919"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address", "RFC 1112"},

	{netip.MustParsePrefix("::/128"), "the unspecified address", "RFC 4291"},
	{netip.MustParsePrefix("::1/128"), "a loopback address", "RFC 4291"},
	// IPv4-compatible addresses (::a.b.c.d) are deprecated and not in the
	// registry; some stacks still reach the IPv4 address they carry.
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible address (deprecated)", "RFC 4291"},
	// The registry marks the well-known NAT64 prefix globally reachable,
	// but a translator turns it into whatever IPv4 address it carries:
	// 64:ff9b::a9fe:a9fe is 169.254.169.254.
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address", "RFC 6052"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address", "RFC 8215"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address", "RFC 6666"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address", "RFC 4380"},
	{netip.MustParsePrefix("2001::/23"), "an IETF protocol assignment", "RFC 2928"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address", "RFC 3849"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address", "RFC 3056"},
	{netip.MustParsePrefix("3fff::/20"), "a documentation address", "RFC 9637"},
	{netip.MustParsePrefix("5f00::/16"), "a segment routing (SRv6) SID", "RFC 9602"},
	{netip.MustParsePrefix("fc00::/7"), "a private (unique local) address", "RFC 4193"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address", "RFC 4291"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address", "RFC 4291"},
}

// globalUnicast is the only IPv6 space IANA allocates for global unicast
// (IANA IPv6 Address Space registry). An address outside it that
// specialBlocks does not name, such as deprecated site-local fec0::/10 or
// SIIT's ::ffff:0:0:0/96, is refused too.
var globalUnicast = netip.MustParsePrefix("2000::/3")

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
			explicit := hostExplicit || pol.explicit[a.Unmap().String()]
			if kind, bad := restricted(a); bad && !explicit {
				refused = jobs.Wrap(errEgressRefused, jobs.CodeHostNotAllowed,
					"%s resolves to %s, %s; connection %s may reach it only if its base_url or allow_hosts names %q or %q explicitly",
					host, a, kind, pol.connection, host, a.Unmap().String())
				continue
			}
			if a.Zone() != "" && !explicit {
				// A zone is for a link-local address on this host's own
				// link; a partner's public address never has one, and Go
				// ignores a zone it does not know.
				refused = jobs.Wrap(errEgressRefused, jobs.CodeHostNotAllowed,
					"%s is an address with an IPv6 zone, which connection %s may reach only if it names it explicitly", a, pol.connection)
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
