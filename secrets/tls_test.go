package secrets_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// startMTLSServer starts a TLS server on 127.0.0.1 with the fixture's
// server certificate that requires a client certificate issued by the test
// CA. Each accepted handshake sends the client certificate's serial on the
// returned channel, then writes "ok".
func startMTLSServer(t *testing.T) (addr string, serials <-chan string) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join("testdata", "server.pem"), filepath.Join("testdata", "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(pemCert(t, "ca.pem"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c *tls.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.Handshake(); err != nil {
					return
				}
				ch <- secrets.SerialHex(c.ConnectionState().PeerCertificates[0])
				_, _ = c.Write([]byte("ok"))
			}(c.(*tls.Conn))
		}
	}()
	return ln.Addr().String(), ch
}

// dial connects with m's config the way an HTTP transport does: ServerName
// from the URL's host unless the profile set one. It returns once the
// server has accepted the client certificate (its "ok" arrived; in TLS 1.3
// the client's handshake ends before the server has checked it).
func dial(addr string, m *secrets.Material) error {
	cfg := m.Config.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = "localhost"
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	return nil
}

func TestHandshake(t *testing.T) {
	addr, serials := startMTLSServer(t)
	t.Setenv("MTLSRELAY_TEST_PASSWORD", fixturePassword)
	pw := "env:MTLSRELAY_TEST_PASSWORD"
	file := func(name string) string { return "file:" + fixturePath(t, name) }
	tests := []struct {
		name    string
		profile secrets.Profile
		wantErr any // a pointer to the error type errors.As must find
	}{
		{"ok/openssl-p12", secrets.Profile{Keystore: file("client-openssl.p12"), Password: pw, Truststore: file("truststore.p12"), TruststorePassword: pw}, nil},
		{"ok/openssl-legacy-p12", secrets.Profile{Keystore: file("client-openssl-legacy.p12"), Password: pw, Truststore: file("truststore.jks"), TruststorePassword: pw}, nil},
		{"ok/keytool-p12", secrets.Profile{Keystore: file("client-keytool.p12"), Password: pw, Truststore: file("ca.pem")}, nil},
		{"ok/keytool-jks-tls13", secrets.Profile{Keystore: file("client-keytool.jks"), Password: pw, Truststore: file("truststore.jks"), MinTLSVersion: "1.3"}, nil},
		{"ok/multi-jks-ec-alias", secrets.Profile{Keystore: file("client-multi.jks"), Password: pw, KeyAlias: "beta", Truststore: file("ca.pem")}, nil},
		{"ok/encrypted-pem", secrets.Profile{Keystore: file("client-encrypted.pem"), Password: pw, Truststore: file("ca.pem")}, nil},
		{"ok/inline-pem-server-name", secrets.Profile{Keystore: string(fixture(t, "client.pem")), Truststore: file("ca.pem"), ServerName: "localhost"}, nil},
		{"fail/untrusted-server", secrets.Profile{Keystore: file("client-openssl.p12"), Password: pw, Truststore: file("other-ca.pem")}, new(x509.UnknownAuthorityError)},
		{"fail/server-name-mismatch", secrets.Profile{Keystore: file("client-openssl.p12"), Password: pw, Truststore: file("ca.pem"), ServerName: "api.partner-a.example"}, new(x509.HostnameError)},
	}
	r := secrets.NewResolver(secrets.DefaultSources(""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := r.Resolve(context.Background(), tt.name, tt.profile)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			err = dial(addr, m)
			if tt.wantErr != nil {
				if err == nil || !errors.As(err, tt.wantErr) {
					t.Fatalf("handshake error = %v, want %T", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			select {
			case got := <-serials:
				if want := secrets.SerialHex(m.Leaf); got != want {
					t.Errorf("server saw serial %s, want the keystore's %s", got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the server reported no handshake")
			}
		})
	}
}
