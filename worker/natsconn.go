package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
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
		return fetchRef(ctx, sources, dir, what, ref)
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
	if c.usesTLS() {
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

// fetchRef reads the secret reference ref of key nats.<what>, without
// its trailing newline.
func fetchRef(ctx context.Context, sources *secrets.Sources, dir, what, ref string) (string, error) {
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

// HasCredentials reports whether c authenticates to NATS: creds_file,
// user, token or nkey_seed_file.
func (c NATSConfig) HasCredentials() bool {
	return c.CredsFile != "" || c.User != "" || c.Token != "" || c.NKeySeedFile != ""
}

// usesTLS reports whether the tls settings make every connection TLS
// (AuthOptions adds nats.Secure when any of them is set).
func (c NATSConfig) usesTLS() bool {
	t := c.TLS
	return t.CAFile != "" || t.CertFile != "" || t.ServerName != ""
}

// CheckPlaintext refuses to send NATS credentials in clear text: with
// credentials (creds_file, user and password, token, nkey_seed_file, or a
// user in the URL itself), every server of urls (comma-separated, as
// nats.url and --nats take them) must be reached over TLS (a tls:// or
// wss:// URL, or nats.tls settings) or be on a loopback address
// (localhost, 127.0.0.0/8, ::1), unless nats.allow_plaintext is true.
// Without credentials there is nothing to leak and every URL passes.
// Call it before connecting to urls with c's AuthOptions.
func (c NATSConfig) CheckPlaintext(urls string) error {
	if c.AllowPlaintext || c.usesTLS() {
		return nil
	}
	var what string
	switch {
	case c.CredsFile != "":
		what = "nats.creds_file"
	case c.User != "":
		what = "nats.user and nats.password"
	case c.Token != "":
		what = "nats.token"
	case c.NKeySeedFile != "":
		what = "nats.nkey_seed_file"
	}
	for _, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := parseNATSURL(raw)
		if err != nil {
			return fmt.Errorf("NATS URL %q: %w", redactUserinfo(raw), err)
		}
		switch strings.ToLower(u.Scheme) {
		case "tls", "wss":
			continue
		}
		sends := what
		if sends == "" && u.User != nil {
			sends = "the user in the URL"
		}
		if sends == "" || isLoopbackHost(u.Hostname()) {
			continue
		}
		return fmt.Errorf("refusing to send %s to NATS at %s over plain %s://: anyone on the network between could read them. "+
			"Use tls://%s (with nats.tls.ca_file for a private CA), or set nats.allow_plaintext: true if the network is trusted",
			sends, u.Host, strings.ToLower(u.Scheme), u.Host)
	}
	return nil
}

// parseNATSURL parses one NATS server URL; without a scheme it is nats://,
// as nats.go reads it.
func parseNATSURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Host == "" {
		return nil, errors.New("no host")
	}
	return u, nil
}

// redactUserinfo hides a password in a URL that does not parse.
func redactUserinfo(s string) string {
	if at := strings.LastIndex(s, "@"); at >= 0 {
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			return s[:i+3] + "[redacted]" + s[at:]
		}
		return "[redacted]" + s[at:]
	}
	return s
}

// isLoopbackHost reports whether host is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ResolvedUsers returns the users of the embedded server with their
// passwords read from their secret references (env:, file: relative to
// dir, value:), in order: what the embedded server is started with.
func (c EmbeddedConfig) ResolvedUsers(ctx context.Context, sources *secrets.Sources, dir string) ([]EmbeddedUser, error) {
	out := make([]EmbeddedUser, 0, len(c.Users))
	for i, u := range c.Users {
		if u.Password == "" {
			return nil, fmt.Errorf("nats.embedded.users[%d] (%s): password is empty; give a secret reference such as env:NATS_PASSWORD", i, u.User)
		}
		pw, err := fetchRef(ctx, sources, dir, fmt.Sprintf("embedded.users[%d].password", i), u.Password)
		if err != nil {
			return nil, err
		}
		if pw == "" {
			return nil, fmt.Errorf("nats.embedded.users[%d] (%s): the password %s is empty", i, u.User, secrets.RedactRef(u.Password))
		}
		out = append(out, EmbeddedUser{User: u.User, Password: pw})
	}
	return out, nil
}

// Validate checks the nats section without connecting anywhere or reading
// secrets: the embedded server's authentication (users or accounts_file,
// not both; user names and password references) and the secret references
// of password and token. The URL's transport is checked when connecting
// (CheckPlaintext), since --nats may replace it.
func (c NATSConfig) Validate() error {
	var errs []error
	e := c.Embedded
	if len(e.Users) > 0 && e.AccountsFile != "" {
		errs = append(errs, errors.New("nats.embedded: give users or accounts_file, not both"))
	}
	seen := map[string]bool{}
	for i, u := range e.Users {
		switch {
		case u.User == "":
			errs = append(errs, fmt.Errorf("nats.embedded.users[%d]: user is empty", i))
		case seen[u.User]:
			errs = append(errs, fmt.Errorf("nats.embedded.users[%d]: user %q is listed twice", i, u.User))
		}
		seen[u.User] = true
		if u.Password == "" {
			errs = append(errs, fmt.Errorf("nats.embedded.users[%d]: password is empty; give a secret reference such as env:NATS_PASSWORD", i))
		} else if _, err := secrets.ParseRef(u.Password); err != nil {
			errs = append(errs, fmt.Errorf("nats.embedded.users[%d].password: %w", i, err))
		}
	}
	for _, r := range []struct{ key, ref string }{{"password", c.Password}, {"token", c.Token}} {
		if r.ref == "" {
			continue
		}
		if _, err := secrets.ParseRef(r.ref); err != nil {
			errs = append(errs, fmt.Errorf("nats.%s: %w", r.key, err))
		}
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("nats.password is set without nats.user"))
	}
	return errors.Join(errs...)
}
