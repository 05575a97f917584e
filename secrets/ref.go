package secrets

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// The schemes of secret references. A profile names each secret as
// "scheme:body"; the scheme picks the Source that fetches it.
const (
	// SchemeFile reads a file on the worker: "file:/etc/mtlsrelay/a.p12" or a
	// path relative to the config file's directory.
	SchemeFile = "file"
	// SchemeEnv reads an environment variable of the worker: "env:NAME".
	SchemeEnv = "env"
	// SchemeBase64 holds the secret's bytes inline, base64-encoded, so a
	// keystore can live in the worker's config file.
	SchemeBase64 = "base64"
	// SchemeValue holds the secret inline as a literal string, e.g. a password
	// written in the config file.
	SchemeValue = "value"
	// SchemePEM holds a PEM block inline. It is what a value starting with
	// "-----BEGIN" parses to; "pem:" may also be written explicitly.
	SchemePEM = "pem"
	// SchemeRegistry names bytes stored in the shared registry (NATS KV).
	SchemeRegistry = "registry"
	// SchemeVault names a field of a HashiCorp Vault KV v2 secret.
	SchemeVault = "vault"
	// SchemeVaultPKI asks Vault's PKI engine for a fresh client certificate.
	SchemeVaultPKI = "vault-pki"
	// SchemeCyberArk names a credential of CyberArk's Central Credential Provider.
	SchemeCyberArk = "cyberark"
)

// redacted stands in for secret content wherever a value is printed.
const redacted = "[redacted]"

// inlineSchemes carry the secret itself in the reference, so their body is
// never printed.
var inlineSchemes = map[string]bool{SchemeBase64: true, SchemeValue: true, SchemePEM: true}

// knownSchemes are the schemes ParseRef accepts. Whether a build can fetch
// one is up to the Sources it registers, so a provider is added by
// registering a Source, not by touching the parser.
var knownSchemes = map[string]bool{
	SchemeFile: true, SchemeEnv: true, SchemeBase64: true, SchemeValue: true, SchemePEM: true,
	SchemeRegistry: true, SchemeVault: true, SchemeVaultPKI: true, SchemeCyberArk: true,
}

// acceptedSchemesText is the list shown when a reference does not parse.
const acceptedSchemesText = "file:PATH, env:NAME, base64:DATA, value:TEXT, an inline PEM block, " +
	"registry:keystores/NAME, vault:MOUNT/PATH#FIELD, vault-pki:MOUNT/issue/ROLE or cyberark:SAFE/OBJECT#PROPERTY"

// Ref is a parsed secret reference: which Source holds the secret (Scheme)
// and where in it (Body).
//
// A Ref of an inline scheme carries the secret itself in Body. String,
// GoString, Format and MarshalJSON print such a body as "[redacted]", so a Ref
// may be logged; read Body directly only to fetch the secret.
type Ref struct {
	// Scheme is one of the Scheme constants.
	Scheme string
	// Body is what follows "scheme:": a file path, a variable name, the
	// inline secret, or a provider's locator such as "mount/path#field".
	Body string
}

