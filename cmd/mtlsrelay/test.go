package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/registry"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newTestCmd() *cobra.Command {
	var configPath, natsURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test CONNECTION",
		Short: "Check a connection end to end, as a worker calls it: keystore, certificate expiry, proxy, server chain, TLS version, acceptance, credentials (token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := loadConnectionEnv(cmd.Context(), configPath, natsURL)
			if err != nil {
				return err
			}
			defer env.close()
			cfg, cat, sources, natsURL := env.cfg, env.cat, env.sources, env.natsURL
			// The registry adds what the config file does not define. When
			// it cannot be read, the file's connections are tested all the
			// same, and the report says what could not be checked.
			var registryStep *worker.ProbeStep
			if natsURL != "" {
				registryStep = &worker.ProbeStep{Name: "registry", OK: true, Detail: "read at " + redactURL(natsURL)}
				// The connection stays open for the probe: the registry's
				// source reads keystores through it.
				nc, err := connectNATS(natsURL, cfg, "mtlsrelay test", zerolog.Nop())
				if err == nil {
					defer nc.Close()
					err = addFromRegistry(cmd.Context(), nc, cfg, sources, cat, args[0])
				}
				if err != nil {
					registryStep.OK = false
					registryStep.Detail = fmt.Sprintf("not read at %s (%v); tested what the config file defines, without the registry's profiles and connections", redactURL(natsURL), err)
				}
			}
			resolver := secrets.NewResolver(sources)
			// As the worker would: its executor's options, so through the
			// connection's egress proxy, with the connection's credentials.
			rep := worker.Probe(cmd.Context(), cat, resolver, worker.ExecutorOptions(cfg, resolver), args[0])
			if registryStep != nil {
				rep.Steps = append([]worker.ProbeStep{*registryStep}, rep.Steps...)
			}
			if asJSON {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				for _, s := range rep.Steps {
					mark := "ok  "
					if !s.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(os.Stdout, "%s %-18s %s\n", mark, s.Name, s.Detail)
				}
			}
			if rep.Error != nil {
				return exitCode(2)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file with the connection and its profile")
	cmd.Flags().StringVar(&natsURL, "nats", "", "NATS URL, to find the connection and its profile in the registry too (default: nats.url of --config)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// connectionEnv is what a command about one connection (test, soap
// describe) needs: the config file, a catalog of its profiles and
// connections, the secret sources, and the registry's NATS URL ("" when
// there is none).
type connectionEnv struct {
	cfg     *worker.Config
	cat     *catalog.Catalog
	sources *secrets.Sources
	natsURL string
	close   func()
}

// loadConnectionEnv loads the config file at configPath; natsURL, when
// set, overrides its nats.url for the registry.
func loadConnectionEnv(ctx context.Context, configPath, natsURL string) (*connectionEnv, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	sources, closeSources, err := secretSources(ctx, cfg, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	if natsURL == "" && !cfg.Registry.Disabled {
		natsURL = cfg.NATS.URL
	}
	return &connectionEnv{
		cfg:     cfg,
		cat:     &catalog.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections},
		sources: sources,
		natsURL: natsURL,
		close:   closeSources,
	}, nil
}

// addFromRegistry adds connection name and its profile from the registry to
// cat when the config file does not define them, as a worker would see
// them, and registers the registry's source for their secrets.
func addFromRegistry(ctx context.Context, nc *nats.Conn, cfg *worker.Config, sources *secrets.Sources, cat *catalog.Catalog, name string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reg, err := registry.Open(rctx, js, registry.Options{Sources: sources, Key: cfg.Registry.Key})
	if err != nil {
		return fmt.Errorf("open the registry: %w", err)
	}
	sources.Register(secrets.SchemeRegistry, reg.Source())
	cat.Profiles, cat.Connections = maps.Clone(cat.Profiles), maps.Clone(cat.Connections)
	if cat.Profiles == nil {
		cat.Profiles = map[string]secrets.Profile{}
	}
	if cat.Connections == nil {
		cat.Connections = map[string]catalog.Connection{}
	}
	conn, ok := cat.Connections[name]
	if !ok {
		e, err := reg.GetConnection(rctx, name)
		if errors.Is(err, registry.ErrNotFound) {
			return nil // Probe reports unknown_connection
		}
		if err != nil {
			return err
		}
		conn = e.Connection
		cat.Connections[name] = conn
	}
	if _, ok := cat.Profiles[conn.Profile]; !ok {
		e, err := reg.GetProfile(rctx, conn.Profile)
		if errors.Is(err, registry.ErrNotFound) {
			return nil // Probe reports unknown_profile
		}
		if err != nil {
			return err
		}
		cat.Profiles[conn.Profile] = e.Profile
	}
	return nil
}
