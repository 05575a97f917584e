package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/registry"
	"github.com/mtlsrelay/mtlsrelay/secrets"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// registryTimeout bounds one registry command.
const registryTimeout = 30 * time.Second

// registryFlags are the flags every profile and connection verb shares.
type registryFlags struct {
	natsURL, configPath, keyEnv, keyFile string
}

func (f *registryFlags) add(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.natsURL, "nats", "", "NATS URL (default: nats.url of --config, else nats://127.0.0.1:4222)")
	pf.StringVar(&f.configPath, "config", "", "worker config file to read nats settings and registry.key from")
	pf.StringVar(&f.keyEnv, "key-env", "", "environment variable holding the registry key (base64 or hex, 32 bytes)")
	pf.StringVar(&f.keyFile, "key-file", "", "file holding the registry key (base64 or hex, 32 bytes)")
}

// open connects to NATS and opens the registry; close releases both.
func (f *registryFlags) open(ctx context.Context) (reg *registry.Registry, closeFn func(), err error) {
	cfg := &worker.Config{}
	dir, _ := os.Getwd()
	if f.configPath != "" {
		if cfg, err = worker.LoadConfig(f.configPath); err != nil {
			return nil, nil, err
		}
		dir = cfg.Dir
	}
	url := f.natsURL
	if url == "" {
		url = cfg.NATS.URL
	}
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	key := cfg.Registry.Key
	switch {
	case f.keyEnv != "" && f.keyFile != "":
		return nil, nil, fmt.Errorf("give --key-env or --key-file, not both")
	case f.keyEnv != "":
		key = "env:" + f.keyEnv
	case f.keyFile != "":
		abs, err := filepath.Abs(f.keyFile)
		if err != nil {
			return nil, nil, err
		}
		key = "file:" + abs
	}
	if cfg.Dir == "" {
		cfg.Dir = dir
	}
	auth, err := natsAuthOptions(url, cfg)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(auth, nats.Name("mtlsrelay registry command"))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w; pass --nats or start a worker", redactURL(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	reg, err = registry.Open(ctx, js, registry.Options{
		Sources: secrets.DefaultSources(dir), Key: key, Replicas: cfg.NATS.Replicas,
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return reg, nc.Close, nil
}

// withRegistry runs fn with an open registry and a bounded context.
func (f *registryFlags) withRegistry(cmd *cobra.Command, fn func(ctx context.Context, reg *registry.Registry) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), registryTimeout)
	defer cancel()
	reg, closeFn, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(ctx, reg)
}

func newProfileCmd() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{Use: "profile", Short: "Manage the mTLS profiles of the shared registry (NATS KV mtlsrelay_registry)"}
	rf.add(cmd)
	cmd.AddCommand(newProfilePutCmd(&rf), newProfileGetCmd(&rf), newProfileListCmd(&rf), newProfileRmCmd(&rf))
	return cmd
}

