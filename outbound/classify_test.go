package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/pki"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// TestAttemptTLSFailures makes real handshakes fail in each way the
// classification distinguishes.
func TestAttemptTLSFailures(t *testing.T) {
	p := newExecPKI(t)
	otherCA, err := pki.NewCA("Somebody Else's CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongName, err := p.serverCA.Issue(pki.LeafOptions{DNSNames: []string{"partner.example", "api.partner.example"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expiredServer, err := p.serverCA.Issue(pki.LeafOptions{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true,
		NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		server   func(*partner.Options)
		client   func(*tls.Config)
		want     jobs.Code
		wantSent bool
		contains []string
	}{
		{
			name:     "fail/server-cert-untrusted",
			client:   func(c *tls.Config) { c.RootCAs = otherCA.Pool() },
			want:     jobs.CodeServerCertUntrusted,
			contains: []string{"partner-a's truststore", "Partner Server CA"},
		},
		{
			name:     "fail/server-cert-expired",
			server:   func(o *partner.Options) { o.Certificate = expiredServer.TLSCertificate() },
			want:     jobs.CodeServerCertUntrusted,
			contains: []string{"expired"},
		},
		{
			name:     "fail/server-name-mismatch",
			server:   func(o *partner.Options) { o.Certificate = wrongName.TLSCertificate() },
			want:     jobs.CodeServerNameMismatch,
			contains: []string{"partner.example, api.partner.example", "127.0.0.1", "server_name"},
		},
		{
			name:     "fail/client-cert-rejected-tls12",
			server:   func(o *partner.Options) { o.ClientCAs = otherCA.Pool(); o.MaxTLSVersion = tls.VersionTLS12 },
			want:     jobs.CodeClientCertRejected,
			contains: []string{"profile partner-a", "unknown_ca"},
		},
		{
			// In TLS 1.3 the server checks the client certificate after the
			// client's handshake is done: the alert arrives on the first read.
			name:     "fail/client-cert-rejected-tls13",
			server:   func(o *partner.Options) { o.ClientCAs = otherCA.Pool(); o.MaxTLSVersion = tls.VersionTLS13 },
			want:     jobs.CodeClientCertRejected,
			wantSent: true,
			contains: []string{"profile partner-a", "unknown_ca"},
		},
		{
			name: "fail/client-cert-rejected-tls13-http1",
			server: func(o *partner.Options) {
				o.ClientCAs = otherCA.Pool()
				o.DisableHTTP2 = true
			},
			want:     jobs.CodeClientCertRejected,
			wantSent: true,
			contains: []string{"unknown_ca"},
		},
		{
			name:     "fail/client-cert-missing-tls13",
			server:   func(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS13 },
			client:   func(c *tls.Config) { c.Certificates = nil },
			want:     jobs.CodeClientCertRejected,
			wantSent: true,
			contains: []string{"certificate_required"},
		},
		{
			name:     "fail/tls-handshake-failed-version",
			server:   func(o *partner.Options) { o.MaxTLSVersion = tls.VersionTLS12 },
			client:   func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 },
			want:     jobs.CodeTLSHandshakeFailed,
			contains: []string{"TLS version", "min_tls_version"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startExecPartner(t, p, tc.server)
			x := newExecutor(t)
			mat := execMaterial(p, "v1", tc.client)
			call := restCall(t, jobs.Call{Method: "POST", Path: "/echo", Body: "secret-payload-123"})
			out := x.Attempt(context.Background(), call, &catalog.Connection{BaseURL: srv.URL(), Profile: "partner-a"}, mat)
			if out.Result.Error != nil && out.Result.Error.Code != tc.want {
				for c := errors.Unwrap(out.Result.Error); c != nil; c = errors.Unwrap(c) {
					t.Logf("cause %T %q", c, c)
				}
			}
			wantError(t, out, tc.want)
			msg := out.Result.Error.Message
			for _, s := range tc.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not mention %q", msg, s)
				}
			}
			if !strings.Contains(msg, srv.Addr()) {
				t.Errorf("message %q does not name the host %s", msg, srv.Addr())
			}
			if strings.Contains(msg, "secret-payload") {
				t.Errorf("message %q echoes the request body", msg)
			}
			if out.Sent != tc.wantSent {
				t.Errorf("sent = %v, want %v", out.Sent, tc.wantSent)
			}
			if out.Result.Status != 0 {
				t.Errorf("status = %d, want 0", out.Result.Status)
			}
		})
	}
}

