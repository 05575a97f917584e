package testocsp_test

import (
	"bytes"
	"crypto/x509"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtlsrelay/mtlsrelay/internal/testocsp"
)

func TestCA(t *testing.T) {
	ca := testocsp.New(t)
	good := ca.Issue(t, "good", testocsp.IssueOptions{OCSPURL: ca.OCSPURL(), CRLURL: ca.CRLURL()})
	revoked := ca.Issue(t, "revoked", testocsp.IssueOptions{OCSPURL: ca.OCSPURL(), CRLURL: ca.CRLURL()})
	bare := ca.Issue(t, "bare", testocsp.IssueOptions{})
	ca.Revoke(t, revoked, "keyCompromise")
	ca.GenCRL(t)
	ca.StartResponder(t)

	if got := good.Cert.OCSPServer; len(got) != 1 || got[0] != ca.OCSPURL() {
		t.Errorf("good OCSPServer = %q, want [%s]", got, ca.OCSPURL())
	}
	if got := good.Cert.CRLDistributionPoints; len(got) != 1 || got[0] != ca.CRLURL() {
		t.Errorf("good CRLDistributionPoints = %q, want [%s]", got, ca.CRLURL())
	}
	if len(bare.Cert.OCSPServer)+len(bare.Cert.CRLDistributionPoints) != 0 {
		t.Errorf("bare names revocation URLs: %q %q", bare.Cert.OCSPServer, bare.Cert.CRLDistributionPoints)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := good.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("good does not verify: %v", err)
	}
	_ = good.TLSCertificate(t)

	t.Run("ok/staple", func(t *testing.T) {
		for _, tc := range []struct {
			cert *testocsp.Cert
			want int
		}{{good, ocsp.Good}, {revoked, ocsp.Revoked}, {bare, ocsp.Good}} {
			resp, err := ocsp.ParseResponseForCert(ca.Staple(t, tc.cert), tc.cert.Cert, ca.Cert)
			if err != nil {
				t.Fatalf("%s: %v", tc.cert.Name, err)
			}
			if resp.Status != tc.want || resp.NextUpdate.Before(time.Now().Add(50*time.Minute)) {
				t.Errorf("%s: status %d next update %s, want %d an hour ahead", tc.cert.Name, resp.Status, resp.NextUpdate, tc.want)
			}
			if resp.Certificate == nil || resp.Certificate.Subject.CommonName != "ocsp-responder" {
				t.Errorf("%s: response not signed by the delegated responder", tc.cert.Name)
			}
		}
		if n := ca.TotalOCSPRequests(); n != 0 {
			t.Errorf("staples went through the front: %d requests", n)
		}
	})
	t.Run("ok/front-relays-and-counts", func(t *testing.T) {
		req, err := ocsp.CreateRequest(revoked.Cert, ca.Cert, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(ca.OCSPURL(), "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r, err := ocsp.ParseResponseForCert(body, revoked.Cert, ca.Cert)
		if err != nil || r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
			t.Fatalf("relayed response %+v, %v; want revoked, keyCompromise", r, err)
		}
		if ca.OCSPRequests(revoked) != 1 || ca.OCSPRequests(good) != 0 || ca.TotalOCSPRequests() != 1 {
			t.Errorf("counts: revoked %d good %d total %d", ca.OCSPRequests(revoked), ca.OCSPRequests(good), ca.TotalOCSPRequests())
		}
	})
	t.Run("ok/crl", func(t *testing.T) {
		resp, err := http.Get(ca.CRLURL())
		if err != nil {
			t.Fatal(err)
		}
		der, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatal(err)
		}
		if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(revoked.Cert.SerialNumber) != 0 {
			t.Fatalf("CRL entries %+v, want the revoked certificate only", rl.RevokedCertificateEntries)
		}
		if ca.CRLRequests() != 1 {
			t.Errorf("CRLRequests = %d", ca.CRLRequests())
		}
	})
}
