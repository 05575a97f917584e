package outbound_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// execPKI is a server CA, a client CA, a server certificate for localhost
// and 127.0.0.1, and a client certificate.
type execPKI struct {
	serverCA, clientCA *pki.CA
	server, client     *pki.Leaf
}

func newExecPKI(t testing.TB) *execPKI {
	t.Helper()
	p := &execPKI{}
	var err error
	if p.serverCA, err = pki.NewCA("Partner Server CA"); err != nil {
		t.Fatal(err)
	}
	if p.clientCA, err = pki.NewCA("Relay Client CA"); err != nil {
		t.Fatal(err)
	}
	if p.server, err = p.serverCA.Issue(pki.LeafOptions{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}); err != nil {
		t.Fatal(err)
	}
	if p.client, err = p.clientCA.Issue(pki.LeafOptions{CommonName: "relay-client", Organization: "mtlsrelay tests", Client: true}); err != nil {
		t.Fatal(err)
	}
	return p
}

// startExecPartner starts a partner server trusting p's client CA; mod may
// change its options.
func startExecPartner(t testing.TB, p *execPKI, mod func(*partner.Options)) *partner.Server {
	t.Helper()
	opts := partner.Options{Certificate: p.server.TLSCertificate(), ClientCAs: p.clientCA.Pool()}
	if mod != nil {
		mod(&opts)
	}
	srv, err := partner.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// execMaterial returns the TLS material of profile "partner-a" presenting
// p's client certificate and trusting p's server CA, as package secrets
// builds it; mod may change the config.
func execMaterial(p *execPKI, version string, mod func(*tls.Config)) *secrets.Material {
	cfg := &tls.Config{
		Certificates:       []tls.Certificate{p.client.TLSCertificate()},
		RootCAs:            p.serverCA.Pool(),
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(16),
	}
	if mod != nil {
		mod(cfg)
	}
	return &secrets.Material{Profile: "partner-a", Config: cfg, Leaf: p.client.Cert, Version: version}
}

func newExecutor(t testing.TB) *outbound.Executor {
	x := outbound.NewExecutor(outbound.ExecutorOptions{MaxIdleConnsPerHost: 8})
	t.Cleanup(x.Close)
	return x
}

// restCall returns a normalized call on connection "partner-a-api".
func restCall(t testing.TB, c jobs.Call) *jobs.Call {
	t.Helper()
	if c.ID == "" {
		c.ID = "call-1"
	}
	if err := c.Normalize("partner-a-api"); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	return &c
}

func decodeEcho(t *testing.T, res *jobs.Result) partner.EchoResponse {
	t.Helper()
	var e partner.EchoResponse
	if err := json.Unmarshal(res.ResponseBody(), &e); err != nil {
		t.Fatalf("echo body is not JSON: %v (status %d, body %q)", err, res.Status, res.Body)
	}
	return e
}

func wantError(t *testing.T, out outbound.Outcome, code jobs.Code) {
	t.Helper()
	res := out.Result
	if res.Error == nil {
		t.Fatalf("error = nil (status %d), want %s", res.Status, code)
	}
	if res.Error.Code != code {
		t.Fatalf("error = %v, want code %s", res.Error, code)
	}
	if res.Error.Retryable != code.Retryable() {
		t.Fatalf("retryable = %v, want %v", res.Error.Retryable, code.Retryable())
	}
	if res.OK {
		t.Fatal("ok = true on a failed attempt")
	}
	if res.Error.Message == "" {
		t.Fatal("error message is empty")
	}
}

func TestAttemptREST(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	mat := execMaterial(p, "v1", nil)
	port := srv.URL()[strings.LastIndex(srv.URL(), ":")+1:]
	conn := &catalog.Connection{BaseURL: srv.URL() + "/", Profile: "partner-a", AllowHosts: []string{"localhost:" + port}, MaxResponseBytes: 1000}
	binary := []byte{0xff, 0x00, 0xfe, 0x80}
	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)

	tests := []struct {
		name  string
		call  jobs.Call
		check func(t *testing.T, out outbound.Outcome)
	}{
		{
			name: "ok/rest-get-query",
			call: jobs.Call{Path: "/echo?fixed=1", Query: map[string][]string{"a": {"1", "2"}, "b": {"x y"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				e := decodeEcho(t, out.Result)
				q, _ := url.ParseQuery(e.RawQuery)
				if e.Method != "GET" || !slices.Equal(q["a"], []string{"1", "2"}) || q.Get("b") != "x y" || q.Get("fixed") != "1" {
					t.Fatalf("server saw %s ?%s", e.Method, e.RawQuery)
				}
			},
		},
		{
			name: "ok/rest-post-body",
			call: jobs.Call{Method: "POST", Path: "echo", Body: `{"order":42}`, Headers: map[string][]string{"Content-Type": {"application/json"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				e := decodeEcho(t, out.Result)
				if e.Method != "POST" || e.Body != `{"order":42}` || e.ContentLength != 12 || e.Headers["Content-Type"][0] != "application/json" {
					t.Fatalf("server saw %s body %q length %d headers %v", e.Method, e.Body, e.ContentLength, e.Headers)
				}
			},
		},
		{
			name: "ok/rest-put-binary-body",
			call: jobs.Call{Method: "PUT", Path: "/echo", BodyBase64: binary},
			check: func(t *testing.T, out outbound.Outcome) {
				e := decodeEcho(t, out.Result)
				if e.Method != "PUT" || string(e.BodyBase64) != string(binary) || e.ContentLength != int64(len(binary)) {
					t.Fatalf("server saw %s body %x length %d", e.Method, e.BodyBase64, e.ContentLength)
				}
			},
		},
		{
			name: "ok/rest-delete-no-body",
			call: jobs.Call{Method: "DELETE", Path: "/echo"},
			check: func(t *testing.T, out outbound.Outcome) {
				if e := decodeEcho(t, out.Result); e.Method != "DELETE" || e.Body != "" {
					t.Fatalf("server saw %s body %q", e.Method, e.Body)
				}
			},
		},
		{
			name: "ok/rest-duplicate-headers-in-order",
			call: jobs.Call{Path: "/echo", Headers: map[string][]string{"x-multi": {"one", "two", "three"}, "Accept": {"application/json"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				e := decodeEcho(t, out.Result)
				if got := e.Headers["X-Multi"]; !slices.Equal(got, []string{"one", "two", "three"}) {
					t.Fatalf("X-Multi = %q", got)
				}
				if e.Headers["User-Agent"][0] != outbound.DefaultUserAgent {
					t.Fatalf("User-Agent = %q", e.Headers["User-Agent"])
				}
			},
		},
		{
			name: "ok/rest-absolute-url-allowed",
			call: jobs.Call{URL: "https://localhost:" + port + "/echo"},
			check: func(t *testing.T, out outbound.Outcome) {
				if e := decodeEcho(t, out.Result); !strings.HasPrefix(e.Host, "localhost:") {
					t.Fatalf("server saw host %q", e.Host)
				}
			},
		},
		{
			name: "fail/host-not-allowed",
			call: jobs.Call{URL: "https://elsewhere.example:" + port + "/echo"},
			check: func(t *testing.T, out outbound.Outcome) {
				wantError(t, out, jobs.CodeHostNotAllowed)
				if out.Sent {
					t.Fatal("sent = true for a call refused before dialing")
				}
			},
		},
		{
			name: "ok/status-404-is-a-result",
			call: jobs.Call{Path: "/status/404"},
			check: func(t *testing.T, out outbound.Outcome) {
				if res := out.Result; res.Error != nil || res.Status != 404 || res.OK || res.Body != "status 404\n" {
					t.Fatalf("result = status %d ok %v error %v body %q", res.Status, res.OK, res.Error, res.Body)
				}
			},
		},
		{
			name: "ok/status-503-retry-after-seconds",
			call: jobs.Call{Path: "/status/503", Query: map[string][]string{"retry_after": {"7"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				if res := out.Result; res.Error != nil || res.Status != 503 || res.OK || out.RetryAfter != 7*time.Second {
					t.Fatalf("result = status %d ok %v error %v retry after %v", res.Status, res.OK, res.Error, out.RetryAfter)
				}
			},
		},
		{
			name: "ok/status-429-retry-after-date",
			call: jobs.Call{Path: "/status/429", Query: map[string][]string{"retry_after": {httpDate}}},
			check: func(t *testing.T, out outbound.Outcome) {
				if out.Result.Status != 429 || out.RetryAfter <= 0 || out.RetryAfter > 90*time.Second {
					t.Fatalf("status %d retry after %v, want (0, 90s]", out.Result.Status, out.RetryAfter)
				}
			},
		},
		{
			name: "ok/binary-response",
			call: jobs.Call{Path: "/binary"},
			check: func(t *testing.T, out outbound.Outcome) {
				if res := out.Result; !res.OK || res.Body != "" || string(res.BodyBase64) != string(partner.BinaryBody) {
					t.Fatalf("body %q base64 %x", res.Body, res.BodyBase64)
				}
			},
		},
		{
			name: "ok/response-at-limit",
			call: jobs.Call{Path: "/bytes", Query: map[string][]string{"n": {"1000"}, "chunked": {"1"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				if res := out.Result; !res.OK || len(res.Body) != 1000 {
					t.Fatalf("ok %v error %v body length %d", res.OK, res.Error, len(res.Body))
				}
			},
		},
		{
			name: "ok/rest-head-ignores-content-length",
			call: jobs.Call{Method: "HEAD", Path: "/bytes", Query: map[string][]string{"n": {"5000"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				if res := out.Result; !res.OK || res.Status != 200 || res.Body != "" || res.Headers["Content-Length"][0] != "5000" {
					t.Fatalf("ok %v status %d error %v body %q headers %v", res.OK, res.Status, res.Error, res.Body, res.Headers)
				}
			},
		},
		{
			name: "fail/response-too-large-content-length",
			call: jobs.Call{Path: "/bytes", Query: map[string][]string{"n": {"1001"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				wantError(t, out, jobs.CodeResponseTooLarge)
				if out.Result.Status != 200 || out.Result.Body != "" {
					t.Fatalf("status %d body length %d, want 200 and no body", out.Result.Status, len(out.Result.Body))
				}
			},
		},
		{
			name: "fail/response-too-large-chunked",
			call: jobs.Call{Path: "/bytes", Query: map[string][]string{"n": {"50000"}, "chunked": {"1"}}},
			check: func(t *testing.T, out outbound.Outcome) {
				wantError(t, out, jobs.CodeResponseTooLarge)
				if out.Result.Status != 200 {
					t.Fatalf("status %d, want 200 kept", out.Result.Status)
				}
			},
		},
		{
			name: "fail/timeout-slow-response",
			call: jobs.Call{Path: "/slow", Query: map[string][]string{"ms": {"30000"}}, TimeoutMS: 150},
			check: func(t *testing.T, out outbound.Outcome) {
				wantError(t, out, jobs.CodeTimeout)
				if !out.Result.Error.Retryable || !out.Sent {
					t.Fatalf("retryable %v sent %v, want both", out.Result.Error.Retryable, out.Sent)
				}
				if !strings.Contains(out.Result.Error.Message, "waiting for the response") {
					t.Fatalf("message %q does not say where it timed out", out.Result.Error.Message)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			call := restCall(t, tc.call)
			call.Metadata = map[string]string{"flow": "f-1"}
			out := x.Attempt(context.Background(), call, conn, mat)
			res := out.Result
			if res == nil {
				t.Fatal("no result")
			}
			if res.ID != call.ID || res.Connection != "partner-a-api" || res.Metadata["flow"] != "f-1" || res.CompletedAt.IsZero() {
				t.Fatalf("result does not echo the call: %+v", res)
			}
			if res.ClientCert == nil || res.ClientCert.Serial != p.client.SerialHex() || !strings.Contains(res.ClientCert.Subject, "relay-client") {
				t.Fatalf("client_cert = %+v", res.ClientCert)
			}
			tc.check(t, out)
		})
	}
}

func TestAttemptEchoesClientCertificate(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	out := x.Attempt(context.Background(), restCall(t, jobs.Call{Path: "/echo"}), &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}, execMaterial(p, "v1", nil))
	if !out.Result.OK {
		t.Fatalf("result: %+v", out.Result)
	}
	e := decodeEcho(t, out.Result)
	if e.ClientCert == nil || e.ClientCert.Serial != p.client.SerialHex() || e.ClientCert.Subject != p.client.Cert.Subject.String() {
		t.Fatalf("server saw client cert %+v", e.ClientCert)
	}
	if out.Result.ClientCert.Subject != e.ClientCert.Subject || !out.Result.ClientCert.NotAfter.Equal(p.client.Cert.NotAfter) {
		t.Fatalf("result client_cert %+v differs from the one presented", out.Result.ClientCert)
	}
	tm := out.Result.Timing
	if tm.ConnectMS <= 0 || tm.TLSMS <= 0 || tm.TTFBMS <= 0 || tm.TotalMS < tm.TTFBMS {
		t.Fatalf("timing of a first call = %+v, want connect, tls, ttfb and total", tm)
	}
}

func TestAttemptChecksBeforeDialing(t *testing.T) {
	p := newExecPKI(t)
	x := newExecutor(t)
	// Nothing listens there: a check that dialed would fail differently.
	conn := &catalog.Connection{BaseURL: "https://127.0.0.1:1", Profile: "partner-a"}
	now := time.Now()
	expired, err := p.clientCA.Issue(pki.LeafOptions{CommonName: "old", Client: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	future, err := p.clientCA.Issue(pki.LeafOptions{CommonName: "new", Client: true, NotBefore: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	withLeaf := func(l *pki.Leaf) *secrets.Material {
		m := execMaterial(p, "v1", func(c *tls.Config) { c.Certificates = []tls.Certificate{l.TLSCertificate()} })
		m.Leaf = l.Cert
		return m
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		call jobs.Call
		mat  *secrets.Material
		want jobs.Code
	}{
		{name: "fail/client-cert-expired", call: jobs.Call{Path: "/echo"}, mat: withLeaf(expired), want: jobs.CodeClientCertExpired},
		{name: "fail/client-cert-not-yet-valid", call: jobs.Call{Path: "/echo"}, mat: withLeaf(future), want: jobs.CodeClientCertNotYetValid},
		{name: "fail/soap-body-not-xml", call: jobs.Call{SOAP: &jobs.SOAP{Body: "<a><b></a>"}}, mat: execMaterial(p, "v1", nil), want: jobs.CodeInvalidCall},
		{name: "fail/soap-header-not-xml", call: jobs.Call{SOAP: &jobs.SOAP{Header: "<h>", Body: "<a/>"}}, mat: execMaterial(p, "v1", nil), want: jobs.CodeInvalidCall},
		{name: "fail/soap-body-doctype", call: jobs.Call{SOAP: &jobs.SOAP{Body: `<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>`}}, mat: execMaterial(p, "v1", nil), want: jobs.CodeInvalidCall},
		{name: "fail/soap-action-quote", call: jobs.Call{SOAP: &jobs.SOAP{Action: `urn:"x"`, Body: "<a/>"}}, mat: execMaterial(p, "v1", nil), want: jobs.CodeInvalidCall},
		{name: "fail/canceled-before-start", ctx: canceled, call: jobs.Call{Path: "/echo"}, mat: execMaterial(p, "v1", nil), want: jobs.CodeCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			out := x.Attempt(ctx, restCall(t, tc.call), conn, tc.mat)
			wantError(t, out, tc.want)
			if out.Sent {
				t.Fatal("sent = true for an attempt that never reached the server")
			}
		})
	}
}

func TestParseRetryAfterStatusesOnly(t *testing.T) {
	p := newExecPKI(t)
	srv := startExecPartner(t, p, nil)
	x := newExecutor(t)
	conn := &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}
	for _, code := range []int{429, 500, 502, 503, 504} {
		t.Run("ok/status-"+strconv.Itoa(code), func(t *testing.T) {
			call := restCall(t, jobs.Call{Path: "/status/" + strconv.Itoa(code), Query: map[string][]string{"retry_after": {"3"}}})
			out := x.Attempt(context.Background(), call, conn, execMaterial(p, "v1", nil))
			if out.Result.Error != nil || out.Result.Status != code || out.Result.OK {
				t.Fatalf("status %d error %v ok %v", out.Result.Status, out.Result.Error, out.Result.OK)
			}
			want := time.Duration(0)
			if code == 429 || code == 503 {
				want = 3 * time.Second
			}
			if out.RetryAfter != want {
				t.Fatalf("retry after %v, want %v", out.RetryAfter, want)
			}
		})
	}
}

// coldExecutor is a partner speaking proto ("HTTP/2" or "HTTP/1.1") and an
// executor with no connection to it yet, with the connection and material
// to call it.
func coldExecutor(t *testing.T, proto string) (*partner.Server, *outbound.Executor, *catalog.Connection, *secrets.Material) {
	t.Helper()
	p := newExecPKI(t)
	srv := startExecPartner(t, p, func(o *partner.Options) { o.DisableHTTP2 = proto == "HTTP/1.1" })
	return srv, newExecutor(t), &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}, execMaterial(p, "v1", nil)
}

// A worker that starts with a backlog sends many calls to a partner it has
// no connection to yet. They must not each dial and make a full TLS
// handshake: one connection is made, and the others share it (HTTP/2) or
// resume its session (HTTP/1.1).
func TestFirstCallsShareOneHandshake(t *testing.T) {
	for _, proto := range []string{"HTTP/2", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			srv, x, conn, mat := coldExecutor(t, proto)
			const calls = 100
			var wg sync.WaitGroup
			errs := make(chan string, calls)
			for i := range calls {
				wg.Go(func() {
					call := restCall(t, jobs.Call{ID: "first-" + strconv.Itoa(i), Path: "/echo"})
					if out := x.Attempt(context.Background(), call, conn, mat); !out.Result.OK {
						errs <- fmt.Sprintf("call %d: %+v", i, out.Result.Error)
					}
				})
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			c := srv.Requests()
			if full := c.Handshakes - c.Resumed; full != 1 {
				t.Errorf("%d full TLS handshakes (%d connections, %d resumed) for %d simultaneous first calls; want 1", full, c.Connections, c.Resumed, calls)
			}
		})
	}
}

// The first call lets the others go as soon as its connection is up, not
// when its response is in: a slow first call does not hold back the calls
// behind it.
func TestSlowFirstCallDoesNotHoldOthers(t *testing.T) {
	for _, proto := range []string{"HTTP/2", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel() // each has its own partner and executor
			srv, x, conn, mat := coldExecutor(t, proto)
			var slowDone atomic.Bool
			slow := make(chan *jobs.Result, 1)
			go func() {
				out := x.Attempt(context.Background(), restCall(t, jobs.Call{ID: "slow", Path: "/slow?ms=3000"}), conn, mat)
				slowDone.Store(true)
				slow <- out.Result
			}()
			deadline := time.Now().Add(10 * time.Second)
			for srv.Requests().Routes["/slow"] == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the slow first call never reached the partner")
				}
				time.Sleep(5 * time.Millisecond)
			}
			var wg sync.WaitGroup
			for i := range 5 {
				wg.Go(func() {
					if out := x.Attempt(context.Background(), restCall(t, jobs.Call{ID: "quick-" + strconv.Itoa(i), Path: "/echo"}), conn, mat); !out.Result.OK {
						t.Errorf("quick call %d: %+v", i, out.Result.Error)
					}
				})
			}
			wg.Wait()
			if slowDone.Load() {
				t.Error("the quick calls finished only after the slow first call: they waited for its response")
			}
			if r := <-slow; !r.OK {
				t.Errorf("slow call: %+v", r.Error)
			}
		})
	}
}

// While a partner accepts connections but never completes a handshake, the
// calls waiting for the first connection do not queue behind one try after
// another until their deadline passes: when the first try fails, each makes
// its own and reports its own failure.
func TestFirstConnectionFailureLetsWaitersTry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var held sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close(); held.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			held.Go(func() { <-stop; c.Close() }) // silent: no ServerHello
		}
	}()
	x := outbound.NewExecutor(outbound.ExecutorOptions{TLSHandshakeTimeout: 300 * time.Millisecond})
	t.Cleanup(x.Close)
	conn := &catalog.Connection{BaseURL: "https://" + ln.Addr().String(), Profile: "partner-a", Timeout: catalog.Duration(2 * time.Second)}
	mat := execMaterial(newExecPKI(t), "v1", nil)

	// Ten calls at 300 ms per try would need 3 s one after another: the
	// last ones would reach their 2 s deadline waiting, without a try.
	const calls = 10
	var wg sync.WaitGroup
	results := make([]*jobs.Result, calls)
	for i := range calls {
		wg.Go(func() {
			results[i] = x.Attempt(context.Background(), restCall(t, jobs.Call{ID: "silent-" + strconv.Itoa(i), Path: "/echo"}), conn, mat).Result
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.Error == nil || r.Error.Code != jobs.CodeTimeout || !strings.Contains(r.Error.Message, outbound.PhaseTLS) {
			t.Errorf("call %d: %+v, want a timeout in the TLS handshake", i, r.Error)
		}
	}
	if n := accepted.Load(); n != calls {
		t.Errorf("the partner saw %d connections for %d calls: each call should make its own try once the first failed", n, calls)
	}
}

// A connection whose calls go to several allowed hosts gates each host's
// first connection: once the base URL's host is connected, a burst of
// first calls to a second host still makes one full handshake there.
func TestFirstCallsToSecondHostShareOneHandshake(t *testing.T) {
	for _, proto := range []string{"HTTP/2", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			p := newExecPKI(t)
			mod := func(o *partner.Options) { o.DisableHTTP2 = proto == "HTTP/1.1" }
			a, b := startExecPartner(t, p, mod), startExecPartner(t, p, mod)
			x := newExecutor(t)
			conn := &catalog.Connection{BaseURL: a.URL(), Profile: "partner-a", AllowHosts: []string{strings.TrimPrefix(b.URL(), "https://")}}
			mat := execMaterial(p, "v1", nil)
			if out := x.Attempt(context.Background(), restCall(t, jobs.Call{ID: "to-a", Path: "/echo"}), conn, mat); !out.Result.OK {
				t.Fatalf("call to the base URL's host: %+v", out.Result.Error)
			}
			const calls = 100
			var wg sync.WaitGroup
			for i := range calls {
				wg.Go(func() {
					call := restCall(t, jobs.Call{ID: "to-b-" + strconv.Itoa(i), URL: b.URL() + "/echo"})
					if out := x.Attempt(context.Background(), call, conn, mat); !out.Result.OK {
						t.Errorf("call %d to the second host: %+v", i, out.Result.Error)
					}
				})
			}
			wg.Wait()
			c := b.Requests()
			if full := c.Handshakes - c.Resumed; full != 1 {
				t.Errorf("%d full TLS handshakes at the second host (%d connections, %d resumed) for %d simultaneous first calls; want 1", full, c.Connections, c.Resumed, calls)
			}
		})
	}
}
