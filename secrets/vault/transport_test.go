package vault_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// newErr returns the error of vault.New with cfg (a token inline, so no
// VAULT_TOKEN is needed), closing a client that started.
func newErr(t *testing.T, cfg vault.Config) error {
	t.Helper()
	if cfg.Auth.Token == "" {
		cfg.Auth.Token = "value:s.transport-test-token"
	}
	c, err := vault.New(context.Background(), cfg, secrets.DefaultSources(""), zerologTo(&syncBuffer{}))
	if err == nil {
		c.Close()
	}
	return err
}

// Plain http to a host that is not loopback is a configuration error
// (keystore_invalid, not retried), whether the address comes from
// vault.address, VAULT_ADDR or VAULT_AGENT_ADDR; loopback http (a dev
// server, a Vault Agent on the host) and https are accepted.
func TestPlainHTTPRefused(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_AGENT_ADDR", "")
	t.Setenv("VAULT_SKIP_VERIFY", "")
	for _, tc := range []struct {
		name, addr string
		want       string // "" for accepted
	}{
		{"fail/hostname", "http://vault.example:8200", "vault.address http://vault.example:8200 is plain http to a host that is not loopback"},
		{"fail/ip", "http://10.0.0.5:8200", "use https://10.0.0.5:8200"},
		{"fail/all-interfaces", "http://0.0.0.0:8200", "not loopback"},
		{"fail/uppercase-scheme", "HTTP://vault.example:8200", "not loopback"},
		{"fail/localhost-lookalike", "http://localhost.example:8200", "not loopback"},
		{"ok/loopback", "http://127.0.0.1:8200", ""},
		{"ok/loopback-127-8", "http://127.0.0.53:8200", ""},
		{"ok/localhost", "http://localhost:8200", ""},
		{"ok/ipv6-loopback", "http://[::1]:8200", ""},
		{"ok/https", "https://vault.example:8200", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := vault.Config{Address: tc.addr}
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate refused %s: %v", tc.addr, err)
				}
				return
			}
			wantContains(t, wantErr(t, err, jobs.CodeKeystoreInvalid, false), tc.want)
			// New refuses it too, before any request.
			wantContains(t, wantErr(t, newErr(t, cfg), jobs.CodeKeystoreInvalid, false), tc.want)
		})
	}
	t.Run("fail/VAULT_ADDR", func(t *testing.T) {
		t.Setenv("VAULT_ADDR", "http://vault.example:8200")
		wantContains(t, wantErr(t, newErr(t, vault.Config{}), jobs.CodeKeystoreInvalid, false),
			"VAULT_ADDR http://vault.example:8200 is plain http", "https://")
	})
	t.Run("fail/VAULT_AGENT_ADDR", func(t *testing.T) {
		t.Setenv("VAULT_AGENT_ADDR", "http://vault-agent.example:8100")
		wantContains(t, wantErr(t, newErr(t, vault.Config{Address: "https://vault.example:8200"}), jobs.CodeKeystoreInvalid, false),
			"VAULT_AGENT_ADDR http://vault-agent.example:8100")
	})
	t.Run("ok/vault.address-wins-over-VAULT_ADDR", func(t *testing.T) {
		t.Setenv("VAULT_ADDR", "http://vault.example:8200")
		if err := newErr(t, vault.Config{Address: "http://127.0.0.1:1"}); err != nil {
			t.Fatalf("New refused a loopback vault.address because of VAULT_ADDR: %v", err)
		}
	})
}

// VAULT_SKIP_VERIFY=true is refused, even against a Vault whose
// certificate verifies; false works.
func TestSkipVerifyRefused(t *testing.T) {
	v := testvault.Start(t, testvault.WithTLS())
	v.PutKV("secret", "partners/a", map[string]any{"password": fixturePassword})
	for _, val := range []string{"true", "1", "TRUE"} {
		t.Run("fail/"+val, func(t *testing.T) {
			t.Setenv("VAULT_SKIP_VERIFY", val)
			err := newErr(t, vault.Config{Address: v.Addr, CACert: v.CACert})
			msg := wantErr(t, err, jobs.CodeKeystoreInvalid, false)
			wantContains(t, msg, "VAULT_SKIP_VERIFY", "unset", "vault.ca_cert")
			// Also for plain http on loopback, where it would change nothing yet.
			wantErr(t, newErr(t, vault.Config{Address: "http://127.0.0.1:1"}), jobs.CodeKeystoreInvalid, false)
		})
	}
	t.Run("ok/false", func(t *testing.T) {
		t.Setenv("VAULT_SKIP_VERIFY", "false")
		e := newClient(t, v, vault.Config{})
		s, err := e.fetch(t, "vault:secret/partners/a#password")
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Data) != fixturePassword {
			t.Error("wrong value read")
		}
	})
	t.Run("fail/not-a-secret_unavailable", func(t *testing.T) {
		t.Setenv("VAULT_SKIP_VERIFY", "true")
		err := newErr(t, vault.Config{Address: v.Addr, CACert: v.CACert})
		if je := jobs.AsError(err); je.Code == jobs.CodeSecretUnavailable || je.Retryable {
			t.Errorf("got %s retryable=%v: a configuration error must not look like Vault being down", je.Code, je.Retryable)
		}
		if strings.Contains(err.Error(), "transport-test-token") {
			t.Errorf("the error shows the token: %v", err)
		}
	})
}
