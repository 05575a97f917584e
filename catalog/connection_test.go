package catalog_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRequestURL(t *testing.T) {
	conn := &catalog.Connection{BaseURL: "https://api.partner.example/v1/", Profile: "p", AllowHosts: []string{"files.partner.example", "*.cdn.example", "pinned.example:8443"}}
	base := mustURL(t, conn.BaseURL)
	cases := []struct {
		name string
		call jobs.Call
		want string
		code jobs.Code
	}{
		{"ok/path-joined-with-one-slash", jobs.Call{Path: "/orders/42"}, "https://api.partner.example/v1/orders/42", ""},
		{"ok/path-without-slash", jobs.Call{Path: "orders"}, "https://api.partner.example/v1/orders", ""},
		{"ok/empty-path-is-base", jobs.Call{}, "https://api.partner.example/v1/", ""},
		{"ok/query-added-in-order", jobs.Call{Path: "q", Query: map[string][]string{"a": {"1", "2"}}}, "https://api.partner.example/v1/q?a=1&a=2", ""},
		{"ok/escaped-path-kept", jobs.Call{Path: "files/a%2Fb"}, "https://api.partner.example/v1/files/a%2Fb", ""},
		{"ok/url-on-allowed-host", jobs.Call{URL: "https://files.partner.example/x"}, "https://files.partner.example/x", ""},
		{"ok/url-on-wildcard-subdomain", jobs.Call{URL: "https://eu.cdn.example/x"}, "https://eu.cdn.example/x", ""},
		{"ok/url-on-pinned-port", jobs.Call{URL: "https://pinned.example:8443/x"}, "https://pinned.example:8443/x", ""},
		{"fail/url-on-other-host", jobs.Call{URL: "https://evil.example/x"}, "", jobs.CodeHostNotAllowed},
		{"fail/wildcard-does-not-match-apex", jobs.Call{URL: "https://cdn.example/x"}, "", jobs.CodeHostNotAllowed},
		{"fail/pinned-host-other-port", jobs.Call{URL: "https://pinned.example/x"}, "", jobs.CodeHostNotAllowed},
		{"fail/base-host-other-port", jobs.Call{URL: "https://api.partner.example:444/x"}, "", jobs.CodeHostNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			call := tc.call
			call.Connection = "partner"
			u, err := conn.RequestURL(&call, base)
			if tc.code != "" {
				if je := jobs.AsError(err); err == nil || je.Code != tc.code {
					t.Fatalf("err = %v, want code %s", err, tc.code)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("RequestURL = %v, %v; want %s", u, err, tc.want)
			}
		})
	}
	if base.String() != "https://api.partner.example/v1/" {
		t.Errorf("base_url was changed: %s", base)
	}
}

