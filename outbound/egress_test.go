package outbound_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// fakeDNS maps host names to addresses, so egress rules can be tested with
// names that resolve to loopback (the only addresses a test may reach).
func fakeDNS(m map[string]string) func(context.Context, string, string) ([]netip.Addr, error) {
	return func(_ context.Context, _, host string) ([]netip.Addr, error) {
		a, ok := m[host]
		if !ok {
			return nil, fmt.Errorf("no such host %s", host)
		}
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
}

func TestEgressPolicy(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	u, _ := url.Parse(srv.URL())
	port := u.Port()
	x := outbound.NewExecutor(outbound.ExecutorOptions{LookupNetIP: fakeDNS(map[string]string{
		"api.partner.example":    "127.0.0.1", // a public-looking name on a restricted address
		"rebind.partner.example": "127.0.0.1",
		"localhost":              "127.0.0.1",
	})})
	t.Cleanup(x.Close)
	// The partner's certificate names localhost; server_name keeps TLS
	// verification honest while the URL uses other names.
	mat := execMaterial(p, "v1", func(c *tls.Config) { c.ServerName = "localhost" })

	for _, tc := range []struct {
		name  string
		conn  catalog.Connection
		url   string
		want  jobs.Code
		inMsg string
	}{
		{name: "ok/base-url-host-is-explicit", conn: catalog.Connection{BaseURL: "https://api.partner.example:" + port + "/", Profile: "p"}},
		{name: "ok/allow-hosts-names-host", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p", AllowHosts: []string{"rebind.partner.example:" + port}},
			url: "https://rebind.partner.example:" + port + "/echo"},
		{name: "fail/wildcard-is-not-explicit", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p", AllowHosts: []string{"*.partner.example:" + port}},
			url: "https://rebind.partner.example:" + port + "/echo", want: jobs.CodeHostNotAllowed, inMsg: "a loopback address"},
		{name: "fail/wildcard-without-port-is-443-only", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p", AllowHosts: []string{"*.partner.example"}},
			url: "https://rebind.partner.example:" + port + "/echo", want: jobs.CodeHostNotAllowed, inMsg: "is not allowed by connection"},
		{name: "fail/host-not-in-allow-hosts", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p"},
			url: "https://rebind.partner.example:" + port + "/echo", want: jobs.CodeHostNotAllowed, inMsg: "allow_hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := jobs.Call{URL: tc.url}
			if c.URL == "" {
				c.Path = "echo"
			}
			call := restCall(t, c)
			call.Connection = strings.ReplaceAll(tc.name, "/", "-")
			out := x.Attempt(context.Background(), call, &tc.conn, mat)
			if tc.want == "" {
				if out.Result.Error != nil || out.Result.Status != 200 {
					t.Fatalf("want success, got status %d error %+v", out.Result.Status, out.Result.Error)
				}
				return
			}
			wantError(t, out, tc.want)
			if !strings.Contains(out.Result.Error.Message, tc.inMsg) {
				t.Errorf("message %q does not say %q", out.Result.Error.Message, tc.inMsg)
			}
			if out.Sent {
				t.Error("a refused dial must not count as sent")
			}
		})
	}
}

