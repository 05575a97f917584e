package worker

import (
	"testing"

	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
)

// A worker starts a Vault source with Vault's defaults when its config has
// no vault: section but VAULT_ADDR is set or a profile references Vault;
// the section wins when there is one.
func TestVaultSettings(t *testing.T) {
	noEnv := func(string) string { return "" }
	withAddr := func(k string) string {
		if k == "VAULT_ADDR" {
			return "https://vault.example:8200"
		}
		return ""
	}
	fileOnly := map[string]secrets.Profile{"a": {Keystore: "file:a.p12", Password: "env:P"}}
	usesVault := map[string]secrets.Profile{"a": {Keystore: "file:a.p12"}, "b": {Keystore: "vault:secret/b#p12", Password: "vault:secret/b#password"}}
	usesPKI := map[string]secrets.Profile{"c": {Keystore: "vault-pki:pki/issue/client?common_name=a"}}
	section := &vault.Config{Address: "https://other.example:8200"}
	cases := []struct {
		name     string
		cfg      Config
		getenv   func(string) string
		want     *vault.Config
		defaults bool
	}{
		{"none/no-reference-no-env", Config{Profiles: fileOnly}, noEnv, nil, false},
		{"defaults/profile-references-vault", Config{Profiles: usesVault}, noEnv, nil, true},
		{"defaults/profile-references-vault-pki", Config{Profiles: usesPKI}, noEnv, nil, true},
		{"defaults/vault-addr-set", Config{Profiles: fileOnly}, withAddr, nil, true},
		{"section/wins", Config{Profiles: usesVault, Vault: section}, withAddr, section, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cfg.VaultSettings(tc.getenv)
			switch {
			case tc.defaults && (got == nil || *got != (vault.Config{})):
				t.Fatalf("VaultSettings = %+v, want Vault's defaults", got)
			case !tc.defaults && got != tc.want:
				t.Fatalf("VaultSettings = %+v, want %+v", got, tc.want)
			}
		})
	}
}
