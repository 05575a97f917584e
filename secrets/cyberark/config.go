package cyberark

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Defaults of Config's optional fields.
const (
	// DefaultFolder is the CCP's own default folder.
	DefaultFolder = "Root"
	// DefaultTimeout bounds one GetPassword request.
	DefaultTimeout = 10 * time.Second
	// DefaultServicePath is where a CCP serves GetPassword when url has no path.
	DefaultServicePath = "/AIMWebService"
)

// Config says how to reach a CyberArk Central Credential Provider and as
// which application. Zero values of optional fields mean the defaults
// written next to them. Secret fields hold references (file:, env:,
// vault:...), never the secret itself, and every way of printing a Config
// redacts inline references.
type Config struct {
	// URL is the base URL of the CCP, e.g. "https://ccp.example.com". The
	// GetPassword service is <URL>/AIMWebService/api/Accounts; when URL has
	// a path, it names the web application instead
	// ("https://ccp.example.com/AIMWebServiceProd"), and a URL already ending
	// in /api/Accounts is used as it is. Must be https. Required.
	URL string `yaml:"url" json:"url"`
	// AppID is the application ID CyberArk knows this worker fleet by; the
	// CCP authenticates it by the client certificate, allowed machines or
	// OS user configured for it. Required.
	AppID string `yaml:"app_id" json:"app_id"`
	// Folder is the folder of the Safes the objects are in. Default "Root".
	Folder string `yaml:"folder,omitempty" json:"folder,omitempty"`
	// Timeout bounds each request to the CCP, connection included. Default
	// 10s. In JSON it is a Go duration string ("10s") or nanoseconds.
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// ClientKeystore references the keystore (PKCS#12, JKS or PEM, or base64
	// text of one) whose certificate this worker presents to the CCP, when
	// the CCP requires client certificates or the AppID authenticates by
	// certificate. Empty means no client certificate.
	ClientKeystore string `yaml:"client_keystore,omitempty" json:"client_keystore,omitempty"`
	// ClientPassword references the password of ClientKeystore. Empty means
	// none.
	ClientPassword string `yaml:"client_password,omitempty" json:"client_password,omitempty"`
	// Truststore references the CA certificates that the CCP's server
	// certificate must lead to (PEM, PKCS#12 or JKS). Empty means the
	// system's roots.
	Truststore string `yaml:"truststore,omitempty" json:"truststore,omitempty"`
	// TruststorePassword references the truststore's password, if it has one.
	TruststorePassword string `yaml:"truststore_password,omitempty" json:"truststore_password,omitempty"`
	// Reason is sent with every request and written by CyberArk to the
	// Credential Provider's audit log. Empty means none.
	Reason string `yaml:"reason,omitempty" json:"reason,omitempty"`
}

// unsupportedChars are the characters the CCP documents as not supported in
// the values of its URL.
const unsupportedChars = "+&%"