// Every special-purpose block is refused through a wildcard entry and
// dialed when an entry names the address; public addresses are dialed.
// The executor's dial timeout is too short for the dialer to open a
// socket, so an address the policy lets through fails with a timeout and
// no packet leaves the machine.
func TestEgressSpecialBlocks(t *testing.T) {
	cases := []struct {
		addr string
		kind string // "" for a public address
	}{
		{"0.0.0.0", "the unspecified address"},
		{"0.1.2.3", `a "this network" address`},
		{"10.1.2.3", "a private address (10.0.0.0/8"},
		{"100.64.0.1", "a shared (carrier-grade NAT) address"},
		{"100.127.255.254", "a shared (carrier-grade NAT) address"},
		{"127.0.0.1", "a loopback address"},
		{"127.1.2.3", "a loopback address"},
		{"169.254.169.254", "a link-local address, where cloud metadata services live"},
		{"172.16.0.1", "a private address (172.16.0.0/12"},
		{"172.31.255.254", "a private address (172.16.0.0/12"},
		{"192.0.0.1", "an IETF protocol assignment (192.0.0.0/24"},
		{"192.0.0.9", "an IETF protocol assignment (192.0.0.0/24"},
		{"192.0.2.1", "a documentation address (192.0.2.0/24"},
		{"192.88.99.1", "a 6to4 relay anycast address"},
		{"192.168.1.1", "a private address (192.168.0.0/16"},
		{"198.18.0.1", "a benchmarking address"},
		{"198.19.255.254", "a benchmarking address"},
		{"198.51.100.1", "a documentation address (198.51.100.0/24"},
		{"203.0.113.1", "a documentation address (203.0.113.0/24"},
		{"224.0.0.1", "a multicast address"},
		{"239.255.255.250", "a multicast address"},
		{"240.0.0.1", "a reserved address"},
		{"255.255.255.255", "the limited broadcast address"},
		{"::", "the unspecified address"},
		{"::1", "a loopback address"},
		{"::ffff:127.0.0.1", "a loopback address"},
		{"::ffff:169.254.169.254", "a link-local address"},
		{"::7f00:1", "an IPv4-compatible address"},
		{"::a9fe:a9fe", "an IPv4-compatible address"},
		{"64:ff9b::7f00:1", "a NAT64 address"},
		{"64:ff9b::a9fe:a9fe", "a NAT64 address"},
		{"64:ff9b:1::a9fe:a9fe", "a local-use NAT64 address"},
		{"100::1", "a discard-only address"},
		{"2001::1", "a Teredo address"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo address"},
		{"2001:2::1", "an IETF protocol assignment (2001::/23"},
		{"2001:1ff:ffff::1", "an IETF protocol assignment (2001::/23"},
		{"2001:db8::1", "a documentation address (2001:db8::/32"},
		{"2002:7f00:1::1", "a 6to4 address"},
		{"2002:a9fe:a9fe::1", "a 6to4 address"},
		{"3fff::1", "a documentation address (3fff::/20"},
		{"5f00::1", "a segment routing (SRv6) SID"},
		{"fc00::1", "a private (unique local) address"},
		{"fd12:3456::1", "a private (unique local) address"},
		{"fe80::1", "a link-local address (fe80::/10"},
		{"fe80::1%eth0", "a link-local address (fe80::/10"},
		{"ff02::1", "a multicast address"},
		{"fec0::1", "outside the global unicast space"},
		{"::ffff:0:7f00:1", "outside the global unicast space"},
		{"8.8.8.8", ""},
		{"::ffff:8.8.8.8", ""},
		{"100.128.0.1", ""},
		{"198.20.0.1", ""},
		{"2606:4700::1111", ""},
		{"2001:200::1", ""},
	}
	dns := map[string]string{}
	for i, tc := range cases {
		dns[fmt.Sprintf("h%d.p.example", i)] = tc.addr
	}
	x := outbound.NewExecutor(outbound.ExecutorOptions{DialTimeout: time.Nanosecond, LookupNetIP: fakeDNS(dns)})
	t.Cleanup(x.Close)
	mat := execMaterial(newExecPKI(t), "v1", nil)
	attempt := func(t *testing.T, i int, connection string, allow ...string) outbound.Outcome {
		conn := catalog.Connection{BaseURL: "https://api.p.example/", Profile: "p", AllowHosts: allow}
		call := restCall(t, jobs.Call{URL: fmt.Sprintf("https://h%d.p.example/echo", i)})
		call.Connection = connection
		return x.Attempt(context.Background(), call, &conn, mat)
	}
	wantDialed := func(t *testing.T, out outbound.Outcome) {
		t.Helper()
		if e := out.Result.Error; e == nil || e.Code != jobs.CodeTimeout {
			t.Fatalf("error = %+v, want the dialer's timeout", e)
		}
	}
	for i, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			out := attempt(t, i, fmt.Sprintf("wildcard-%d", i), "*.p.example")
			if tc.kind == "" {
				wantDialed(t, out)
				return
			}
			wantError(t, out, jobs.CodeHostNotAllowed)
			if msg := out.Result.Error.Message; !strings.Contains(msg, tc.kind) {
				t.Errorf("message %q does not say %q", msg, tc.kind)
			}
			if out.Sent {
				t.Error("a refused dial must not count as sent")
			}
			wantDialed(t, attempt(t, i, fmt.Sprintf("named-%d", i), "*.p.example", tc.addr))
		})
	}
}

func TestRedirects(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	mat := execMaterial(p, "v1", nil)
	base := strings.TrimSuffix(srv.URL(), "/")
	to := func(loc string) string { return "status/302?location=" + url.QueryEscape(loc) }
	for _, tc := range []struct {
		name       string
		follow     bool
		path       string
		wantStatus int
		want       jobs.Code
	}{
		{"ok/not-followed-by-default", false, to(base + "/echo"), 302, ""},
		{"ok/followed-within-allowed-hosts", true, to(base + "/echo"), 200, ""},
		{"fail/followed-to-other-host", true, to("https://elsewhere.example/steal"), 0, jobs.CodeHostNotAllowed},
		{"fail/followed-to-http", true, to(strings.Replace(base, "https:", "http:", 1) + "/echo"), 0, jobs.CodeHostNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := &catalog.Connection{BaseURL: base + "/", Profile: "p", FollowRedirects: tc.follow}
			out := x.Attempt(context.Background(), restCall(t, jobs.Call{Path: tc.path}), conn, mat)
			if tc.want != "" {
				wantError(t, out, tc.want)
				return
			}
			if out.Result.Error != nil || out.Result.Status != tc.wantStatus {
				t.Fatalf("status %d error %+v, want %d", out.Result.Status, out.Result.Error, tc.wantStatus)
			}
		})
	}
}

// A pooled connection opened under one connection's rules never serves
// another connection's call: pools are per connection.
func TestEgressPoolsArePerConnection(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	u, _ := url.Parse(srv.URL())
	x := outbound.NewExecutor(outbound.ExecutorOptions{LookupNetIP: fakeDNS(map[string]string{"inner.partner.example": "127.0.0.1"})})
	t.Cleanup(x.Close)
	mat := execMaterial(p, "v1", func(c *tls.Config) { c.ServerName = "localhost" })
	target := "https://inner.partner.example:" + u.Port() + "/echo"
	explicit := &catalog.Connection{BaseURL: "https://localhost:" + u.Port() + "/", Profile: "p", AllowHosts: []string{"inner.partner.example:" + u.Port()}}
	loose := &catalog.Connection{BaseURL: "https://localhost:" + u.Port() + "/", Profile: "p", AllowHosts: []string{"*.partner.example:" + u.Port()}}
	c1 := restCall(t, jobs.Call{URL: target})
	c1.Connection = "explicit"
	if out := x.Attempt(context.Background(), c1, explicit, mat); out.Result.Status != 200 {
		t.Fatalf("explicit connection: %+v", out.Result.Error)
	}
	c2 := restCall(t, jobs.Call{URL: target})
	c2.Connection = "loose"
	wantError(t, x.Attempt(context.Background(), c2, loose, mat), jobs.CodeHostNotAllowed)
}
