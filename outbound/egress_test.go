package outbound_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"

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
		{name: "ok/allow-hosts-names-host", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p", AllowHosts: []string{"rebind.partner.example"}},
			url: "https://rebind.partner.example:" + port + "/echo"},
		{name: "fail/wildcard-is-not-explicit", conn: catalog.Connection{BaseURL: "https://localhost:" + port + "/", Profile: "p", AllowHosts: []string{"*.partner.example"}},
			url: "https://rebind.partner.example:" + port + "/echo", want: jobs.CodeHostNotAllowed, inMsg: "a loopback address"},
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
	explicit := &catalog.Connection{BaseURL: "https://localhost:" + u.Port() + "/", Profile: "p", AllowHosts: []string{"inner.partner.example"}}
	loose := &catalog.Connection{BaseURL: "https://localhost:" + u.Port() + "/", Profile: "p", AllowHosts: []string{"*.partner.example"}}
	c1 := restCall(t, jobs.Call{URL: target})
	c1.Connection = "explicit"
	if out := x.Attempt(context.Background(), c1, explicit, mat); out.Result.Status != 200 {
		t.Fatalf("explicit connection: %+v", out.Result.Error)
	}
	c2 := restCall(t, jobs.Call{URL: target})
	c2.Connection = "loose"
	wantError(t, x.Attempt(context.Background(), c2, loose, mat), jobs.CodeHostNotAllowed)
}
