package jobs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

func TestDecodeCallDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, json, subject string
		kind, method        string
		idempotent          bool
		conn                string
	}{
		{"ok/rest-get-from-subject", `{"id":"a"}`, "partner", jobs.KindREST, "GET", true, "partner"},
		{"ok/soap-defaults-to-post", `{"id":"a","soap":{"body":"<x/>"}}`, "partner", jobs.KindSOAP, "POST", false, "partner"},
		{"ok/lower-case-method", `{"id":"a","method":"put"}`, "p", jobs.KindREST, "PUT", true, "p"},
		{"ok/post-not-idempotent", `{"id":"a","method":"POST"}`, "p", jobs.KindREST, "POST", false, "p"},
		{"ok/post-declared-idempotent", `{"id":"a","method":"POST","idempotent":true}`, "p", jobs.KindREST, "POST", true, "p"},
		{"ok/connection-in-body", `{"id":"a:b.c-d_1","connection":"c1"}`, "", jobs.KindREST, "GET", true, "c1"},
		{"ok/soap-operation", `{"id":"a","soap":{"operation":"Orders/OrdersSoap12/PlaceOrder","body":"<x/>"}}`, "p", jobs.KindSOAP, "POST", false, "p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := jobs.DecodeCall([]byte(tc.json), tc.subject)
			if err != nil {
				t.Fatal(err)
			}
			if c.Kind != tc.kind || c.Method != tc.method || c.IsIdempotent() != tc.idempotent || c.Connection != tc.conn {
				t.Errorf("got kind=%s method=%s idempotent=%v conn=%s", c.Kind, c.Method, c.IsIdempotent(), c.Connection)
			}
			// With an operation the version is the WSDL port's, so it
			// stays empty until the worker reads the WSDL.
			if c.SOAP != nil && c.SOAP.Operation == "" && c.SOAP.Version != jobs.SOAP11 {
				t.Errorf("soap version default = %q", c.SOAP.Version)
			}
			if c.SOAP != nil && c.SOAP.Operation != "" && c.SOAP.Version != "" {
				t.Errorf("soap version of an operation call = %q, want empty", c.SOAP.Version)
			}
		})
	}
}