// withDefaults returns c with the defaults applied.
func (c Config) withDefaults() Config {
	if c.Folder == "" {
		c.Folder = DefaultFolder
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate checks c without contacting anything: url is an https URL,
// app_id is set, values hold no character the CCP rejects, and every
// reference parses. Errors carry jobs.CodeKeystoreInvalid.
func (c Config) Validate() error {
	_, _, err := c.parse()
	return err
}

// parse validates c and returns the GetPassword endpoint and the parsed
// references.
func (c Config) parse() (*url.URL, configRefs, error) {
	var refs configRefs
	if strings.TrimSpace(c.URL) == "" {
		return nil, refs, configErrorf("url is not set; set it to the CCP's base URL, e.g. https://ccp.example.com")
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return nil, refs, configErrorf("url %q is not a URL; write it as https://ccp.example.com", c.URL)
	}
	if u.Scheme != "https" {
		return nil, refs, configErrorf("url %q is not https; the CCP hands out passwords, so it is reached over TLS only", c.URL)
	}
	if u.User != nil {
		return nil, refs, configErrorf("url must not hold a user name or password; the CCP authenticates the AppID by certificate, machine or OS user")
	}
	if strings.TrimSpace(c.AppID) == "" {
		return nil, refs, configErrorf("app_id is not set; set it to the application ID defined for mtlsrelay in CyberArk")
	}
	for _, f := range []struct{ name, v string }{{"app_id", c.AppID}, {"folder", c.Folder}, {"reason", c.Reason}} {
		if strings.ContainsAny(f.v, unsupportedChars) {
			return nil, refs, configErrorf("%s %q holds one of the characters + & %%, which the CCP does not support in requests", f.name, f.v)
		}
	}
	if c.Timeout < 0 {
		return nil, refs, configErrorf("timeout %s is negative", c.Timeout)
	}
	for _, f := range []struct {
		name, text string
		ref        *secrets.Ref
	}{
		{"client_keystore", c.ClientKeystore, &refs.keystore},
		{"client_password", c.ClientPassword, &refs.password},
		{"truststore", c.Truststore, &refs.truststore},
		{"truststore_password", c.TruststorePassword, &refs.truststorePassword},
	} {
		if f.text == "" {
			continue
		}
		r, err := secrets.ParseRef(f.text)
		if err != nil {
			return nil, refs, prefix(err, "cyberark config "+f.name)
		}
		if r.Scheme == secrets.SchemeCyberArk {
			return nil, refs, configErrorf("%s %s names a CyberArk secret, which cannot be fetched before the CCP client exists; use file:, env:, vault: or another source", f.name, r)
		}
		*f.ref = r
	}
	if !refs.password.IsZero() && refs.keystore.IsZero() {
		return nil, refs, configErrorf("client_password is set but client_keystore is not; set client_keystore or remove client_password")
	}
	if !refs.truststorePassword.IsZero() && refs.truststore.IsZero() {
		return nil, refs, configErrorf("truststore_password is set but truststore is not; set truststore or remove truststore_password")
	}
	return endpoint(u), refs, nil
}

// configRefs are the parsed references of a Config.
type configRefs struct {
	keystore, password, truststore, truststorePassword secrets.Ref
}

// endpoint returns the GetPassword URL of a CCP base URL.
func endpoint(base *url.URL) *url.URL {
	u := *base
	u.RawQuery, u.Fragment, u.RawPath = "", "", ""
	p := strings.TrimRight(u.Path, "/")
	switch {
	case strings.HasSuffix(strings.ToLower(p), "/api/accounts"):
	case p == "":
		p = DefaultServicePath + "/api/Accounts"
	default:
		p += "/api/Accounts"
	}
	u.Path = p
	return &u
}

func configErrorf(format string, args ...any) *jobs.Error {
	return jobs.Errorf(jobs.CodeKeystoreInvalid, "cyberark config: "+format, args...)
}

// prefix returns err with context before its message, keeping its code,
// retryability and cause.
func prefix(err error, context string) *jobs.Error {
	je := jobs.AsError(err)
	out := jobs.Wrap(je, je.Code, "%s: %s", context, je.Message)
	out.Retryable = je.Retryable
	return out
}

// plainConfig has Config's fields and none of its methods, for encoding.
type plainConfig Config

// redacted returns c with inline references replaced by their redacted form.
func (c Config) redacted() plainConfig {
	for _, f := range []*string{&c.ClientKeystore, &c.ClientPassword, &c.Truststore, &c.TruststorePassword} {
		*f = secrets.RedactRef(*f)
	}
	return plainConfig(c)
}

// String prints the config with inline references redacted.
func (c Config) String() string { return fmt.Sprintf("%+v", c.redacted()) }

// GoString is the %#v form, redacted too.
func (c Config) GoString() string { return fmt.Sprintf("cyberark.Config%+v", c.redacted()) }

// Format prints the redacted form for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// MarshalJSON encodes the config with inline references redacted and the
// timeout as a duration string.
func (c Config) MarshalJSON() ([]byte, error) {
	r := c.redacted()
	return json.Marshal(struct {
		plainConfig
		Timeout string `json:"timeout,omitempty"`
	}{plainConfig: r, Timeout: durationText(r.Timeout)})
}

// MarshalYAML encodes the config with inline references redacted.
func (c Config) MarshalYAML() (any, error) { return c.redacted(), nil }

// MarshalZerologObject logs the config, inline references redacted.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	r := c.redacted()
	e.Str("url", r.URL).Str("app_id", r.AppID)
	for _, f := range [][2]string{
		{"folder", r.Folder}, {"timeout", durationText(r.Timeout)}, {"client_keystore", r.ClientKeystore},
		{"client_password", r.ClientPassword}, {"truststore", r.Truststore},
		{"truststore_password", r.TruststorePassword}, {"reason", r.Reason},
	} {
		if f[1] != "" {
			e.Str(f[0], f[1])
		}
	}
}

// UnmarshalJSON decodes a config whose timeout is a duration string ("10s")
// or a number of nanoseconds.
func (c *Config) UnmarshalJSON(data []byte) error {
	var aux struct {
		plainConfig
		Timeout json.RawMessage `json:"timeout,omitempty"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*c = Config(aux.plainConfig)
	c.Timeout = 0
	if len(aux.Timeout) == 0 || string(aux.Timeout) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(aux.Timeout, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("cyberark config: timeout %q is not a duration such as 10s", s)
		}
		c.Timeout = d
		return nil
	}
	var n int64
	if err := json.Unmarshal(aux.Timeout, &n); err != nil {
		return fmt.Errorf("cyberark config: timeout is neither a duration string nor a number")
	}
	c.Timeout = time.Duration(n)
	return nil
}

func durationText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
