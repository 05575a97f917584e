package vault

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Vault starts from its section when the config has one; else with
// Vault's defaults when VAULT_ADDR is set or a profile references Vault;
// else not at all.
func TestProviderSettings(t *testing.T) {
	noEnv := func(string) string { return "" }
	withAddr := func(k string) string {
		if k == "VAULT_ADDR" {
			return "https://vault.example:8200"
		}
		return ""
	}
	var section yaml.Node
	if err := yaml.Unmarshal([]byte("address: https://other.example:8200\n"), &section); err != nil {
		t.Fatal(err)
	}
	var typo yaml.Node
	if err := yaml.Unmarshal([]byte("adress: https://other.example:8200\n"), &typo); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		section  *yaml.Node
		needed   bool
		getenv   func(string) string
		start    bool
		fromEnv  bool
		address  string
		wantFail bool
	}{
		{"none/no-reference-no-env", nil, false, noEnv, false, false, "", false},
		{"defaults/profile-references-vault", nil, true, noEnv, true, true, "", false},
		{"defaults/vault-addr-set", nil, false, withAddr, true, true, "", false},
		{"section/wins", section.Content[0], true, withAddr, true, false, "https://other.example:8200", false},
		{"section/unknown-key", typo.Content[0], false, noEnv, false, false, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, fromEnv, err := Provider{Getenv: tc.getenv}.settings(tc.section, tc.needed)
			if (err != nil) != tc.wantFail {
				t.Fatalf("err = %v, want failure %v", err, tc.wantFail)
			}
			if (cfg != nil) != tc.start || fromEnv != tc.fromEnv || (cfg != nil && cfg.Address != tc.address) {
				t.Fatalf("settings = %+v, from env %v; want start %v, from env %v, address %q", cfg, fromEnv, tc.start, tc.fromEnv, tc.address)
			}
		})
	}
}

// netReason names a transport failure without its text, and keeps the
// host of a DNS lookup that timed out.
func TestNetReason(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&net.DNSError{Name: "vault.example", Err: "i/o timeout", IsTimeout: true}, "DNS lookup of vault.example timed out"},
		{&net.DNSError{Name: "vault.example", Err: "no such host", IsNotFound: true}, "DNS lookup of vault.example failed"},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "no answer before the deadline"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection refused"},
	}
	for _, tc := range cases {
		if got := netReason(tc.err); got != tc.want {
			t.Errorf("netReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
