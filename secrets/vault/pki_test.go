package vault_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// leafOf decodes a PKI bundle as the Resolver does and returns its leaf.
func leafOf(t testing.TB, s secrets.Secret) *x509.Certificate {
	t.Helper()
	ks, err := secrets.DecodeKeystore(s.Data, nil)
	if err != nil {
		t.Fatalf("PKI bundle does not decode: %v", err)
	}
	c, err := ks.ClientCertificate("")
	if err != nil {
		t.Fatalf("PKI bundle has no client certificate: %v", err)
	}
	return c.Leaf
}

// issued counts the certificates the PKI mount has stored.
func issued(t testing.TB, v *testvault.Vault, mount string) int {
	t.Helper()
	s, err := v.Client.Logical().List(mount + "/certs")
	if err != nil || s == nil {
		t.Fatalf("list %s/certs: %v", mount, err)
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

func TestPKI(t *testing.T) {
	v := testvault.Start(t)
	ca := v.PKI("pki", "client", nil)
	e := newClient(t, v, vault.Config{})
	const ref = "vault-pki:pki/issue/client?common_name=relay.example&ttl=6s&alt_names=relay2.example&ip_sans=127.0.0.1"

	t.Run("ok/concurrent-first-fetches-issue-once", func(t *testing.T) {
		before := issued(t, v, "pki")
		var wg sync.WaitGroup
		versions := make([]string, 8)
		errs := make([]error, 8)
		for i := range versions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := e.fetch(t, ref)
				versions[i], errs[i] = s.Version, err
			}()
		}
		wg.Wait()
		for i := range versions {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if versions[i] != versions[0] {
				t.Errorf("fetch %d got %s, fetch 0 got %s", i, versions[i], versions[0])
			}
		}
		if n := issued(t, v, "pki") - before; n != 1 {
			t.Errorf("Vault issued %d certificates for concurrent first fetches, want 1", n)
		}
	})
	t.Run("ok/bundle-is-a-client-keystore-from-the-vault-ca", func(t *testing.T) {
		s, err := e.fetch(t, ref)
		if err != nil {
			t.Fatal(err)
		}
		leaf := leafOf(t, s)
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("issued certificate does not verify as a client certificate of the PKI root: %v", err)
		}
		if leaf.Subject.CommonName != "relay.example" || len(leaf.IPAddresses) != 1 || !strings.Contains(strings.Join(leaf.DNSNames, ","), "relay2.example") {
			t.Errorf("parameters not applied: CN=%s DNS=%v IP=%v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
		}
		if want := "pki:" + secrets.SerialHex(leaf); s.Version != want {
			t.Errorf("Version = %s, want %s", s.Version, want)
		}
		if b, _ := pem.Decode(s.Data[strings.Index(string(s.Data), "-----BEGIN PRIVATE KEY"):]); b == nil {
			t.Errorf("private key is not PKCS#8")
		}
	})
	t.Run("ok/renewed-before-expiry", func(t *testing.T) {
		first, err := e.fetch(t, ref)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			s, err := e.fetch(t, ref)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			leaf := leafOf(t, s)
			if !now.Before(leaf.NotAfter) {
				t.Fatalf("fetch returned an expired certificate (serial %s, not after %s)", s.Version, leaf.NotAfter)
			}
			seen[s.Version] = true
			if len(seen) < 2 || s.Version == first.Version {
				return fmt.Errorf("still %s", s.Version)
			}
			return nil
		})
	})
	t.Run("fail/role-refuses-name", func(t *testing.T) {
		v.Write("pki/roles/strict", map[string]any{"allowed_domains": "example.org", "allow_subdomains": true, "client_flag": true, "max_ttl": "1h"})
		_, err := e.fetch(t, "vault-pki:pki/issue/strict?common_name=relay.example")
		wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), "pki/issue/strict", "HTTP 400")
	})
	t.Run("fail/bad-references", func(t *testing.T) {
		for _, r := range []string{"vault-pki:pki/sign/client", "vault-pki:/issue/client", "vault-pki:pki/issue/", "vault-pki:pki/issue/client?format=der"} {
			_, err := e.fetch(t, r)
			wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), "MOUNT/issue/ROLE")
		}
	})
}

func TestPKIVaultDownAtRenewal(t *testing.T) {
	v := testvault.Start(t)
	v.PKI("pki", "client", nil)
	e := newClient(t, v, vault.Config{PKIRenewFraction: 0.2})
	const ref = "vault-pki:pki/issue/client?common_name=relay.example&ttl=5s"
	first, err := e.fetch(t, ref)
	if err != nil {
		t.Fatal(err)
	}
	v.Stop()
	var lastErr error
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		s, err := e.fetch(t, ref)
		if err != nil {
			lastErr = err
			return nil
		}
		if s.Version != first.Version {
			t.Fatalf("a new certificate while Vault is stopped: %s", s.Version)
		}
		if leaf := leafOf(t, s); !time.Now().Before(leaf.NotAfter) {
			t.Fatalf("returned the certificate after it expired at %s", leaf.NotAfter)
		}
		return fmt.Errorf("still serving the certificate issued before")
	})
	wantContains(t, wantErr(t, lastErr, jobs.CodeSecretUnavailable, true), "expired", "could not be renewed", "unreachable")
	wantContains(t, e.logs.String(), "cannot renew the Vault PKI certificate")
}
