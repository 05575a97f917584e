package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/logging"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/registry"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
	"github.com/mtlsrelay/mtlsrelay/secrets/vault"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newServeCmd() *cobra.Command {
	var (
		configPath, natsURL, dataDir, listen, adminAddr, name, logLevel, logFormat string
		concurrency                                                                int
		zones                                                                      []string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a worker (with an embedded NATS server unless --nats or nats.url is set)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			set := func(dst *string, v string) {
				if v != "" {
					*dst = v
				}
			}
			set(&cfg.NATS.URL, natsURL)
			set(&cfg.NATS.Embedded.DataDir, dataDir)
			set(&cfg.NATS.Embedded.Listen, listen)
			set(&cfg.Worker.AdminAddr, adminAddr)
			set(&cfg.Worker.Name, name)
			set(&cfg.Log.Level, logLevel)
			set(&cfg.Log.Format, logFormat)
			if concurrency > 0 {
				cfg.Worker.Concurrency = concurrency
				cfg.Worker.FetchBatch = concurrency
			}
			if len(zones) > 0 {
				cfg.Worker.Zones = zones
				if err := cfg.Validate(); err != nil {
					return err
				}
			}
			log, closeLog, err := logging.Open(os.Stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return err
			}
			defer closeLog()
			return serve(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file")
	f.StringVar(&natsURL, "nats", "", "NATS URL of an external cluster (default: start an embedded server)")
	f.StringVar(&dataDir, "data-dir", "", "embedded server's JetStream directory (default ./mtlsrelay-data)")
	f.StringVar(&listen, "listen", "", "embedded server's client address (default 127.0.0.1:4222; a non-loopback address needs nats.embedded.users or accounts_file)")
	f.StringVar(&adminAddr, "admin-addr", "", "address of /healthz, /readyz, /metrics (default 127.0.0.1:9464, \"off\" disables)")
	f.StringVar(&name, "name", "", "worker name in results and logs (default host-pid)")
	f.IntVar(&concurrency, "concurrency", 0, "calls in flight (default 64)")
	f.StringSliceVar(&zones, "zones", nil, "zones whose calls this worker runs, replacing worker.zones (default [default]); e.g. --zones=dmz")
	f.StringVar(&logLevel, "log-level", "", "trace, debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "", "json, console or auto")
	return cmd
}

func loadConfig(path string) (*worker.Config, error) {
	if path == "" {
		cfg, err := worker.ParseConfig(nil)
		if err != nil {
			return nil, err
		}
		cfg.Dir, _ = os.Getwd()
		return cfg, nil
	}
	return worker.LoadConfig(path)
}

func serve(ctx context.Context, cfg *worker.Config, log zerolog.Logger) error {
	name := "mtlsrelay worker " + cfg.Worker.Name
	rt := worker.TuneRuntime(cfg)
	ev := log.Info().Int("gc_percent", rt.GCPercent).Str("gc_percent_from", rt.GCFrom)
	if rt.MemoryLimit > 0 {
		ev = ev.Int64("memory_limit", rt.MemoryLimit).Str("memory_limit_from", rt.Source)
	}
	ev.Msg("Go runtime tuned")
	if rt.Warning != "" {
		log.Warn().Msg(rt.Warning)
	}
	var nc *nats.Conn
	if cfg.NATS.URL == "" {
		srv, err := startEmbedded(ctx, cfg)
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		auth := "none (loopback only)"
		switch {
		case srv.Internal():
			auth = "nats.embedded.users"
		case srv.Auth():
			auth = "nats.embedded.accounts_file"
		}
		log.Info().Str("url", srv.ClientURL()).Str("data_dir", cfg.NATS.Embedded.DataDir).Str("auth", auth).
			Msg("embedded NATS server with JetStream started")
		if nc, err = connectEmbedded(srv, cfg, name, log); err != nil {
			return err
		}
	} else {
		var err error
		if nc, err = connectNATS(cfg.NATS.URL, cfg, name, log); err != nil {
			return err
		}
	}
	defer nc.Close()
	sources, closeSources, err := secretSources(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeSources()
	var reg *registry.Registry
	if !cfg.Registry.Disabled {
		if reg, err = openRegistry(ctx, nc, cfg, sources, log); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	wopts := []worker.Option{worker.WithLogger(log), worker.WithResolver(secrets.NewResolver(sources))}
	if tp, stopTracing, err := worker.TracerProviderFromEnv(ctx, cfg.Worker.Name); err != nil {
		log.Warn().Err(err).Msg("tracing off: the OTEL_* settings are not usable")
	} else if tp != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn().Err(err).Msg("OpenTelemetry") }))
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = stopTracing(sctx)
		}()
		wopts = append(wopts, worker.WithTracerProvider(tp))
		log.Info().Msg("tracing on: exporting spans over OTLP")
	}
	w, err := worker.New(cfg, nc, wopts...)
	if err != nil {
		return err
	}
	if reg != nil {
		watchRegistry(ctx, reg, w, cfg, log)
	}
	if cfg.Worker.AdminAddr != "off" {
		ln, err := net.Listen("tcp", cfg.Worker.AdminAddr)
		if err != nil {
			return fmt.Errorf("admin address %s: %w", cfg.Worker.AdminAddr, err)
		}
		admin := &http.Server{Handler: w.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Msg("admin server stopped")
			}
		}()
		defer admin.Close()
		log.Info().Str("addr", ln.Addr().String()).Msg("admin endpoints /healthz /readyz /metrics")
	}
	return w.Run(ctx)
}

