package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// AuthOptions returns the nats.Options that authenticate and secure the
// connection as c says: credentials file, user and password, token, NKey
// seed, and TLS (with a client certificate for mTLS). Secret references
// (password, token) are fetched from sources; relative file paths are
// relative to dir, the config file's folder.
func (c NATSConfig) AuthOptions(ctx context.Context, sources *secrets.Sources, dir string) ([]nats.Option, error) {
	var opts []nats.Option
	path := func(p string) string {
		if p == "" || filepath.IsAbs(p) || dir == "" {
			return p
		}
		return filepath.Join(dir, p)
	}
	fetch := func(what, ref string) (string, error) {
		r, err := secrets.ParseRef(ref)
		if err != nil {
			return "", fmt.Errorf("nats.%s: %w", what, err)
		}
		sec, err := sources.Fetch(ctx, r.Resolve(dir))
		if err != nil {
			return "", fmt.Errorf("nats.%s: %w", what, err)
		}
		return strings.TrimRight(string(sec.Data), "\r\n"), nil
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(path(c.CredsFile)))
	}
	if c.User != "" {
		pw := ""
		if c.Password != "" {
			v, err := fetch("password", c.Password)
			if err != nil {
				return nil, err
			}
			pw = v
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	if c.Token != "" {
		tok, err := fetch("token", c.Token)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	}
	if c.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(path(c.NKeySeedFile))
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, opt)
	}
	t := c.TLS
	if t.CAFile != "" || t.CertFile != "" || t.ServerName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CAFile != "" {
			pem, err := os.ReadFile(path(t.CAFile))
			if err != nil {
				return nil, fmt.Errorf("nats.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("nats.tls.ca_file %s holds no PEM certificate", t.CAFile)
			}
			cfg.RootCAs = pool
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, fmt.Errorf("nats.tls: give both cert_file and key_file, or neither")
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(path(t.CertFile), path(t.KeyFile))
			if err != nil {
				return nil, fmt.Errorf("nats.tls client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}
