package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/registry"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

func newTestCmd() *cobra.Command {
	var configPath, natsURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test CONNECTION",
		Short: "Check a connection end to end: keystore, certificate expiry, server chain, TLS version, acceptance, credentials (token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			cat := &catalog.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections}
			sources, closeSources, err := secretSources(cmd.Context(), cfg, zerolog.Nop())
			if err != nil {
				return err
			}
			defer closeSources()
			if natsURL == "" && !cfg.Registry.Disabled {
				natsURL = cfg.NATS.URL
			}
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
			// The probe checks mTLS alone; the connection's credentials
			// (auth) are the steps after it.
			probeCat, auth := withoutAuth(cat, args[0])
			rep := worker.Probe(cmd.Context(), probeCat, resolver, args[0])
			if auth != nil && rep.Error == nil {
				testAuth(cmd.Context(), rep, cfg, cat, resolver, args[0])
			}
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

// withoutAuth returns cat with connection name's auth left out, and that
// auth (nil when it has none): the probe tests mTLS without credentials.
func withoutAuth(cat *catalog.Catalog, name string) (*catalog.Catalog, *catalog.Auth) {
	conn, ok := cat.Connections[name]
	if !ok || conn.Auth == nil {
		return cat, nil
	}
	c := *cat
	c.Connections = maps.Clone(cat.Connections)
	auth := conn.Auth
	conn.Auth = nil
	c.Connections[name] = conn
	return &c, auth
}

// testAuth adds the steps of connection name's credentials to rep: for
// oauth2 the token request (endpoint, client authentication, scopes
// granted, expiry, never the token), then a GET of base_url with the
// credentials, as a call would send them, through the connection's proxy.
func testAuth(ctx context.Context, rep *worker.ProbeReport, cfg *worker.Config, cat *catalog.Catalog, resolver *secrets.Resolver, name string) {
	step := func(name string, ok bool, format string, args ...any) {
		rep.Steps = append(rep.Steps, worker.ProbeStep{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	fail := func(name string, err error) {
		rep.Error = jobs.AsError(err)
		step(name, false, "%s: %s", rep.Error.Code, rep.Error.Message)
	}
	conn, prof, err := cat.Lookup(name)
	if err != nil {
		fail("credentials", err)
		return
	}
	mat, err := resolver.Resolve(ctx, conn.Profile, *prof)
	if err != nil {
		fail("credentials", err)
		return
	}
	// As the worker would: through the connection's egress proxy, if any.
	x := outbound.NewExecutor(outbound.ExecutorOptions{MaxIdleConnsPerHost: 1, Secrets: resolver.Secret,
		Proxies: cfg.Proxies, DefaultProxy: cfg.Worker.Proxy})
	defer x.Close()
	a := conn.Auth
	var what string
	if a.Type == catalog.AuthOAuth2 {
		info, err := x.Token(ctx, name, conn, mat)
		if err != nil {
			fail("token", err)
			return
		}
		step("token", true, "%s", describeToken(info))
		what = "the token"
	} else {
		what = describeStaticAuth(a)
	}
	out := x.Attempt(ctx, &jobs.Call{ID: "mtlsrelay-test", Connection: name, Method: "GET"}, conn, mat)
	switch {
	case out.Result.Error != nil:
		fail("credentials", out.Result.Error)
	case out.Result.Status == http.StatusUnauthorized:
		fail("credentials", jobs.Errorf(jobs.CodeAuthFailed,
			"GET %s with %s answered HTTP 401: the partner does not accept the credentials; check them with the partner", conn.BaseURL, what))
	default:
		rep.Status = out.Result.Status
		step("credentials", true, "GET %s with %s answered HTTP %d", conn.BaseURL, what, out.Result.Status)
	}
}

// describeToken says what a token step found, never the token.
func describeToken(t *outbound.TokenInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "from %s for client %q, client_auth %s", t.TokenURL, t.ClientID, t.ClientAuth)
	if t.KeyID != "" {
		fmt.Fprintf(&b, " (kid %s)", t.KeyID)
	}
	switch {
	case t.GrantedNamed && t.Granted == "":
		b.WriteString(", no scopes granted")
	case t.GrantedNamed:
		fmt.Fprintf(&b, ", scopes granted %q", t.Granted)
	case t.Granted != "":
		fmt.Fprintf(&b, ", scopes %q (as requested; the answer named none)", t.Granted)
	}
	if t.Expiry.IsZero() {
		fmt.Fprintf(&b, ", %s token without expiry (renewed at %s)", t.TokenType, t.RenewAt.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, ", %s token valid until %s (%s), renewed at %s", t.TokenType, t.Expiry.UTC().Format(time.RFC3339),
			t.Expiry.Sub(t.Obtained).Round(time.Second), t.RenewAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// describeStaticAuth names the credentials of a basic, bearer or header
// auth, never their value.
func describeStaticAuth(a *catalog.Auth) string {
	switch a.Type {
	case catalog.AuthBasic:
		return fmt.Sprintf("basic credentials of user %q (password %s)", a.Username, secrets.RedactRef(a.Password))
	case catalog.AuthBearer:
		return fmt.Sprintf("the bearer token %s", secrets.RedactRef(a.Token))
	case catalog.AuthHeader:
		return fmt.Sprintf("header %s from %s", a.Name, secrets.RedactRef(a.Value))
	}
	return a.Type
}