// ParseRef parses a secret reference such as "file:/etc/a.p12", "env:PASS",
// "base64:MIIK...", "value:secret" or an inline "-----BEGIN ..." PEM block.
//
// It checks the syntax only; whether this build can fetch the scheme is
// Sources.Check's answer. Errors carry jobs.CodeKeystoreInvalid and never
// echo the input, which may be a password written without a scheme.
func ParseRef(s string) (Ref, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN") {
		return Ref{Scheme: SchemePEM, Body: s}, nil
	}
	scheme, body, ok := strings.Cut(s, ":")
	if !ok || scheme == "" {
		return Ref{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference has no scheme; write it as one of %s (a literal password is written value:TEXT)", acceptedSchemesText)
	}
	if !knownSchemes[scheme] {
		// The scheme is not echoed: "hunter2:x" may be a password.
		return Ref{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference has an unknown scheme; write it as one of %s", acceptedSchemesText)
	}
	r := Ref{Scheme: scheme, Body: body}
	if err := r.check(); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// check validates the body of a reference whose scheme is known.
func (r Ref) check() error {
	if inlineSchemes[r.Scheme] && r.Body == redacted {
		return jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference %s:%s is a redaction placeholder, not a secret: the profile was copied from redacted output; put the real reference back", r.Scheme, redacted)
	}
	switch r.Scheme {
	case SchemeFile:
		p, err := filePath(r.Body)
		if err != nil {
			return err
		}
		if p == "" {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "secret reference file: has no path; write file:/path/to/file")
		}
	case SchemeEnv:
		if !validEnvName(r.Body) {
			return jobs.Errorf(jobs.CodeKeystoreInvalid,
				"secret reference env: does not name an environment variable; write env:NAME with letters, digits and underscores")
		}
	case SchemeBase64:
		if _, err := decodeBase64(r.Body); err != nil {
			return jobs.Errorf(jobs.CodeKeystoreInvalid,
				"secret reference base64:[redacted] is not valid base64; paste the output of `base64 -w0 FILE`")
		}
	case SchemePEM:
		if !strings.HasPrefix(strings.TrimSpace(r.Body), "-----BEGIN") {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "secret reference pem:[redacted] does not start with -----BEGIN; paste the whole PEM block")
		}
	case SchemeValue:
		// Any text, the empty string included, is a literal.
	default:
		if strings.TrimSpace(r.Body) == "" {
			return jobs.Errorf(jobs.CodeKeystoreInvalid, "secret reference %s: has nothing after the scheme; write %s", r.Scheme, acceptedSchemesText)
		}
	}
	return nil
}

// filePath returns the path of a file: body, accepting the URL form
// "file:///abs/path" that people paste from browsers and Java configs.
func filePath(body string) (string, error) {
	if rest, ok := strings.CutPrefix(body, "//"); ok {
		if !strings.HasPrefix(rest, "/") {
			return "", jobs.Errorf(jobs.CodeKeystoreInvalid,
				"secret reference file://%s names a host; only local files are read: write file:/absolute/path or file:relative/path", rest)
		}
		return rest, nil
	}
	return body, nil
}

// validEnvName reports whether s is a portable environment variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// decodeBase64 accepts standard and URL alphabets, with or without padding,
// and ignores whitespace, because YAML block scalars wrap long lines.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// Resolve returns r with a relative file: path joined to baseDir, the
// directory of the config file that named it. Other references are returned
// unchanged.
func (r Ref) Resolve(baseDir string) Ref {
	if r.Scheme != SchemeFile || baseDir == "" {
		return r
	}
	p, err := filePath(r.Body)
	if err != nil || p == "" || filepath.IsAbs(p) {
		return r
	}
	return Ref{Scheme: SchemeFile, Body: filepath.Join(baseDir, p)}
}

// IsInline reports whether the reference carries the secret itself.
func (r Ref) IsInline() bool { return inlineSchemes[r.Scheme] }

// IsZero reports whether r is the zero Ref, i.e. no reference.
func (r Ref) IsZero() bool { return r == Ref{} }

// String returns the reference as written, with inline content replaced by
// "[redacted]", e.g. "value:[redacted]".
func (r Ref) String() string {
	if r.IsZero() {
		return ""
	}
	if r.IsInline() {
		return r.Scheme + ":" + redacted
	}
	return r.Scheme + ":" + r.Body
}

// GoString is String, so %#v does not print the inline body either.
func (r Ref) GoString() string { return "secrets.Ref(" + fmt.Sprintf("%q", r.String()) + ")" }

// Format prints the redacted form for every verb, %d and %x included.
func (r Ref) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, r.GoString())
		return
	}
	_, _ = io.WriteString(f, r.String())
}

// MarshalJSON encodes the redacted form.
func (r Ref) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// MarshalText encodes the redacted form, so YAML and log encoders that use
// encoding.TextMarshaler cannot print the inline body either.
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// RedactRef returns a printable form of a reference as written in a
// config: its redacted String when it parses, else a placeholder, since an
// unparseable reference may be a bare password. Every config type that
// holds references prints them through it.
func RedactRef(s string) string {
	if s == "" {
		return ""
	}
	r, err := ParseRef(s)
	if err != nil {
		return "[invalid reference, redacted]"
	}
	return r.String()
}
