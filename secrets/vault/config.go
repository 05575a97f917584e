package vault

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The auth methods Config.Auth.Method accepts.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
	AuthCert       = "cert"
)

// Defaults of Config.
const (
	// DefaultPKIRenewFraction is the part of a PKI certificate's lifetime
	// after which a new one is issued.
	DefaultPKIRenewFraction = 2.0 / 3.0
	// DefaultPollInterval is how long a KV secret read from Vault is reused
	// before Vault is asked again.
	DefaultPollInterval = 10 * time.Second
	// DefaultJWTPath is where Kubernetes mounts a pod's service account token.
	DefaultJWTPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Config says how a worker reaches Vault and logs in. The zero value is
// api.DefaultConfig(): it reads the standard variables VAULT_ADDR,
// VAULT_TOKEN, VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT,
// VAULT_CLIENT_KEY, VAULT_NAMESPACE, VAULT_CLIENT_TIMEOUT, VAULT_SKIP_VERIFY
// and VAULT_MAX_RETRIES, and logs in with the token of VAULT_TOKEN. A field
// that is set wins over its variable.
//
// Config holds references to secrets (auth.token, auth.role_id,
// auth.secret_id), never the secrets themselves unless written inline as
// value:...; every way of printing a Config redacts inline references.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.example:8200. Empty:
	// VAULT_ADDR, else https://127.0.0.1:8200.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// Namespace is the Vault Enterprise namespace every request is made in.
	// Empty: VAULT_NAMESPACE, else the root namespace.
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// CACert is the path of a PEM file of the CA certificates that Vault's
	// TLS certificate must lead to. Empty: VAULT_CACERT, else the system's
	// roots.
	CACert string `yaml:"ca_cert,omitempty" json:"ca_cert,omitempty"`
	// Timeout bounds each request to Vault, e.g. 10s. Zero:
	// VAULT_CLIENT_TIMEOUT, else 60s. A call's own deadline applies too.
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Auth says how the worker logs in. Zero: the token of VAULT_TOKEN.
	Auth AuthConfig `yaml:"auth,omitempty" json:"auth,omitempty"`
	// PKIRenewFraction is the part of a vault-pki: certificate's lifetime
	// after which a new one is issued: 0.5 renews at half-life. It must be
	// more than 0 and less than 1. Zero: 2/3.
	PKIRenewFraction float64 `yaml:"pki_renew_fraction,omitempty" json:"pki_renew_fraction,omitempty"`
	// PollInterval is how long a KV secret read from Vault is reused before
	// Vault is read again, so many profiles on many workers do not read it
	// every second: a rotated secret is used within about this long. Zero:
	// 10s. Negative: read Vault every time the profile is refreshed (about
	// once a second).
	PollInterval time.Duration `yaml:"poll_interval,omitempty" json:"poll_interval,omitempty"`
}

// AuthConfig says how the worker logs in to Vault. The token it gets is
// renewed while it is renewable, and the worker logs in again when renewal
// ends (a non-renewable token, or its max TTL reached).
type AuthConfig struct {
	// Method is token (the default), approle, kubernetes or cert.
	Method string `yaml:"method,omitempty" json:"method,omitempty"`
	// Mount is where the auth method is enabled. Empty: the method's name
	// (approle, kubernetes, cert). Not used by token.
	Mount string `yaml:"mount,omitempty" json:"mount,omitempty"`
	// Token references the token of method token, e.g. env:VAULT_TOKEN or
	// file:/run/secrets/vault-token (read again when the token ends, so a
	// Vault Agent sink file works). Empty: VAULT_TOKEN.
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
	// RoleID references the AppRole role_id, e.g. env:VAULT_ROLE_ID.
	// Required for approle.
	RoleID string `yaml:"role_id,omitempty" json:"role_id,omitempty"`
	// SecretID references the AppRole secret_id, e.g.
	// file:/run/secrets/vault-secret-id. Empty: the role does not bind a
	// secret_id (bind_secret_id=false). Read again at every login.
	SecretID string `yaml:"secret_id,omitempty" json:"secret_id,omitempty"`
	// Role is the Vault role to log in as: required for kubernetes; for cert
	// the certificate role's name (empty: any role whose CA matches).
	Role string `yaml:"role,omitempty" json:"role,omitempty"`
	// JWTPath is the Kubernetes service account token file of method
	// kubernetes. Empty: /var/run/secrets/kubernetes.io/serviceaccount/token.
	JWTPath string `yaml:"jwt_path,omitempty" json:"jwt_path,omitempty"`
	// ClientCert and ClientKey are PEM files of the TLS client certificate
	// and key that method cert presents to Vault. Required for cert; Vault
	// must be reached over https.
	ClientCert string `yaml:"client_cert,omitempty" json:"client_cert,omitempty"`
	ClientKey  string `yaml:"client_key,omitempty" json:"client_key,omitempty"`
}