// openRegistry opens the registry bucket on the worker's connection (waiting
// for NATS if needed) and registers its registry: Source on sources.
func openRegistry(ctx context.Context, nc *nats.Conn, cfg *worker.Config, sources *secrets.Sources, log zerolog.Logger) (*registry.Registry, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	reg, err := registry.Open(log.WithContext(ctx), js, registry.Options{
		Sources: sources, Key: cfg.Registry.Key, Replicas: cfg.NATS.Replicas, Wait: true,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	sources.Register(secrets.SchemeRegistry, reg.Source())
	return reg, nil
}

// watchRegistry applies the registry to w on every change, merged with the
// config file's profiles and connections, and returns once the registry has
// been read (or after 10s, so a slow registry does not stop the worker).
func watchRegistry(ctx context.Context, reg *registry.Registry, w *worker.Worker, cfg *worker.Config, log zerolog.Logger) {
	applied := make(chan struct{})
	var once sync.Once
	go reg.Watch(log.WithContext(ctx), func(s registry.Snapshot) {
		w.SetCatalog(registry.Merge(cfg.Profiles, cfg.Connections, s, cfg.Registry.AllowLocalRefs, log))
		log.Info().Int("profiles", len(s.Profiles)).Int("connections", len(s.Connections)).
			Uint64("revision", s.Revision).Msg("registry applied")
		once.Do(func() { close(applied) })
	})
	select {
	case <-applied:
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		log.Warn().Msg("registry not read within 10s; starting with the config file's profiles and connections")
	}
}

// connectNATS connects with reconnection forever, so a worker rides out a
// NATS restart or failover. Credentials of cfg are refused over plain
// nats:// to a non-loopback server unless nats.allow_plaintext is set.
func connectNATS(url string, cfg *worker.Config, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := append(reconnectOptions(log), nats.Name(name), nats.RetryOnFailedConnect(true))
	opts = append(opts, extra...)
	if cfg == nil {
		cfg = &worker.Config{} // still refuse a password in the URL over plain nats://
	}
	auth, err := natsAuthOptions(url, cfg)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, auth...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(url), err)
	}
	return nc, nil
}

// reconnectOptions reconnect forever and log disconnections.
func reconnectOptions(log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() {
				return // closed on purpose, at shutdown
			}
			log.Warn().Err(err).Msg("NATS disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("NATS reconnected")
		}),
	}
}

