package netfail_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/netfail"
)

func TestClassify(t *testing.T) {
	dialErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	cases := []struct {
		name  string
		err   error
		kind  netfail.Kind
		alert uint8
		host  string
	}{
		{"canceled", fmt.Errorf("get: %w", context.Canceled), netfail.Canceled, 0, ""},
		{"name-mismatch", x509.HostnameError{Host: "a.example"}, netfail.NameMismatch, 0, ""},
		{"unknown-authority", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), netfail.Untrusted, 0, ""},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, netfail.Untrusted, 0, ""},
		{"verification", &tls.CertificateVerificationError{Err: errors.New("x")}, netfail.Untrusted, 0, ""},
		{"alert-quic-type", tls.AlertError(48), netfail.Alert, 48, ""},
		{"alert-text-only", errors.New("Get \"https://a\": remote error: tls: bad certificate"), netfail.Alert, 42, ""},
		{"not-tls", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, netfail.NotTLS, 0, ""},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), netfail.Timeout, 0, ""},
		{"io-deadline", os.ErrDeadlineExceeded, netfail.Timeout, 0, ""},
		{"dns", &net.DNSError{Name: "nx.example", Err: "no such host", IsNotFound: true}, netfail.DNS, 0, "nx.example"},
		{"refused", dialErr(syscall.ECONNREFUSED), netfail.Refused, 0, ""},
		{"host-unreachable", dialErr(syscall.EHOSTUNREACH), netfail.Unreachable, 0, ""},
		{"net-unreachable", dialErr(syscall.ENETUNREACH), netfail.Unreachable, 0, ""},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, netfail.Closed, 0, ""},
		{"eof", fmt.Errorf("read: %w", io.EOF), netfail.Closed, 0, ""},
		{"dial-other", &net.OpError{Op: "dial", Err: errors.New("socket: too many open files")}, netfail.Dial, 0, ""},
		{"local-tls", errors.New("tls: no supported versions satisfy MinVersion and MaxVersion"), netfail.LocalTLS, 0, ""},
		{"other", errors.New("boom"), netfail.Other, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := netfail.Classify(tc.err)
			if f.Kind != tc.kind || f.Alert != tc.alert || f.Name != tc.host {
				t.Fatalf("Classify(%v) = %+v (%s), want kind %s alert %d name %q", tc.err, f, f.Kind, tc.kind, tc.alert, tc.host)
			}
		})
	}
	if f := netfail.Classify(nil); f.Kind != netfail.Other {
		t.Errorf("Classify(nil) = %+v", f)
	}
}

// An alert received in a real handshake arrives as crypto/tls's unexported
// alert type: RemoteAlert must read it.
func TestRemoteAlertFromARealHandshake(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MaxVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("the handshake without a client certificate succeeded")
	}
	f := netfail.Classify(err)
	if f.Kind != netfail.Alert || f.Alert == 0 {
		t.Fatalf("Classify(%v) = %+v, want the alert the server sent", err, f)
	}
	if name := netfail.AlertName(f.Alert); strings.HasPrefix(name, "alert(") {
		t.Errorf("AlertName(%d) = %q", f.Alert, name)
	}
}
