package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mtlsrelay/mtlsrelay/internal/pki"
)

func TestIssue(t *testing.T) {
	ca, err := pki.NewCA("Test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("Other CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name    string
		opts    pki.LeafOptions
		usage   x509.ExtKeyUsage
		roots   *pki.CA
		wantErr func(error) bool
	}{
		{name: "ok/server", opts: pki.LeafOptions{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}, usage: x509.ExtKeyUsageServerAuth, roots: ca},
		{name: "ok/client", opts: pki.LeafOptions{CommonName: "flow-a", Client: true}, usage: x509.ExtKeyUsageClientAuth, roots: ca},
		{name: "fail/client-used-as-server", opts: pki.LeafOptions{CommonName: "flow-a", Client: true}, usage: x509.ExtKeyUsageServerAuth, roots: ca,
			wantErr: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.IncompatibleUsage
			}},
		{name: "fail/expired", opts: pki.LeafOptions{CommonName: "old", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, usage: x509.ExtKeyUsageClientAuth, roots: ca,
			wantErr: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.Expired
			}},
		{name: "fail/not-yet-valid", opts: pki.LeafOptions{CommonName: "new", NotBefore: now.Add(time.Hour)}, usage: x509.ExtKeyUsageClientAuth, roots: ca,
			wantErr: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.Expired
			}},
		{name: "fail/other-ca", opts: pki.LeafOptions{CommonName: "flow-a", Client: true}, usage: x509.ExtKeyUsageClientAuth, roots: other,
			wantErr: func(err error) bool {
				var e x509.UnknownAuthorityError
				return errors.As(err, &e)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := ca.Issue(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = leaf.Cert.Verify(x509.VerifyOptions{Roots: tc.roots.Pool(), KeyUsages: []x509.ExtKeyUsage{tc.usage}})
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tc.wantErr != nil && (err == nil || !tc.wantErr(err)) {
				t.Fatalf("Verify = %v, want the expected failure", err)
			}
		})
	}
}

func TestIssueRevocationURLs(t *testing.T) {
	ca, err := pki.NewCA("Test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafOptions{
		DNSNames:              []string{"localhost"},
		Server:                true,
		OCSPServer:            []string{"http://127.0.0.1:1/ocsp"},
		CRLDistributionPoints: []string{"http://127.0.0.1:1/ca.crl"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := leaf.Cert.OCSPServer; len(got) != 1 || got[0] != "http://127.0.0.1:1/ocsp" {
		t.Errorf("OCSPServer = %q", got)
	}
	if got := leaf.Cert.CRLDistributionPoints; len(got) != 1 || got[0] != "http://127.0.0.1:1/ca.crl" {
		t.Errorf("CRLDistributionPoints = %q", got)
	}
	responder, err := ca.Issue(pki.LeafOptions{CommonName: "OCSP responder", OCSPSigning: true, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := responder.Cert.ExtKeyUsage; len(got) != 1 || got[0] != x509.ExtKeyUsageOCSPSigning {
		t.Errorf("responder ExtKeyUsage = %v, want OCSPSigning only", got)
	}
	if _, err := responder.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}}); err != nil {
		t.Errorf("responder certificate does not verify for OCSP signing: %v", err)
	}
}

func TestEncodings(t *testing.T) {
	ca, err := pki.NewCA("Test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "flow-a", Client: true})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ok/pem-keypair", func(t *testing.T) {
		cert, err := tls.X509KeyPair(leaf.PEM(), leaf.PEM())
		if err != nil {
			t.Fatal(err)
		}
		if !cert.Leaf.Equal(leaf.Cert) {
			t.Fatal("certificate from PEM differs")
		}
	})
	t.Run("ok/ca-pem", func(t *testing.T) {
		b, _ := pem.Decode(ca.CertPEM())
		if b == nil || b.Type != "CERTIFICATE" {
			t.Fatal("CA PEM has no CERTIFICATE block")
		}
	})
	t.Run("ok/pkcs12", func(t *testing.T) {
		p12, err := leaf.PKCS12("s3cret")
		if err != nil {
			t.Fatal(err)
		}
		key, cert, chain, err := pkcs12.DecodeChain(p12, "s3cret")
		if err != nil {
			t.Fatal(err)
		}
		if key == nil || !cert.Equal(leaf.Cert) || len(chain) != 1 || !chain[0].Equal(ca.Cert) {
			t.Fatal("PKCS#12 content differs from the leaf")
		}
	})
	t.Run("fail/pkcs12-wrong-password", func(t *testing.T) {
		p12, err := leaf.PKCS12("s3cret")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := pkcs12.DecodeChain(p12, "wrong"); !errors.Is(err, pkcs12.ErrIncorrectPassword) {
			t.Fatalf("DecodeChain with a wrong password = %v, want ErrIncorrectPassword", err)
		}
	})
	t.Run("ok/truststore", func(t *testing.T) {
		p12, err := ca.TrustStorePKCS12("changeit")
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pkcs12.DecodeTrustStore(p12, "changeit")
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 1 || !certs[0].Equal(ca.Cert) {
			t.Fatal("truststore content differs from the CA")
		}
	})
	t.Run("ok/tls-certificate", func(t *testing.T) {
		c := leaf.TLSCertificate()
		if c.Leaf == nil || len(c.Certificate) != 1 || c.PrivateKey == nil {
			t.Fatal("tls.Certificate is incomplete")
		}
		if leaf.SerialHex() != leaf.Cert.SerialNumber.Text(16) {
			t.Fatal("SerialHex mismatch")
		}
	})
}
