package partner_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
)

type fixture struct {
	srv    *partner.Server
	client *http.Client
	leaf   *pki.Leaf
}

func start(t *testing.T, mod func(*partner.Options), disableClientH2 bool) *fixture {
	t.Helper()
	serverCA, err := pki.NewCA("server CA")
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := pki.NewCA("client CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := serverCA.Issue(pki.LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientCA.Issue(pki.LeafOptions{CommonName: "tester", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	opts := partner.Options{Certificate: server.TLSCertificate(), ClientCAs: clientCA.Pool()}
	if mod != nil {
		mod(&opts)
	}
	srv, err := partner.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{client.TLSCertificate()}},
		ForceAttemptHTTP2: !disableClientH2,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &fixture{srv: srv, client: &http.Client{Transport: tr}, leaf: client}
}

func (f *fixture) do(t *testing.T, method, path, contentType string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestRoutes(t *testing.T) {
	f := start(t, nil, false)

	t.Run("ok/echo", func(t *testing.T) {
		resp, body := f.do(t, "PATCH", "/echo?a=1&a=2", "text/plain", http.Header{"X-Multi": {"1", "2"}}, "hello")
		var e partner.EchoResponse
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || e.Method != "PATCH" || e.Path != "/echo" || e.RawQuery != "a=1&a=2" || e.Body != "hello" ||
			strings.Join(e.Headers["X-Multi"], ",") != "1,2" || e.Protocol != "HTTP/2.0" || e.TLSVersion != "TLS 1.3" ||
			e.ClientCert == nil || e.ClientCert.Serial != f.leaf.SerialHex() || e.ClientCert.Subject != "CN=tester" {
			t.Fatalf("echo = %+v", e)
		}
	})
	t.Run("ok/echo-binary-body", func(t *testing.T) {
		_, body := f.do(t, "POST", "/echo", "", nil, "\xff\xfe")
		var e partner.EchoResponse
		if err := json.Unmarshal([]byte(body), &e); err != nil || string(e.BodyBase64) != "\xff\xfe" || e.Body != "" {
			t.Fatalf("echo = %+v (%v)", e, err)
		}
	})
	t.Run("ok/status-retry-after", func(t *testing.T) {
		resp, _ := f.do(t, "GET", "/status/429?retry_after=5", "", nil, "")
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "5" {
			t.Fatalf("status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("fail/status-out-of-range", func(t *testing.T) {
		if resp, _ := f.do(t, "GET", "/status/99", "", nil, ""); resp.StatusCode != 400 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("ok/bytes", func(t *testing.T) {
		resp, body := f.do(t, "GET", "/bytes?n=10000", "", nil, "")
		if len(body) != 10000 || resp.ContentLength != 10000 {
			t.Fatalf("got %d bytes, Content-Length %d", len(body), resp.ContentLength)
		}
		resp, body = f.do(t, "GET", "/bytes?n=10000&chunked=1", "", nil, "")
		if len(body) != 10000 || resp.ContentLength != -1 {
			t.Fatalf("chunked: got %d bytes, Content-Length %d", len(body), resp.ContentLength)
		}
	})
	t.Run("ok/binary", func(t *testing.T) {
		if _, body := f.do(t, "GET", "/binary", "", nil, ""); body != string(partner.BinaryBody) {
			t.Fatalf("body %x", body)
		}
	})
	t.Run("ok/slow", func(t *testing.T) {
		if resp, body := f.do(t, "GET", "/slow?ms=1", "", nil, ""); resp.StatusCode != 200 || body != "slow\n" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})
	t.Run("ok/flaky", func(t *testing.T) {
		var got []int
		for range 4 {
			resp, _ := f.do(t, "GET", "/flaky/k1?fail=2&code=502", "", nil, "")
			got = append(got, resp.StatusCode)
		}
		if resp, _ := f.do(t, "GET", "/flaky/k2?fail=1&retry_after=3", "", nil, ""); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("k2: status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if want := []int{502, 502, 200, 200}; !equal(got, want) {
			t.Fatalf("statuses %v, want %v", got, want)
		}
	})
	t.Run("ok/counters", func(t *testing.T) {
		c := f.srv.Requests()
		if c.Requests < 10 || c.Routes["/flaky/{key}"] != 5 || c.Handshakes != 1 || c.Connections != 1 {
			t.Fatalf("counters %+v", c)
		}
	})
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSOAP(t *testing.T) {
	f := start(t, nil, false)
	env := func(ns, body string) string {
		return `<s:Envelope xmlns:s="` + ns + `"><s:Header><h>1</h></s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
	}
	tests := []struct {
		name        string
		path        string
		contentType string
		header      http.Header
		body        string
		wantStatus  int
		wantCT      string
		want        []string
	}{
		{name: "ok/soap11", path: "/soap", contentType: "text/xml; charset=utf-8", header: http.Header{"Soapaction": {`"urn:a"`}},
			body: env(partner.NS11, "<m:Get xmlns:m='urn:m'/>"), wantStatus: 200, wantCT: "text/xml",
			want: []string{`<soap:Envelope xmlns:soap="` + partner.NS11, "<p:Action>urn:a</p:Action>", "<p:Header><h>1</h></p:Header>", "<m:Get xmlns:m='urn:m'/>"}},
		{name: "ok/soap12", path: "/soap", contentType: `application/soap+xml; charset=utf-8; action="urn:b"`,
			body: env(partner.NS12, "<x/>"), wantStatus: 200, wantCT: "application/soap+xml",
			want: []string{`<env:Envelope xmlns:env="` + partner.NS12, "<p:Action>urn:b</p:Action>"}},
		{name: "fail/soap11-fault", path: "/soap", contentType: "text/xml", header: http.Header{"Soapaction": {`""`}},
			body: env(partner.NS11, "<a><Fail>no stock</Fail></a>"), wantStatus: 500, wantCT: "text/xml",
			want: []string{"<faultcode>soap:Server</faultcode>", "<faultstring>no stock</faultstring>", "<detail><p:FailDetail"}},
		{name: "fail/soap12-fault", path: "/soap", contentType: "application/soap+xml",
			body: env(partner.NS12, "<m:Fail xmlns:m='urn:m'/>"), wantStatus: 500, wantCT: "application/soap+xml",
			want: []string{"<env:Value>env:Receiver</env:Value>", "<env:Subcode><env:Value>p:RequestedFailure</env:Value>", `<env:Text xml:lang="en">requested failure</env:Text>`, "<env:Detail>"}},
		{name: "fail/soap12-version-mismatch", path: "/soap", contentType: "application/soap+xml",
			body: env(partner.NS11, "<x/>"), wantStatus: 500, wantCT: "application/soap+xml",
			want: []string{"<env:Value>env:VersionMismatch</env:Value>"}},
		{name: "fail/soap11-fault-mtom", path: "/soap?mtom=1", contentType: "text/xml", header: http.Header{"Soapaction": {`""`}},
			body: env(partner.NS11, "<Fail/>"), wantStatus: 500, wantCT: "multipart/related",
			want: []string{"Content-Id: <root.message@mtlsrelay>", "<faultcode>soap:Server</faultcode>"}},
		{name: "fail/soap11-no-soapaction", path: "/soap", contentType: "text/xml", body: env(partner.NS11, "<x/>"), wantStatus: 400},
		{name: "fail/wrong-content-type", path: "/soap", contentType: "application/json", body: "{}", wantStatus: 415},
		{name: "fail/not-an-envelope", path: "/soap", contentType: "application/soap+xml", body: "<x/>", wantStatus: 500,
			want: []string{"<env:Value>env:Sender</env:Value>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, "POST", tc.path, tc.contentType, tc.header, tc.body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCT != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.wantCT) {
				t.Fatalf("Content-Type %q, want %s", resp.Header.Get("Content-Type"), tc.wantCT)
			}
			for _, s := range tc.want {
				if !strings.Contains(body, s) {
					t.Errorf("reply lacks %q:\n%s", s, body)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	t.Run("ok/tls12-http1", func(t *testing.T) {
		f := start(t, func(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS12; o.DisableHTTP2 = true }, false)
		_, body := f.do(t, "GET", "/echo", "", nil, "")
		var e partner.EchoResponse
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.TLSVersion != "TLS 1.2" || e.Protocol != "HTTP/1.1" {
			t.Fatalf("echo %+v (%v)", e, err)
		}
	})
	t.Run("fail/no-client-certificate", func(t *testing.T) {
		f := start(t, nil, false)
		// HTTP/1.1: the HTTP/2 transport may report a connection refused
		// right after the handshake without the alert.
		cfg := f.client.Transport.(*http.Transport).TLSClientConfig.Clone()
		cfg.Certificates, cfg.NextProtos = nil, nil
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(context.Background(), "GET", f.srv.URL()+"/echo", nil)
		_, err := tr.RoundTrip(req)
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("RoundTrip without a certificate = %v, want the certificate_required alert", err)
		}
	})
	for _, tlsMax := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("ok/ocsp-staple-%s", tls.VersionName(tlsMax)), func(t *testing.T) {
			// The staple is sent as given: the server does not parse it.
			staple := []byte{0x30, 0x03, 0x0a, 0x01, 0x03}
			f := start(t, func(o *partner.Options) { o.OCSPStaple = staple; o.MaxTLSVersion = tlsMax }, false)
			resp, _ := f.do(t, "GET", "/echo", "", nil, "")
			if got := resp.TLS.OCSPResponse; !bytes.Equal(got, staple) {
				t.Fatalf("client got OCSP staple %x, want %x", got, staple)
			}
		})
	}
	t.Run("ok/no-staple-by-default", func(t *testing.T) {
		f := start(t, nil, false)
		resp, _ := f.do(t, "GET", "/echo", "", nil, "")
		if got := resp.TLS.OCSPResponse; got != nil {
			t.Fatalf("client got OCSP staple %x, want none", got)
		}
	})
	t.Run("fail/missing-options", func(t *testing.T) {
		if _, err := partner.Start(partner.Options{}); err == nil {
			t.Fatal("Start without a certificate succeeded")
		}
	})
	t.Run("ok/close-stops-serving", func(t *testing.T) {
		f := start(t, nil, true)
		f.do(t, "GET", "/echo", "", nil, "")
		if err := f.srv.Close(); err != nil {
			t.Fatal(err)
		}
		f.client.Transport.(*http.Transport).CloseIdleConnections()
		_, err := f.client.Get(f.srv.URL() + "/echo")
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Fatalf("GET after Close = %v, want a dial error", err)
		}
	})
}

// Pattern's words are their offsets, whatever the read sizes.
func TestPattern(t *testing.T) {
	var whole bytes.Buffer
	if _, err := io.Copy(&whole, partner.Pattern(1000)); err != nil {
		t.Fatal(err)
	}
	var small bytes.Buffer
	p, buf := partner.Pattern(1000), make([]byte, 3)
	for {
		n, err := p.Read(buf)
		small.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if whole.Len() != 1000 || !bytes.Equal(whole.Bytes(), small.Bytes()) {
		t.Fatalf("Pattern read whole (%d bytes) and 3 bytes at a time (%d bytes) differ", whole.Len(), small.Len())
	}
	if got := binary.BigEndian.Uint64(whole.Bytes()[800:808]); got != 800 {
		t.Errorf("word at 800 = %d", got)
	}
}
