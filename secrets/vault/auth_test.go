package vault_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// readPolicy lets a token read every secret under secret/partners/.
const readPolicy = `path "secret/data/partners/*" { capabilities = ["read"] }`

// keepReading reads ref every 50ms until stop is closed and returns the
// failures it saw.
func keepReading(t *testing.T, e *env, ref string, stop <-chan struct{}) (reads *atomic.Int64, failures func() []error) {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	reads = &atomic.Int64{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := e.fetch(t, ref); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			reads.Add(1)
		}
	}()
	return reads, func() []error {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return errs
	}
}

func TestAppRoleLoginRenewalAndRelogin(t *testing.T) {
	v := testvault.Start(t)
	v.Policy("partners-read", readPolicy)
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	roleID, secretID := v.AppRole("approle", "relay", []string{"partners-read"},
		map[string]any{"token_ttl": "2s", "token_max_ttl": "5s"})
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newClient(t, v, vault.Config{PollInterval: -1, Auth: vault.AuthConfig{
		Method: vault.AuthAppRole, RoleID: "value:" + roleID, SecretID: "file:" + secretFile,
	}}, secretID)

	stop := make(chan struct{})
	reads, failures := keepReading(t, e, "vault:secret/partners/a#password", stop)
	// Three logins span two max TTLs; renewals happen in between.
	checkFor(t, 45*time.Second, 100*time.Millisecond, func() error {
		logs := e.logs.String()
		logins, renewals := strings.Count(logs, "logged in to Vault"), strings.Count(logs, "renewed the Vault token")
		if logins < 3 || renewals < 2 {
			return fmt.Errorf("%d logins and %d renewals so far", logins, renewals)
		}
		return nil
	})
	close(stop)
	if errs := failures(); len(errs) > 0 {
		t.Errorf("%d of %d reads failed across token renewals and logins; first: %v", len(errs), reads.Load(), errs[0])
	}
	if reads.Load() == 0 {
		t.Fatal("no reads were made")
	}
}

func TestAppRoleBadSecretID(t *testing.T) {
	v := testvault.Start(t)
	roleID, _ := v.AppRole("approle", "relay", []string{"default"}, nil)
	_, err := vault.New(context.Background(), vault.Config{Address: v.Addr, Auth: vault.AuthConfig{
		Method: vault.AuthAppRole, RoleID: "value:" + roleID, SecretID: "value:not-the-secret-id",
	}}, nil, zerologTo(&syncBuffer{}))
	msg := wantErr(t, err, jobs.CodeSecretUnavailable, false)
	wantContains(t, msg, "approle login", "auth/approle/login", "HTTP 400")
	if strings.Contains(err.Error(), "not-the-secret-id") {
		t.Errorf("message holds the secret_id: %v", err)
	}
}

func TestTokenAuthRenewsAndRereadsTheToken(t *testing.T) {
	v := testvault.Start(t)
	v.Policy("partners-read", readPolicy)
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	mk := func(ttl, maxTTL string) string {
		s, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"partners-read"}, TTL: ttl, ExplicitMaxTTL: maxTTL})
		if err != nil {
			t.Fatal(err)
		}
		return s.Auth.ClientToken
	}
	tok1, tok2 := mk("2s", "4s"), mk("1h", "2h")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok1), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newClient(t, v, vault.Config{PollInterval: -1, Auth: vault.AuthConfig{Token: "file:" + file}}, tok1, tok2)
	if _, err := e.fetch(t, "vault:secret/partners/a#password"); err != nil {
		t.Fatal(err)
	}
	// A token sink (Vault Agent) writes the next token; the client reads it
	// once the first one's renewal ends at its max TTL.
	if err := os.WriteFile(file, []byte(tok2), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		logs := e.logs.String()
		if strings.Count(logs, "renewed the Vault token") < 1 || strings.Count(logs, "logged in to Vault") < 2 {
			return fmt.Errorf("waiting for a renewal and a second login")
		}
		return nil
	})
	// tok1 has passed its max TTL: reads go on with tok2.
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if _, err := v.Client.Auth().Token().Lookup(tok1); err == nil {
			return fmt.Errorf("first token still alive")
		}
		return nil
	})
	if _, err := e.fetch(t, "vault:secret/partners/a#password"); err != nil {
		t.Fatalf("read after the token was replaced: %v", err)
	}
}

func TestCertAuthOverTLS(t *testing.T) {
	v := testvault.Start(t, testvault.WithTLS())
	v.Policy("partners-read", readPolicy)
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	v.EnableAuth("cert", "cert")
	v.Write("auth/cert/certs/relay", map[string]any{
		"certificate": string(fixture(t, "ca.pem")), "token_policies": "partners-read", "token_ttl": "1h",
	})
	e := newClient(t, v, vault.Config{Auth: vault.AuthConfig{
		Method: vault.AuthCert, Role: "relay",
		ClientCert: fixturePath(t, "client.pem"), ClientKey: fixturePath(t, "client.pem"),
	}})
	s, err := e.fetch(t, "vault:secret/partners/a#password")
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Data) != fixturePassword {
		t.Errorf("wrong value read")
	}
	t.Run("fail/unknown-ca", func(t *testing.T) {
		other := newClient(t, v, vault.Config{CACert: fixturePath(t, "other-ca.pem"), PollInterval: -1})
		_, err := other.fetch(t, "vault:secret/partners/a#password")
		wantContains(t, wantErr(t, err, jobs.CodeSecretUnavailable, true), "unknown authority", "vault.ca_cert")
	})
}

// Method cert reads client_cert and client_key as two files (as
// cert-manager mounts tls.crt and tls.key) through the resolver: a pair
// that does not make a key pair fails at start, naming both files.
func TestCertAuthSeparateFiles(t *testing.T) {
	v := testvault.Start(t, testvault.WithTLS())
	v.Policy("partners-read", readPolicy)
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	v.EnableAuth("cert", "cert")
	v.Write("auth/cert/certs/relay", map[string]any{
		"certificate": string(fixture(t, "ca.pem")), "token_policies": "partners-read", "token_ttl": "1h",
	})
	dir := t.TempDir()
	var crt, key []byte
	for rest := fixture(t, "client.pem"); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			key = append(key, pem.EncodeToMemory(b)...)
		} else {
			crt = append(crt, pem.EncodeToMemory(b)...)
		}
	}
	crtPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(crtPath, crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newClient(t, v, vault.Config{Auth: vault.AuthConfig{Method: vault.AuthCert, Role: "relay", ClientCert: crtPath, ClientKey: keyPath}})
	if s, err := e.fetch(t, "vault:secret/partners/a#password"); err != nil || string(s.Data) != fixturePassword {
		t.Fatalf("read with a two-file pair: %v", err)
	}

	_, err := vault.New(context.Background(), vault.Config{Address: v.Addr, CACert: v.CACert,
		Auth: vault.AuthConfig{Method: vault.AuthCert, Role: "relay", ClientCert: crtPath, ClientKey: crtPath + ".missing"}}, nil, zerolog.Nop())
	wantContains(t, wantErr(t, err, jobs.CodeSecretUnavailable, false), "vault.auth.client_cert", crtPath+".missing", "does not exist")
}