func newProfilePutCmd(rf *registryFlags) *cobra.Command {
	var (
		keystoreFile, keystoreRef, passwordEnv, passwordFile, passwordRef string
		truststore, truststorePasswordRef                                 string
		p                                                                 secrets.Profile
		noVerify                                                          bool
	)
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Check a profile's keystore and store the profile (uploading the keystore with --keystore)",
		Long: `Check a profile's keystore and store the profile in the registry.

--keystore FILE uploads the keystore to keystores.NAME; --keystore-ref REF names one
the workers read (file:, env:, vault:...). A password given with --password-env or
--password-file is stored sealed with the registry key (AES-256-GCM), which the
command reads with --key-env, --key-file or registry.key of --config; --password-ref
REF stores a reference the workers read instead. The keystore must open with its
password here before anything is stored; --no-verify stores a profile whose
references only the workers can read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var upload []byte
			switch {
			case keystoreFile != "" && keystoreRef != "":
				return fmt.Errorf("give --keystore FILE or --keystore-ref REF, not both")
			case keystoreFile != "":
				data, err := os.ReadFile(keystoreFile)
				if err != nil {
					return fmt.Errorf("--keystore: %w", err)
				}
				upload = data
				defer clear(upload)
			case keystoreRef != "":
				p.Keystore = keystoreRef
			default:
				return fmt.Errorf("give the keystore: --keystore FILE to upload it, or --keystore-ref REF")
			}
			given := 0
			for _, v := range []string{passwordEnv, passwordFile, passwordRef} {
				if v != "" {
					given++
				}
			}
			if given > 1 {
				return fmt.Errorf("give one of --password-env, --password-file and --password-ref")
			}
			if passwordRef != "" {
				p.Password = passwordRef
			} else if given == 1 {
				pw, err := readPassword(passwordEnv, passwordFile)
				if err != nil {
					return err
				}
				p.Password = secrets.SchemeValue + ":" + string(pw)
				clear(pw)
			}
			ts, err := truststoreRef(truststore)
			if err != nil {
				return err
			}
			p.Truststore = ts
			p.TruststorePassword = truststorePasswordRef
			var opts []registry.PutOption
			if noVerify {
				opts = append(opts, registry.AllowUnreadable(func(err error) {
					fmt.Fprintln(os.Stderr, "mtlsrelay: warning:", err)
				}))
			}
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.PutProfile(ctx, name, p, upload, opts...); err != nil {
					return err
				}
				e, err := reg.GetProfile(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stdout, "profile %s stored (revision %d): %s\n", name, e.Revision, describeProfile(e))
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&keystoreFile, "keystore", "", "keystore file to upload (PKCS#12, JKS or encrypted PEM)")
	f.StringVar(&keystoreRef, "keystore-ref", "", "keystore reference the workers read instead (file:, vault:, registry:keystores/NAME...)")
	f.StringVar(&p.Key, "key-ref", "", "reference of the PEM private key when the keystore is a PEM certificate kept apart from it (file:, vault:...)")
	f.StringVar(&passwordEnv, "password-env", "", "environment variable holding the keystore password; stored sealed")
	f.StringVar(&passwordFile, "password-file", "", "file holding the keystore password; stored sealed")
	f.StringVar(&passwordRef, "password-ref", "", "password reference the workers read instead (env:NAME, file:PATH, vault:...)")
	f.StringVar(&truststore, "truststore", "", "server CAs: a local file (uploaded inline) or a reference (file:, vault:...); default the system roots")
	f.StringVar(&truststorePasswordRef, "truststore-password-ref", "", "reference of the truststore's password, if it has one")
	f.StringVar(&p.KeyAlias, "key-alias", "", "key entry to use in a keystore with several")
	f.StringVar(&p.ServerName, "server-name", "", "name the server certificate is checked against (default: the URL's host)")
	f.StringVar(&p.MinTLSVersion, "min-tls-version", "", "1.2 (default) or 1.3")
	f.StringVar(&p.Renegotiation, "renegotiation", "", "never (default), once or freely")
	f.BoolVar(&noVerify, "no-verify", false, "store the profile even if its references can only be read by the workers")
	return cmd
}

// truststoreRef turns --truststore into a reference: an existing local file
// is stored inline (CA certificates are public), anything else is taken as a
// reference for the workers.
func truststoreRef(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	st, err := os.Stat(v)
	if err != nil || st.IsDir() {
		if _, perr := secrets.ParseRef(v); perr != nil {
			return "", fmt.Errorf("--truststore %s is neither a readable file nor a reference (file:PATH, vault:...)", v)
		}
		return v, nil
	}
	data, err := os.ReadFile(v)
	if err != nil {
		return "", fmt.Errorf("--truststore: %w", err)
	}
	if strings.Contains(string(data), "-----BEGIN") {
		return string(data), nil
	}
	return secrets.SchemeBase64 + ":" + base64.StdEncoding.EncodeToString(data), nil
}

// describeProfile says in a few words where a profile's secrets are.
func describeProfile(e *registry.ProfileEntry) string {
	parts := []string{"keystore " + refText(e.Profile.Keystore)}
	if e.KeystoreUploaded {
		parts[0] += " (uploaded)"
	}
	switch {
	case slices.Contains(e.Sealed, "password"):
		parts = append(parts, "password sealed")
	case e.Profile.Password != "":
		parts = append(parts, "password "+refText(e.Profile.Password))
	default:
		parts = append(parts, "no password")
	}
	return strings.Join(parts, ", ")
}

// refText prints a reference redacted.
func refText(s string) string {
	r, err := secrets.ParseRef(s)
	if err != nil {
		return "[invalid reference]"
	}
	return r.String()
}

func newProfileGetCmd(rf *registryFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a profile as JSON (a stored password is never printed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				e, err := reg.GetProfile(ctx, args[0])
				if err != nil {
					return err
				}
				return printJSON(e)
			})
		},
	}
}

func newProfileListCmd(rf *registryFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registry's profiles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				list, err := reg.ListProfiles(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(list)
				}
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tREVISION\tUPDATED\tSECRETS")
				for _, e := range list {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Name, e.Revision, e.Updated.UTC().Format(time.RFC3339), describeProfile(&e))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newProfileRmCmd(rf *registryFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a profile and the keystore uploaded with it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.DeleteProfile(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(os.Stdout, "profile %s removed\n", args[0])
				return nil
			})
		},
	}
}

func newConnectionCmd() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{Use: "connection", Short: "Manage the connections of the shared registry (NATS KV mtlsrelay_registry)"}
	rf.add(cmd)
	cmd.AddCommand(newConnectionPutCmd(&rf), newConnectionGetCmd(&rf), newConnectionListCmd(&rf), newConnectionRmCmd(&rf))
	return cmd
}

func newConnectionPutCmd(rf *registryFlags) *cobra.Command {
	var (
		c       catalog.Connection
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Check and store a connection; workers apply it within 2 seconds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c.Timeout = catalog.Duration(timeout)
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.PutConnection(ctx, name, c); err != nil {
					return err
				}
				e, err := reg.GetConnection(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stdout, "connection %s stored (revision %d)\n", name, e.Revision)
				if _, err := reg.GetProfile(ctx, c.Profile); errors.Is(err, registry.ErrNotFound) {
					fmt.Fprintf(os.Stderr, "mtlsrelay: note: profile %s is not in the registry; the workers' config files must define it\n", c.Profile)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.BaseURL, "base-url", "", "https URL call paths are joined to (required)")
	f.StringVar(&c.Profile, "profile", "", "mTLS profile whose client certificate is presented (required)")
	f.StringArrayVar(&c.AllowHosts, "allow-host", nil, "another host a call's url may name: host, host:port or *.suffix (repeatable)")
	f.DurationVar(&timeout, "timeout", 0, "deadline of one attempt (default 30s)")
	f.IntVar(&c.MaxAttempts, "max-attempts", 0, "attempts per call (default 5)")
	f.IntVar(&c.MaxConns, "max-conns", 0, "connections per worker to the partner (default: the worker's concurrency)")
	f.Float64Var(&c.RateLimit, "rate-limit", 0, "calls per second per worker (default no limit)")
	f.Int64Var(&c.MaxResponseBytes, "max-response-bytes", 0, "largest response body (default 5 MiB)")
	f.StringVar(&c.Zone, "zone", "", "zone whose workers run its calls (default \"default\"); changing it moves the connection live")
	f.StringVar(&c.WSDL, "wsdl", "", "the partner's WSDL, so calls may name soap.operation: \"?wsdl\" (relative to base-url), an https URL or file:/path")
	return cmd
}

func newConnectionGetCmd(rf *registryFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a connection as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				e, err := reg.GetConnection(ctx, args[0])
				if err != nil {
					return err
				}
				return printJSON(e)
			})
		},
	}
}

func newConnectionListCmd(rf *registryFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registry's connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				list, err := reg.ListConnections(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(list)
				}
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPROFILE\tBASE URL\tREVISION\tUPDATED")
				for _, e := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.Name, e.Connection.Profile, e.Connection.BaseURL, e.Revision, e.Updated.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newConnectionRmCmd(rf *registryFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a connection",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rf.withRegistry(cmd, func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.DeleteConnection(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(os.Stdout, "connection %s removed\n", args[0])
				return nil
			})
		},
	}
}