func TestDecodeCallRejects(t *testing.T) {
	big := `{"id":"a","body":"` + strings.Repeat("x", jobs.MaxCallBytes) + `"}`
	manyHeaders := `{"id":"a","headers":{"X":[` + strings.TrimSuffix(strings.Repeat(`"v",`, jobs.MaxHeaders+1), ",") + `]}}`
	hugeHeader := `{"id":"a","headers":{"X":["` + strings.Repeat("v", jobs.MaxHeaderBytes) + `"]}}`
	longPath := `{"id":"a","path":"` + strings.Repeat("p", jobs.MaxURLBytes+1) + `"}`
	for _, tc := range []struct{ name, json, subject, says string }{
		{"fail/not-json", `{`, "p", "not valid JSON"},
		{"fail/array", `[]`, "p", "must be"},
		{"fail/two-objects", `{"id":"a"}{"id":"b"}`, "p", "not valid JSON"},
		{"fail/wrong-type", `{"id":1}`, "p", `field "id"`},
		{"fail/no-id", `{}`, "p", "no id"},
		{"fail/bad-id", `{"id":"has space"}`, "p", "call id"},
		{"fail/id-too-long", `{"id":"` + strings.Repeat("a", 129) + `"}`, "p", "call id"},
		{"fail/no-connection", `{"id":"a"}`, "", "names no connection"},
		{"fail/connection-disagrees-with-subject", `{"id":"a","connection":"other"}`, "p", "must agree"},
		{"fail/bad-connection-name", `{"id":"a","connection":"a.b"}`, "", "connection name"},
		{"fail/bad-kind", `{"id":"a","kind":"grpc"}`, "p", "kind must be"},
		{"fail/rest-with-soap", `{"id":"a","kind":"rest","soap":{"body":"<a/>"}}`, "p", "drop one"},
		{"fail/soap-without-soap", `{"id":"a","kind":"soap"}`, "p", "soap.body"},
		{"fail/soap-version", `{"id":"a","soap":{"version":"2.0","body":"<a/>"}}`, "p", "soap.version"},
		{"fail/soap-with-body", `{"id":"a","soap":{"body":"<a/>"},"body":"x"}`, "p", "drop body"},
		{"fail/soap-operation-and-action", `{"id":"a","soap":{"operation":"Add","action":"Add","body":"<a/>"}}`, "p", "not both"},
		{"fail/soap-operation-chars", `{"id":"a","soap":{"operation":"Add\"><x","body":"<a/>"}}`, "p", "soap.operation must be"},
		{"fail/bad-method", `{"id":"a","method":"G ET"}`, "p", "method"},
		{"fail/both-bodies", `{"id":"a","body":"x","body_base64":"eA=="}`, "p", "both set"},
		{"fail/path-and-url", `{"id":"a","path":"x","url":"https://h/"}`, "p", "both set"},
		{"fail/http-url", `{"id":"a","url":"http://h/"}`, "p", "https"},
		{"fail/relative-url", `{"id":"a","url":"/x"}`, "p", "absolute"},
		{"fail/url-userinfo", `{"id":"a","url":"https://u:p@h/"}`, "p", "user info"},
		{"fail/absolute-path", `{"id":"a","path":"https://evil/"}`, "p", "relative"},
		{"fail/header-crlf", `{"id":"a","headers":{"X":["a\r\nInjected: 1"]}}`, "p", "control character U+000D"},
		{"fail/header-soh", `{"id":"a","headers":{"X":["a\u0001b"]}}`, "p", "control character U+0001"},
		{"fail/header-del", `{"id":"a","headers":{"X":["a\u007fb"]}}`, "p", "control character U+007F"},
		{"fail/header-host", `{"id":"a","headers":{"host":["db.internal"]}}`, "p", `header "host" cannot be set`},
		{"fail/header-content-length", `{"id":"a","headers":{"Content-Length":["0"]}}`, "p", "frames the body"},
		{"fail/header-transfer-encoding", `{"id":"a","headers":{"Transfer-Encoding":["chunked"]}}`, "p", "frames the body"},
		{"fail/header-proxy-authorization", `{"id":"a","headers":{"Proxy-Authorization":["Basic eDp5"]}}`, "p", "proxy credentials"},
		{"fail/method-connect", `{"id":"a","method":"CONNECT","path":"db.internal:5432"}`, "p", "CONNECT is not allowed"},
		{"fail/method-trace", `{"id":"a","method":"trace"}`, "p", "TRACE is not allowed"},
		{"fail/duplicate-id", `{"id":"a","id":"b"}`, "p", `member "id" appears twice in the call`},
		{"fail/id-in-other-case", `{"id":"a","ID":"b"}`, "p", `member "ID" of the call must be spelled "id"`},
		{"fail/only-upper-case", `{"ID":"a","path":"x"}`, "p", `must be spelled "id"`},
		{"fail/duplicate-header", `{"id":"a","headers":{"X":["1"],"X":["2"]}}`, "p", `member "X" appears twice in "headers"`},
		{"fail/soap-member-case", `{"id":"a","soap":{"body":"<a/>","Body":"<b/>"}}`, "p", `member "Body" of "soap" must be spelled "body"`},
		{"fail/duplicate-escaped", `{"id":"a","\u0069d":"b"}`, "p", `member "id" appears twice`},
		{"fail/long-s-fold", `{"id":"a","header\u017f":{"X":["1"]}}`, "p", `must be spelled "headers"`},
		{"fail/duplicate-in-unknown-member", `{"id":"a","x":{"k":1,"k":2}}`, "p", "appears twice"},
		{"fail/nested-too-deep", `{"id":"a","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "p", "nests deeper"},
		{"fail/path-dot-dot", `{"id":"a","path":"tenantA/../../admin/users"}`, "p", `path segment ".." is a dot-segment`},
		{"fail/path-encoded-dot-dot", `{"id":"a","path":"tenantA/%2e%2e/%2E%2E/admin"}`, "p", "dot-segments"},
		{"fail/path-mixed-dot-dot", `{"id":"a","path":"a/.%2e/admin"}`, "p", "dot-segments"},
		{"fail/path-dot", `{"id":"a","path":"a/./b"}`, "p", "dot-segments"},
		{"fail/path-encoded-slash", `{"id":"a","path":"a/..%2fadmin"}`, "p", "behind an encoded slash"},
		{"fail/path-backslash", `{"id":"a","path":"a\\..\\admin"}`, "p", "or a backslash"},
		{"fail/path-java-params", `{"id":"a","path":"..;/B/admin"}`, "p", "dot-segment"},
		{"fail/path-java-params-encoded", `{"id":"a","path":"%2e%2e;x/B/admin"}`, "p", "dot-segment"},
		{"fail/path-double-encoded", `{"id":"a","path":"a/%252e%252e/admin"}`, "p", "percent-encoded twice"},
		{"fail/url-dot-dot", `{"id":"a","url":"https://h.example/tenants/A/../B/x"}`, "p", "dot-segment"},
		{"fail/url-ipv6-zone", `{"id":"a","url":"https://[::ffff:198.51.100.7%25.partner.example]/x"}`, "p", "IPv6 zone"},
		{"fail/header-x-original-url", `{"id":"a","headers":{"X-Original-URL":["/admin"]}}`, "p", "rewrites the path"},
		{"fail/header-method-override", `{"id":"a","headers":{"X-HTTP-Method-Override":["DELETE"]}}`, "p", "changes the method"},
		{"fail/invalid-utf8", "{\"id\":\"a\",\"query\":{\"k\xff\":[\"1\"],\"k\xfe\":[\"2\"]}}", "p", "not valid UTF-8"},
		{"fail/body-ref-member-case", `{"id":"a","body_ref":{"name":"billing/approved","NAME":"billing/other"}}`, "p", `member "NAME" of "body_ref" must be spelled "name"`},
		{"fail/path-encoded-backslash", `{"id":"a","path":"a/%5c..%5cadmin"}`, "p", "or a backslash"},
		{"fail/header-name", `{"id":"a","headers":{"Bad Name":["a"]}}`, "p", "field name"},
		{"fail/negative-timeout", `{"id":"a","timeout_ms":-1}`, "p", "timeout_ms"},
		{"fail/too-many-attempts", `{"id":"a","max_attempts":101}`, "p", "max_attempts"},
		{"fail/reply-to-wildcard", `{"id":"a","reply_to":"mtlsrelay.results.>"}`, "p", "reply_to"},
		{"fail/call-too-large", big, "p", "over the limit"},
		{"fail/too-many-header-values", manyHeaders, "p", "header values"},
		{"fail/headers-too-large", hugeHeader, "p", "headers add up"},
		{"fail/url-too-long", longPath, "p", "path, url and query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jobs.DecodeCall([]byte(tc.json), tc.subject)
			var je *jobs.Error
			if !errors.As(err, &je) || je.Code != jobs.CodeInvalidCall {
				t.Fatalf("err = %v, want invalid_call", err)
			}
			if !strings.Contains(je.Message, tc.says) {
				t.Errorf("message %q does not say %q", je.Message, tc.says)
			}
			if je.Retryable {
				t.Error("invalid_call must not be retryable")
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s := jobs.Subjects{}
	if got := s.ConnectionOf("mtlsrelay.calls.partner-a"); got != "partner-a" {
		t.Errorf("ConnectionOf(calls) = %q", got)
	}
	if got := s.ConnectionOf("mtlsrelay.rpc.b"); got != "b" {
		t.Errorf("ConnectionOf(rpc) = %q", got)
	}
	for subj, want := range map[string][2]string{
		"mtlsrelay.calls.partner-a":         {"", "partner-a"},
		"mtlsrelay.calls.billing.partner-a": {"billing", "partner-a"},
		"mtlsrelay.rpc.billing.partner-a":   {"billing", "partner-a"},
		"mtlsrelay.calls.a.b.c":             {"", "a.b.c"},
		"mtlsrelay.results.a":               {"", ""},
	} {
		if tenant, conn := s.Route(subj); tenant != want[0] || conn != want[1] {
			t.Errorf("Route(%q) = %q, %q; want %q, %q", subj, tenant, conn, want[0], want[1])
		}
	}
	if got := (jobs.Subjects{Prefix: "acme.relay"}).Calls("x"); got != "acme.relay.calls.x" {
		t.Errorf("prefixed Calls = %q", got)
	}
	for subj, reserved := range map[string]bool{
		"mtlsrelay.calls.a": true, "mtlsrelay.rpc.a": true, "mtlsrelay.dead.a": true,
		"mtlsrelay.results.a": false, "flows.a.results": false,
		"$KV.mtlsrelay_registry.connections.x": true, "$JS.API.STREAM.DELETE.X": true,
	} {
		if s.Reserved(subj) != reserved {
			t.Errorf("Reserved(%q) = %v", subj, !reserved)
		}
	}
	for subj, valid := range map[string]bool{
		"a.b": true, "_INBOX.x": true, "": false, "a..b": false, "a.*": false, "a.>": false, "a b": false, ".a": false,
	} {
		if jobs.ValidSubject(subj) != valid {
			t.Errorf("ValidSubject(%q) = %v", subj, !valid)
		}
	}
}

func TestErrorCodesAreStable(t *testing.T) {
	// SPEC.md's codes, spelled as flows match them; extensions may follow.
	spec := []string{"invalid_call", "unknown_connection", "unknown_profile", "host_not_allowed",
		"secret_unavailable", "keystore_invalid", "keystore_password_wrong", "client_cert_expired",
		"client_cert_not_yet_valid", "server_cert_untrusted", "server_name_mismatch",
		"client_cert_rejected", "tls_handshake_failed", "connect_failed", "timeout",
		"response_too_large", "http_status", "canceled", "internal"}
	codes := jobs.Codes()
	for i, want := range spec {
		if string(codes[i]) != want {
			t.Errorf("code %d = %q, want %q", i, codes[i], want)
		}
	}
	for _, c := range []jobs.Code{jobs.CodeSecretUnavailable, jobs.CodeConnectFailed, jobs.CodeTimeout, jobs.CodeHTTPStatus, jobs.CodeCircuitOpen} {
		if !c.Retryable() {
			t.Errorf("%s should be retryable", c)
		}
	}
	if jobs.CodeKeystoreInvalid.Retryable() || jobs.CodeOutcomeUnknown.Retryable() {
		t.Error("keystore_invalid and outcome_unknown must not be retryable")
	}
}

// CheckReply lets results go only under the results subjects and the
// configured inbox prefixes: a reply subject is where a flow could make
// the relay write with its own permissions.
func TestCheckReply(t *testing.T) {
	s := jobs.Subjects{}
	prefixes := []string{"_INBOX", "_INBOX_billing"}
	for subj, ok := range map[string]bool{
		"mtlsrelay.results.a":                       true,
		"mtlsrelay.results.billing.order-42":        true,
		"_INBOX.abc":                                true,
		"_INBOX_billing.x.y":                        true,
		"$KV.mtlsrelay_registry.connections.victim": false,
		"$KV.mtlsrelay_registry.profiles.victim":    false,
		"$KV.mtlsrelay_state.c1":                    false,
		"$JS.API.STREAM.DELETE.MTLSRELAY_CALLS":     false,
		"$O.mtlsrelay_bodies.C.x":                   false,
		"mtlsrelay.calls.partner-a":                 false,
		"mtlsrelay.rpc.partner-a":                   false,
		"mtlsrelay.dead.partner-a":                  false,
		"mtlsrelay.resultsX":                        false,
		"_INBOX":                                    false,
		"_INBOXevil.x":                              false,
		"_INBOX_other.x":                            false,
		"flows.a.results":                           false,
		"mtlsrelay.results.*":                       false,
		"mtlsrelay.results.>":                       false,
		"mtlsrelay.results..a":                      false,
	} {
		err := s.CheckReply(subj, "", prefixes, nil)
		if (err == nil) != ok {
			t.Errorf("CheckReply(%q) = %v; want allowed %v", subj, err, ok)
		}
		if err != nil && err.Code != jobs.CodeInvalidCall {
			t.Errorf("CheckReply(%q) code %s, want invalid_call", subj, err.Code)
		}
	}
	// With tenants: a tenant's results stay under its own subjects and
	// inboxes, and a v1 call cannot write under any tenant's.
	tenants := []string{"billing", "shipping"}
	for _, tc := range []struct {
		subj, tenant string
		ok           bool
	}{
		{"mtlsrelay.results.billing.order-42", "billing", true},
		{"_INBOX_billing.r1", "billing", true},
		{"_INBOX.r1", "billing", true},
		{"mtlsrelay.results.shipping.order-42", "billing", false},
		{"_INBOX_shipping.r1", "billing", false},
		{"mtlsrelay.results.order-42", "billing", false},
		{"mtlsrelay.results.billingX.order-42", "billing", false},
		{"mtlsrelay.results.order-42", "", true},
		{"mtlsrelay.results.billing.order-42", "", false},
		{"_INBOX_shipping.r1", "", false},
		{"_INBOX.r1", "", true},
	} {
		err := s.CheckReply(tc.subj, tc.tenant, []string{"_INBOX"}, tenants)
		if (err == nil) != tc.ok {
			t.Errorf("tenant %q: CheckReply(%q) = %v; want allowed %v", tc.tenant, tc.subj, err, tc.ok)
		}
	}
	for p, ok := range map[string]bool{"_INBOX": true, "_INBOX_billing": true, "$KV": false, "a.*": false, "": false} {
		if err := jobs.CheckReplyPrefix(p); (err == nil) != ok {
			t.Errorf("CheckReplyPrefix(%q) = %v; want ok %v", p, err, ok)
		}
	}
}

// BenchmarkDecodeCall measures decoding a typical call, and the share of
// it spent refusing ambiguous JSON (duplicate or case-folded members).
//
//	go test ./jobs -run '^$' -bench DecodeCall -benchmem
func BenchmarkDecodeCall(b *testing.B) {
	data := []byte(`{"id":"order-42","method":"POST","path":"orders/42","query":{"expand":["lines"]},` +
		`"headers":{"Content-Type":["application/json"],"X-Request-Id":["r-1"]},"body":"{\"qty\":3,\"sku\":\"A-1\"}",` +
		`"reply_to":"mtlsrelay.results.billing.order-42","metadata":{"flow":"billing"}}`)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jobs.DecodeCall(data, "partner"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("members-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := jobs.CheckMembers(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
