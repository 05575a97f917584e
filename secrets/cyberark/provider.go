package cyberark

import (
	"context"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Provider starts the source of cyberark: references from the worker
// config's cyberark: section (secrets.Provider). CyberArk has no defaults:
// without the section it does not start.
type Provider struct{}

var _ secrets.Provider = Provider{}

// Section is "cyberark".
func (Provider) Section() string { return "cyberark" }

// Schemes are cyberark:.
func (Provider) Schemes() []string { return []string{secrets.SchemeCyberArk} }

// Missing says how to give a worker CyberArk.
func (Provider) Missing() string {
	return "CyberArk: add a cyberark: section to the worker's config (url, app_id and the client certificate of the Central Credential Provider)"
}

// Start starts the CyberArk source from section; nil does nothing.
func (Provider) Start(ctx context.Context, section *yaml.Node, _ bool, sources *secrets.Sources, log zerolog.Logger) (func(), error) {
	if section == nil {
		return nil, nil
	}
	var cfg Config
	if err := secrets.DecodeSection(section, &cfg); err != nil {
		return nil, err
	}
	c, err := New(ctx, cfg, sources, log)
	if err != nil {
		return nil, err
	}
	c.Register(sources)
	return c.Close, nil
}