func TestAttemptNetworkFailures(t *testing.T) {
	p := newExecPKI(t)
	x := newExecutor(t)

	// A port that was just free: nothing listens, the dial is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	// A plain HTTP server: the handshake meets a non-TLS answer.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)

	tests := []struct {
		name     string
		baseURL  string
		want     jobs.Code
		contains string
	}{
		{name: "fail/connect-failed-closed-port", baseURL: "https://" + closedAddr, want: jobs.CodeConnectFailed, contains: "refused"},
		{name: "fail/tls-handshake-failed-plain-http", baseURL: "https://" + plain.Listener.Addr().String(), want: jobs.CodeTLSHandshakeFailed, contains: "did not answer with TLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := x.Attempt(context.Background(), restCall(t, jobs.Call{Method: "POST", Path: "/echo"}), &catalog.Connection{BaseURL: tc.baseURL, Profile: "partner-a"}, execMaterial(p, "v1", nil))
			wantError(t, out, tc.want)
			if out.Sent {
				t.Fatal("sent = true, but the request cannot have reached a server")
			}
			if !strings.Contains(out.Result.Error.Message, tc.contains) {
				t.Fatalf("message %q does not say %q", out.Result.Error.Message, tc.contains)
			}
		})
	}
}

// TestClassifyError covers the errors that real servers cannot easily be
// made to produce, built as the standard library builds them.
func TestClassifyError(t *testing.T) {
	target := outbound.Target{Host: "api.partner.example:8443", Profile: "partner-a", Timeout: 5 * time.Second}
	leaf := &x509.Certificate{DNSNames: []string{"www.partner.example"}}
	tests := []struct {
		name     string
		err      error
		want     jobs.Code
		contains string
	}{
		{name: "fail/dns-not-found", err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.partner.example", IsNotFound: true}}, want: jobs.CodeConnectFailed, contains: `"api.partner.example" found no such host`},
		{name: "fail/connection-refused", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, want: jobs.CodeConnectFailed, contains: "refused"},
		{name: "fail/host-unreachable", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, want: jobs.CodeConnectFailed, contains: "unreachable"},
		{name: "fail/network-unreachable", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, want: jobs.CodeConnectFailed, contains: "unreachable"},
		{name: "fail/connection-reset", err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, want: jobs.CodeConnectFailed, contains: "closed the connection"},
		{name: "fail/deadline", err: fmt.Errorf("wrapped: %w", context.DeadlineExceeded), want: jobs.CodeTimeout, contains: "within 5s"},
		{name: "fail/dial-timeout", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, want: jobs.CodeTimeout, contains: "timeout"},
		{name: "fail/canceled", err: fmt.Errorf("wrapped: %w", context.Canceled), want: jobs.CodeCanceled, contains: "canceled"},
		{name: "fail/hostname", err: &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: leaf, Host: "api.partner.example"}}, want: jobs.CodeServerNameMismatch, contains: "[www.partner.example]"},
		{name: "fail/unknown-authority", err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, want: jobs.CodeServerCertUntrusted, contains: "partner-a's truststore"},
		{name: "fail/alert-error-unknown-ca", err: tls.AlertError(48), want: jobs.CodeClientCertRejected, contains: "unknown_ca"},
		{name: "fail/alert-text-certificate-expired", err: errors.New("http2: client connection lost: remote error: tls: expired certificate"), want: jobs.CodeClientCertRejected, contains: "certificate_expired"},
		{name: "fail/alert-access-denied", err: &net.OpError{Op: "remote error", Err: tls.AlertError(49)}, want: jobs.CodeClientCertRejected, contains: "access_denied"},
		{name: "fail/alert-protocol-version", err: tls.AlertError(70), want: jobs.CodeTLSHandshakeFailed, contains: "min_tls_version"},
		{name: "fail/alert-handshake-failure", err: tls.AlertError(40), want: jobs.CodeTLSHandshakeFailed, contains: "handshake failure"},
		{name: "fail/local-tls-error", err: errors.New("tls: server selected unsupported protocol version 301"), want: jobs.CodeTLSHandshakeFailed, contains: "unsupported protocol version"},
		{name: "fail/unknown-error-not-echoed", err: errors.New("password=hunter2 leaked"), want: jobs.CodeInternal, contains: "worker log"},
		{name: "ok/jobs-error-kept", err: fmt.Errorf("x: %w", jobs.Errorf(jobs.CodeHostNotAllowed, "kept")), want: jobs.CodeHostNotAllowed, contains: "kept"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := outbound.ClassifyError(tc.err, target)
			if got == nil || got.Code != tc.want {
				t.Fatalf("ClassifyError(%v) = %v, want %s", tc.err, got, tc.want)
			}
			if got.Retryable != tc.want.Retryable() {
				t.Fatalf("retryable = %v, want %v", got.Retryable, tc.want.Retryable())
			}
			if !strings.Contains(got.Message, tc.contains) {
				t.Fatalf("message %q does not contain %q", got.Message, tc.contains)
			}
			if strings.Contains(got.Message, "hunter2") {
				t.Fatalf("message %q echoes the error text", got.Message)
			}
			if !errors.Is(got, tc.err) && tc.want != jobs.CodeHostNotAllowed {
				t.Fatal("the cause is not kept for errors.Is")
			}
		})
	}
	if outbound.ClassifyError(nil, target) != nil {
		t.Fatal("ClassifyError(nil) != nil")
	}
}