// withDefaults returns c with its defaults filled in.
func (c Config) withDefaults() Config {
	if c.PKIRenewFraction == 0 {
		c.PKIRenewFraction = DefaultPKIRenewFraction
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	a := &c.Auth
	if a.Method == "" {
		a.Method = AuthToken
	}
	if a.Mount == "" && a.Method != AuthToken {
		a.Mount = a.Method
	}
	if a.Method == AuthKubernetes && a.JWTPath == "" {
		a.JWTPath = DefaultJWTPath
	}
	return c
}

// Validate checks the configuration without contacting Vault. Errors carry
// jobs.CodeKeystoreInvalid and name the key to fix.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.PKIRenewFraction <= 0 || c.PKIRenewFraction >= 1 {
		return jobs.Errorf(jobs.CodeKeystoreInvalid,
			"vault.pki_renew_fraction %v is out of range; use a fraction between 0 and 1, e.g. 0.66", c.PKIRenewFraction)
	}
	if c.Timeout < 0 {
		return jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.timeout %v is negative; use a duration such as 10s", c.Timeout)
	}
	if c.Address != "" {
		if err := checkAddress("vault.address", c.Address); err != nil {
			return err
		}
	}
	a := c.Auth
	refs := []struct{ key, text string }{{"token", a.Token}, {"role_id", a.RoleID}, {"secret_id", a.SecretID}}
	for _, r := range refs {
		if r.text == "" {
			continue
		}
		if _, err := secrets.ParseRef(r.text); err != nil {
			return jobs.Wrap(err, jobs.CodeKeystoreInvalid, "vault.auth.%s: %s", r.key, jobs.AsError(err).Message)
		}
	}
	switch a.Method {
	case AuthToken:
	case AuthAppRole:
		if a.RoleID == "" {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.auth.method approle needs vault.auth.role_id, a secret reference such as env:VAULT_ROLE_ID")
		}
	case AuthKubernetes:
		if a.Role == "" {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.auth.method kubernetes needs vault.auth.role, the Vault role bound to this service account")
		}
	case AuthCert:
		if a.ClientCert == "" || a.ClientKey == "" {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.auth.method cert needs vault.auth.client_cert and vault.auth.client_key, PEM files of the TLS client certificate and key")
		}
	default:
		return jobs.Errorf(jobs.CodeKeystoreInvalid, "vault.auth.method %q is not supported; use token, approle, kubernetes or cert", a.Method)
	}
	return nil
}

// checkAddress refuses a Vault address over plain http:// to a host that
// is not loopback (127.0.0.0/8, ::1, localhost): the token and every
// secret read would cross the network unencrypted. key names the setting
// (vault.address, VAULT_ADDR, VAULT_AGENT_ADDR). Loopback http is allowed
// for a dev server or a Vault Agent on the same host; https:// and unix://
// always are. The error is a configuration error (keystore_invalid).
func checkAddress(key, addr string) error {
	u, err := url.Parse(addr)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return nil // the API client reports an address it cannot use
	}
	if isLoopback(u.Hostname()) {
		return nil
	}
	return jobs.Errorf(jobs.CodeKeystoreInvalid,
		"%s %s is plain http to a host that is not loopback: the Vault token and every secret read would cross the network unencrypted; "+
			"use https://%s (with vault.ca_cert, or VAULT_CACERT, for a private CA). Plain http is accepted only on 127.0.0.1, ::1 or localhost",
		key, u.Redacted(), u.Host)
}

// checkSkipVerify refuses VAULT_SKIP_VERIFY=true (value is the variable's
// text): without verifying Vault's certificate anyone on the path could
// pose as Vault and take the token. The error is a configuration error
// (keystore_invalid).
func checkSkipVerify(value string, insecure bool) error {
	if v, err := strconv.ParseBool(strings.TrimSpace(value)); (err == nil && v) || insecure {
		return jobs.Errorf(jobs.CodeKeystoreInvalid,
			"VAULT_SKIP_VERIFY is set to true: the worker does not talk to Vault without verifying its TLS certificate, since anyone on the path could pose as Vault and take the token; "+
				"unset VAULT_SKIP_VERIFY and give Vault's CA in vault.ca_cert (or VAULT_CACERT)")
	}
	return nil
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// plainConfig has Config's fields and none of its methods, for encoding.
type plainConfig Config

// redacted returns c with inline references replaced by their redacted form.
func (c Config) redacted() plainConfig {
	for _, f := range []*string{&c.Auth.Token, &c.Auth.RoleID, &c.Auth.SecretID} {
		*f = secrets.RedactRef(*f)
	}
	return plainConfig(c)
}

// String prints the configuration with inline references redacted.
func (c Config) String() string { return fmt.Sprintf("%+v", c.redacted()) }

// GoString is the %#v form, redacted too.
func (c Config) GoString() string { return fmt.Sprintf("vault.Config%+v", c.redacted()) }

// Format prints the redacted form for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// MarshalJSON encodes the configuration with inline references redacted.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

// MarshalYAML encodes the configuration with inline references redacted.
func (c Config) MarshalYAML() (any, error) { return c.redacted(), nil }

// UnmarshalJSON decodes a configuration whose durations are written as
// strings ("10s"), as in YAML, or as nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error {
	var raw struct {
		plainConfig
		Timeout      jsonDuration `json:"timeout,omitempty"`
		PollInterval jsonDuration `json:"poll_interval,omitempty"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*c = Config(raw.plainConfig)
	c.Timeout, c.PollInterval = time.Duration(raw.Timeout), time.Duration(raw.PollInterval)
	return nil
}

// jsonDuration decodes "10s" or a number of nanoseconds.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\" or a number of nanoseconds")
	}
	*d = jsonDuration(n)
	return nil
}

// MarshalZerologObject logs the configuration, inline references redacted.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	r := c.redacted()
	e.Str("address", r.Address).Str("auth_method", r.Auth.Method)
	if r.Namespace != "" {
		e.Str("namespace", r.Namespace)
	}
	if r.Auth.Mount != "" {
		e.Str("auth_mount", r.Auth.Mount)
	}
}
