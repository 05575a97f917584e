package vault

import (
	"context"
	"os"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Provider starts the source of vault: and vault-pki: references from the
// worker config's vault: section (secrets.Provider).
type Provider struct {
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

var _ secrets.Provider = Provider{}

// Section is "vault".
func (Provider) Section() string { return "vault" }

// Schemes are vault: and vault-pki:.
func (Provider) Schemes() []string { return []string{secrets.SchemeVault, secrets.SchemeVaultPKI} }

// Missing says how to give a worker Vault.
func (Provider) Missing() string {
	return "Vault: add a vault: section to the worker's config (address and auth), or set VAULT_ADDR and VAULT_TOKEN in the worker's environment (the worker's log says why Vault did not start when they are set)"
}

// Start starts the Vault source. With a vault: section, its settings must
// work. Without one, the source starts with Vault's documented defaults
// (the zero Config: VAULT_ADDR, VAULT_TOKEN and the other VAULT_*
// variables) when VAULT_ADDR is set or a profile references Vault; should
// that fail (no token, say), the worker runs without it and the failure is
// logged, since nothing in the config asked for Vault.
func (p Provider) Start(ctx context.Context, section *yaml.Node, needed bool, sources *secrets.Sources, log zerolog.Logger) (func(), error) {
	cfg, fromEnv, err := p.settings(section, needed)
	if err != nil || cfg == nil {
		return nil, err
	}
	c, err := New(ctx, *cfg, sources, log)
	if err != nil {
		if fromEnv {
			log.Warn().Err(err).Msg("Vault from VAULT_* variables did not start; vault: and vault-pki: references fail until it does: set VAULT_TOKEN, or add a vault: section")
			return nil, nil
		}
		return nil, err
	}
	c.Register(sources)
	return func() { _ = c.Close() }, nil
}

// settings returns the Config to start with, and whether it comes from the
// environment alone; nil when Vault is not to start.
func (p Provider) settings(section *yaml.Node, needed bool) (cfg *Config, fromEnv bool, err error) {
	if section != nil {
		cfg = &Config{}
		if err := secrets.DecodeSection(section, cfg); err != nil {
			return nil, false, err
		}
		return cfg, false, nil
	}
	getenv := p.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if getenv("VAULT_ADDR") != "" || needed {
		return &Config{}, true, nil
	}
	return nil, false, nil
}