// natsAuthOptions returns the authentication and TLS options of cfg's nats
// section for a connection to url (comma-separated servers), after
// refusing credentials that would cross the network in clear text. Every
// command that connects to NATS uses it.
func natsAuthOptions(url string, cfg *worker.Config) ([]nats.Option, error) {
	if err := cfg.NATS.CheckPlaintext(url); err != nil {
		return nil, err
	}
	return cfg.NATS.AuthOptions(context.Background(), secrets.DefaultSources(cfg.Dir), cfg.Dir)
}

// startEmbedded starts the embedded NATS server of cfg, with the users or
// accounts file of nats.embedded; it refuses a non-loopback listen address
// without them.
func startEmbedded(ctx context.Context, cfg *worker.Config) (*embedded.Server, error) {
	e := cfg.NATS.Embedded
	users, err := e.ResolvedUsers(ctx, secrets.DefaultSources(cfg.Dir), cfg.Dir)
	if err != nil {
		return nil, err
	}
	opts := embedded.Options{Listen: e.Listen, StoreDir: e.DataDir, AccountsFile: e.AccountsFile}
	if n := cfg.NATS.Partitions; n > 1 {
		src, dst := jobs.Subjects{Prefix: cfg.NATS.Prefix}.PartitionMapping(n)
		opts.Mappings = map[string]string{src: dst}
	}
	if opts.AccountsFile != "" && !filepath.IsAbs(opts.AccountsFile) && cfg.Dir != "" {
		opts.AccountsFile = filepath.Join(cfg.Dir, opts.AccountsFile)
	}
	for _, u := range users {
		opts.Users = append(opts.Users, embedded.User{Name: u.User, Password: u.Password})
	}
	return embedded.StartServer(opts)
}

// connectEmbedded connects the worker to its own embedded server, in
// process: nothing crosses the network. With nats.embedded.users it
// connects as the internal user, whose random password is made at each
// start; with nats.embedded.accounts_file, as the user of that file that
// nats.user/password (or token, nkey_seed_file) names. The
// first connection must succeed, so a wrong user stops the worker at once.
func connectEmbedded(srv *embedded.Server, cfg *worker.Config, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := append(reconnectOptions(log), nats.Name(name))
	opts = append(opts, srv.ConnectOptions()...)
	if srv.Auth() && !srv.Internal() {
		if !cfg.NATS.HasCredentials() && srv.NoAuthUser() == "" {
			return nil, fmt.Errorf("nats.embedded.accounts_file: the worker connects to its embedded server as a user of that file: " +
				"set nats.user and nats.password (or nats.nkey_seed_file, nats.token) to the workers' user, e.g. user worker of docs/nats-accounts.conf")
		}
		// In process: no TLS, and no URL the credentials could leak to.
		n := cfg.NATS
		n.TLS = worker.NATSTLSConfig{}
		auth, err := n.AuthOptions(context.Background(), secrets.DefaultSources(cfg.Dir), cfg.Dir)
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth...)
	}
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		if srv.Auth() && !srv.Internal() {
			// A refused login closes the in-process pipe without an -ERR.
			return nil, fmt.Errorf("the embedded NATS server refused the worker (%w): nats.user and nats.password (or nats.token, nats.nkey_seed_file) "+
				"must be those of a user of nats.embedded.accounts_file, in an account with jetstream enabled", err)
		}
		return nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
	}
	return nc, nil
}

// redactURL hides user information in NATS URLs before they are printed.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = neturl.User("[redacted]")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// providers are the secret providers a worker can start from its config:
// adding one is its package and a line here.
func providers() []secrets.Provider {
	return []secrets.Provider{
		vault.Provider{},
		cyberark.Provider{},
	}
}

// secretSources returns the secret sources cfg enables: file, env and
// inline always; each provider whose section the config has, or whose
// defaults its profiles call for. The returned function stops their
// background work (token renewal).
func secretSources(ctx context.Context, cfg *worker.Config, log zerolog.Logger) (*secrets.Sources, func(), error) {
	sources := secrets.DefaultSources(cfg.Dir)
	stop, err := secrets.StartProviders(ctx, providers(), cfg.Providers, cfg.Profiles, sources, log)
	if err != nil {
		return nil, stop, err
	}
	return sources, stop, nil
}
