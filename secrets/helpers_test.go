package secrets_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// fixturePassword is the password of every keystore in testdata (a public
// test fixture, see testdata/README.md).
const fixturePassword = "fixture-pass-123"

// wrongPassword is what the failure cases try; no message may contain it.
const wrongPassword = "wrong-pass-987"

// fixture reads a file of testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return data
}

// fixturePath is the absolute path of a file of testdata, for file: refs.
func fixturePath(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pemCert parses the first certificate of a PEM fixture.
func pemCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(fixture(t, name))
	if b == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantCode fails the test unless err is a *jobs.Error with code, and checks
// that no password appears in it.
func wantCode(t testing.TB, err error, code jobs.Code) *jobs.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var je *jobs.Error
	if !errors.As(err, &je) {
		t.Fatalf("error %T is not a *jobs.Error: %v", err, err)
	}
	if je.Code != code {
		t.Fatalf("code = %s, want %s (message: %s)", je.Code, code, je.Message)
	}
	noSecret(t, err.Error())
	return je
}

// noSecret fails when s contains a test password.
func noSecret(t testing.TB, s string) {
	t.Helper()
	for _, pw := range []string{fixturePassword, wrongPassword} {
		if strings.Contains(s, pw) {
			t.Fatalf("output contains a password: %s", s)
		}
	}
}

// testCert issues a client certificate valid from notBefore to notAfter by
// a throwaway CA, and returns a PEM bundle (chain and PKCS#8 key) and the
// CA certificate. Expired and not-yet-valid certificates depend on the
// clock, so they are made here rather than kept as fixtures.
func testCert(t testing.TB, cn string, notBefore, notAfter time.Time) (bundle []byte, ca *x509.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "throwaway test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	bundle = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return bundle, ca
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingSource wraps a Source, counting fetches per reference, and can
// be told to fail or to hold fetches until released.
type countingSource struct {
	inner secrets.Source

	mu      sync.Mutex
	fetches map[string]int
	fail    error
	hold    chan struct{} // when not nil, Fetch waits for it to close
}

func newCountingSource(inner secrets.Source) *countingSource {
	return &countingSource{inner: inner, fetches: map[string]int{}}
}

func (s *countingSource) Fetch(ctx context.Context, ref secrets.Ref) (secrets.Secret, error) {
	s.mu.Lock()
	s.fetches[ref.String()]++
	fail, hold := s.fail, s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return secrets.Secret{}, ctx.Err()
		}
	}
	if fail != nil {
		return secrets.Secret{}, fail
	}
	return s.inner.Fetch(ctx, ref)
}

func (s *countingSource) count(ref string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[ref]
}

func (s *countingSource) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// copyFixture copies a fixture into dir/name and returns the new path.
func copyFixture(t testing.TB, fixtureName, dst string) {
	t.Helper()
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, fixture(t, fixtureName), 0o600); err != nil {
		t.Fatal(err)
	}
	// Rename like real rotations do, so readers never see half a file.
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}