// A call adds to base_url's query and never replaces it: a parameter that
// base_url sets cannot be given again by the call's path or query.
func TestRequestURLKeepsBaseQuery(t *testing.T) {
	conn := &catalog.Connection{BaseURL: "https://api.partner.example/tenantA/?tenant=A&v=2", Profile: "p"}
	base := mustURL(t, conn.BaseURL)
	cases := []struct {
		name string
		call jobs.Call
		want string // "" means refused as invalid_call
	}{
		{"ok/base-query-kept", jobs.Call{Path: "orders"}, "https://api.partner.example/tenantA/orders?tenant=A&v=2"},
		{"ok/path-query-added", jobs.Call{Path: "orders?page=2"}, "https://api.partner.example/tenantA/orders?tenant=A&v=2&page=2"},
		{"ok/query-added", jobs.Call{Path: "orders", Query: map[string][]string{"page": {"3"}}}, "https://api.partner.example/tenantA/orders?tenant=A&v=2&page=3"},
		{"fail/path-replaces-query", jobs.Call{Path: "x?tenant=B"}, ""},
		{"fail/query-replaces-query", jobs.Call{Path: "x", Query: map[string][]string{"tenant": {"B"}}}, ""},
		{"fail/encoded-name-replaces-query", jobs.Call{Path: "x?%74enant=B"}, ""},
		{"fail/name-in-another-case-replaces-query", jobs.Call{Path: "x", Query: map[string][]string{"TENANT": {"B"}}}, ""},
		{"fail/url-on-base-host-replaces-query", jobs.Call{URL: "https://api.partner.example/tenantA/x?tenant=B"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			call := tc.call
			call.Connection = "partner"
			u, err := conn.RequestURL(&call, base)
			if tc.want == "" {
				if je := jobs.AsError(err); je == nil || je.Code != jobs.CodeInvalidCall || !strings.Contains(strings.ToLower(je.Message), `query parameter "tenant" is set by connection partner's base_url`) {
					t.Fatalf("RequestURL = %v, %v; want invalid_call naming tenant", u, err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("RequestURL = %v, %v; want %s", u, err, tc.want)
			}
		})
	}
}

// An allow_hosts entry without a port allows port 443 only, a wildcard
// among them; the base_url's own port stays allowed for its host alone.
func TestHostAllowedPorts(t *testing.T) {
	base := mustURL(t, "https://api.p.example:8443/v1/")
	cases := []struct {
		name  string
		allow string
		url   string
		want  bool
	}{
		{"ok/wildcard-without-port-on-443", "*.p.example", "https://a.p.example:443/x", true},
		{"ok/wildcard-without-port-url-without-port", "*.p.example", "https://a.p.example/x", true},
		{"fail/wildcard-without-port-on-8443", "*.p.example", "https://a.p.example:8443/x", false},
		{"fail/wildcard-without-port-on-22", "*.p.example", "https://a.p.example:22/x", false},
		{"ok/wildcard-with-port", "*.p.example:8443", "https://a.p.example:8443/x", true},
		{"fail/wildcard-with-port-on-443", "*.p.example:8443", "https://a.p.example/x", false},
		{"fail/wildcard-with-port-on-22", "*.p.example:8443", "https://a.p.example:22/x", false},
		{"ok/host-without-port-on-443", "files.p.example", "https://files.p.example/x", true},
		{"fail/host-without-port-on-8080", "files.p.example", "https://files.p.example:8080/x", false},
		{"fail/address-without-port-on-22", "10.1.2.3", "https://10.1.2.3:22/x", false},
		{"ok/ipv6-address-with-port", "[2001:db8::1]:8443", "https://[2001:db8::1]:8443/x", true},
		{"fail/ipv6-address-without-port-on-8443", "2001:db8::1", "https://[2001:db8::1]:8443/x", false},
		{"ok/base-host-and-port", "", "https://api.p.example:8443/x", true},
		{"fail/base-host-other-port", "", "https://api.p.example/x", false},
		{"ok/entry-adds-443-to-base-host", "api.p.example", "https://api.p.example/x", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := &catalog.Connection{BaseURL: base.String(), Profile: "p"}
			if tc.allow != "" {
				conn.AllowHosts = []string{tc.allow}
			}
			if got := conn.HostAllowed(mustURL(t, tc.url), base); got != tc.want {
				t.Fatalf("allow_hosts %q: HostAllowed(%s) = %v, want %v", conn.AllowHosts, tc.url, got, tc.want)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	cases := []struct {
		conn         catalog.Connection
		wantFailures int
		wantCooldown time.Duration
	}{
		{catalog.Connection{}, catalog.DefaultBreakerFailures, catalog.DefaultBreakerCooldown},
		{catalog.Connection{BreakerFailures: -1}, 0, catalog.DefaultBreakerCooldown},
		{catalog.Connection{BreakerFailures: 3, BreakerCooldown: catalog.Duration(time.Second)}, 3, time.Second},
	}
	for _, tc := range cases {
		if f, c := tc.conn.Breaker(); f != tc.wantFailures || c != tc.wantCooldown {
			t.Errorf("%+v: Breaker() = %d, %s; want %d, %s", tc.conn, f, c, tc.wantFailures, tc.wantCooldown)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		conn catalog.Connection
		want string // "" for valid
	}{
		{"ok", catalog.Connection{BaseURL: "https://h.example/", Profile: "p"}, ""},
		{"fail/http", catalog.Connection{BaseURL: "http://h.example/", Profile: "p"}, "must use https"},
		{"fail/relative", catalog.Connection{BaseURL: "/v1", Profile: "p"}, "absolute https URL"},
		{"fail/no-profile", catalog.Connection{BaseURL: "https://h.example/"}, "profile is required"},
		{"fail/attempts", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", MaxAttempts: jobs.MaxAttemptsLimit + 1}, "max_attempts"},
		{"fail/allow-host-with-path", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"h.example/x"}}, "allow_hosts entry"},
		{"ok/allow-hosts-forms", catalog.Connection{BaseURL: "https://h.example/", Profile: "p",
			AllowHosts: []string{"h.example", "h.example:8443", "*.p.example", "*.p.example:8443", "10.0.0.1", "10.0.0.1:8443", "::1", "[::1]", "[::1]:8443"}}, ""},
		{"fail/allow-host-wildcard-port", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"*.p.example:*"}}, "port must be a number"},
		{"fail/allow-host-named-port", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"h.example:https"}}, "port must be a number"},
		{"fail/allow-host-port-out-of-range", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"h.example:65536"}}, "port must be a number"},
		{"fail/allow-host-port-with-zero", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"h.example:0443"}}, "port must be a number"},
		{"fail/allow-host-empty-port", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"h.example:"}}, "port must be a number"},
		{"fail/allow-host-bare-wildcard", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"*."}}, "allow_hosts entry"},
		{"fail/allow-host-star", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"*"}}, "allow_hosts entry"},
		{"fail/allow-host-inner-wildcard", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{"a.*.example"}}, "allow_hosts entry"},
		{"fail/allow-host-empty", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", AllowHosts: []string{""}}, "allow_hosts entry"},
		{"ok/wsdl-relative", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "?wsdl"}, ""},
		{"ok/wsdl-file", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "file:/etc/mtlsrelay/h.wsdl"}, ""},
		{"ok/wsdl-allowed-host", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "https://docs.h.example/h.wsdl", AllowHosts: []string{"docs.h.example"}}, ""},
		{"fail/wsdl-http", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "http://h.example/ws?wsdl"}, "https only"},
		{"fail/wsdl-other-host", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "https://evil.example/x.wsdl"}, "not allowed"},
		{"fail/wsdl-relative-file", catalog.Connection{BaseURL: "https://h.example/ws", Profile: "p", WSDL: "file:h.wsdl"}, "absolute path"},
		{"ok/wss", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", SOAP: &secrets.SOAPSettings{WSS: &secrets.WSS{TimestampTTL: "2m", SignHeaders: []string{"{urn:a}To"}}}}, ""},
		{"fail/wss-ttl", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", SOAP: &secrets.SOAPSettings{WSS: &secrets.WSS{TimestampTTL: "forever"}}}, "timestamp_ttl"},
		{"fail/wss-header-name", catalog.Connection{BaseURL: "https://h.example/", Profile: "p", SOAP: &secrets.SOAPSettings{WSS: &secrets.WSS{SignHeaders: []string{"wsa:To"}}}}, "{namespace}local"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.conn.Validate("c1")
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// A profile's soap.wss applies to its connections that set none; a
// connection's own replaces it, and the catalog's connection is not changed.
func TestLookupWSS(t *testing.T) {
	profWSS := &secrets.WSS{TimestampTTL: "1m"}
	connWSS := &secrets.WSS{TimestampTTL: "2m"}
	cat := &catalog.Catalog{
		Profiles: map[string]secrets.Profile{"p": {Keystore: "file:/k.p12", SOAP: &secrets.SOAPSettings{WSS: profWSS}}, "plain": {Keystore: "file:/k.p12"}},
		Connections: map[string]catalog.Connection{
			"inherits": {BaseURL: "https://h.example/", Profile: "p", WSDL: "?wsdl"},
			"own":      {BaseURL: "https://h.example/", Profile: "p", SOAP: &secrets.SOAPSettings{WSS: connWSS}},
			"none":     {BaseURL: "https://h.example/", Profile: "plain"},
		},
	}
	for name, want := range map[string]*secrets.WSS{"inherits": profWSS, "own": connWSS, "none": nil} {
		conn, _, err := cat.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		var got *secrets.WSS
		if conn.SOAP != nil {
			got = conn.SOAP.WSS
		}
		if got != want {
			t.Errorf("%s: wss %+v, want %+v", name, got, want)
		}
	}
	if cat.Connections["inherits"].SOAP != nil {
		t.Error("Lookup changed the catalog's connection")
	}
}

func TestLookup(t *testing.T) {
	cat := &catalog.Catalog{
		Connections: map[string]catalog.Connection{"a": {BaseURL: "https://h.example/", Profile: "p"}, "orphan": {BaseURL: "https://h.example/", Profile: "missing"}},
	}
	if _, _, err := cat.Lookup("nope"); jobs.AsError(err).Code != jobs.CodeUnknownConnection {
		t.Errorf("unknown connection: %v", err)
	}
	if _, _, err := cat.Lookup("orphan"); jobs.AsError(err).Code != jobs.CodeUnknownProfile {
		t.Errorf("unknown profile: %v", err)
	}
}

// A url on base_url's own host is a path by another name: it stays under
// base_url's path; another allowed host's url goes where it says. A host
// with an IPv6 zone matches no entry.
func TestRequestURLOnBaseHost(t *testing.T) {
	conn := &catalog.Connection{BaseURL: "https://api.partner.example/tenants/A/", Profile: "p", AllowHosts: []string{"*.partner.example", "files.example"}}
	base := mustURL(t, conn.BaseURL)
	for _, tc := range []struct {
		url  string
		code jobs.Code // "" means allowed
	}{
		{"https://api.partner.example/tenants/A/x", ""},
		{"https://api.partner.example/tenants/A", ""},
		{"https://api.partner.example/tenants/B/admin", jobs.CodeInvalidCall},
		{"https://api.partner.example/tenants/AB", jobs.CodeInvalidCall},
		{"https://files.example/anything", ""},
		{"https://[::ffff:198.51.100.7%25.partner.example]/x", jobs.CodeHostNotAllowed},
	} {
		call := jobs.Call{URL: tc.url, Connection: "partner"}
		_, err := conn.RequestURL(&call, base)
		if got := jobs.CodeOf(err); got != tc.code {
			t.Errorf("%s: code %q (%v), want %q", tc.url, got, err, tc.code)
		}
	}
}
