package secrets_test

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// splitPEM writes bundle's certificates to dir/tls.crt and its private key
// to dir/tls.key, as cert-manager mounts them.
func splitPEM(t *testing.T, bundle []byte, dir string) (crt, key string) {
	t.Helper()
	var certs, keys []byte
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			keys = append(keys, pem.EncodeToMemory(b)...)
		} else {
			certs = append(certs, pem.EncodeToMemory(b)...)
		}
	}
	if len(certs) == 0 || len(keys) == 0 {
		t.Fatalf("bundle has %d bytes of certificates and %d of keys", len(certs), len(keys))
	}
	crt, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for path, data := range map[string][]byte{crt: certs, key: keys} {
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	return crt, key
}

// A certificate and its key kept in two files make one profile, and a pair
// rewritten in place is picked up as a keystore is.
func TestResolverSeparateKey(t *testing.T) {
	r, _, clock := newTestResolver(t)
	dir := t.TempDir()
	ctx := context.Background()
	first, _ := testCert(t, "pair-one", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	crt, key := splitPEM(t, first, dir)
	p := secrets.Profile{Keystore: "file:" + crt, Key: "file:" + key}

	m1, err := r.Resolve(ctx, "split", p)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Leaf.Subject.CommonName != "pair-one" {
		t.Fatalf("leaf CN = %q, want pair-one", m1.Leaf.Subject.CommonName)
	}

	second, _ := testCert(t, "pair-two", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	splitPEM(t, second, dir)
	clock.Advance(1100 * time.Millisecond)
	m2, err := r.Resolve(ctx, "split", p)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Leaf.Subject.CommonName != "pair-two" || m2.Version == m1.Version {
		t.Fatalf("after rotation: CN %q, version changed %v; want pair-two and a new version", m2.Leaf.Subject.CommonName, m2.Version != m1.Version)
	}

	// An encrypted key opens with the profile's password.
	crtOnly, encKey := splitPEM(t, fixture(t, "client-encrypted.pem"), t.TempDir())
	enc := secrets.Profile{Keystore: "file:" + crtOnly, Key: "file:" + encKey, Password: "value:" + fixturePassword}
	if m, err := r.Resolve(ctx, "encrypted", enc); err != nil || m.Leaf.Subject.CommonName != pemCert(t, "client.pem").Subject.CommonName {
		t.Fatalf("encrypted key: %v", err)
	}
}

func TestResolverSeparateKeyErrors(t *testing.T) {
	r, _, _ := newTestResolver(t)
	crt, _ := splitPEM(t, fixture(t, "client.pem"), t.TempDir())
	cases := []struct {
		name string
		p    secrets.Profile
		want string
	}{
		{"key is a certificate", secrets.Profile{Keystore: "file:" + crt, Key: "file:" + crt},
			"profile \"bad\" key file:" + crt + ": the key is not a PEM private key"},
		{"keystore is PKCS#12", secrets.Profile{Keystore: "file:" + fixturePath(t, "client-openssl.p12"), Key: "file:" + crt, Password: "value:" + fixturePassword},
			"profile \"bad\" keystore file:" + fixturePath(t, "client-openssl.p12") + ": key is set, so the keystore must be a PEM certificate chain, but it is PKCS12"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Resolve(context.Background(), "bad", c.p)
			je := wantCode(t, err, jobs.CodeKeystoreInvalid)
			if !strings.Contains(je.Message, c.want) {
				t.Errorf("message %q\nwant it to contain %q", je.Message, c.want)
			}
		})
	}
}
