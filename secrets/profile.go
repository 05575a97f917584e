package secrets

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Profile is an mTLS profile as written in the worker's config file or the
// registry: where the client keystore and its password are, which server
// CAs to trust, and the TLS settings. The zero value of every optional field
// is the sensible default.
//
// There is deliberately no way to skip server certificate verification:
// trust a private CA with truststore instead.
//
// Every way of printing a Profile (fmt verbs, JSON, YAML, zerolog) redacts
// inline references (value:, base64:, inline PEM). To store a profile with
// its inline secrets intact, use MarshalUnredactedJSON.
type Profile struct {
	// Keystore references the client keystore: PKCS#12, JKS or a PEM bundle
	// of certificate chain and key, detected from its content. Required.
	Keystore string `yaml:"keystore" json:"keystore"`
	// Key references the PEM private key when Keystore is a PEM certificate
	// chain kept in a file of its own, as cert-manager (tls.crt, tls.key),
	// nginx and Vault Agent templates keep them. Password, if set, opens the
	// key. Empty: the keystore holds the key.
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// Password references the keystore's password. Empty means none (a PEM
	// bundle with an unencrypted key, a password-less PKCS#12). One trailing
	// newline is ignored, as `echo pass > file` writes one.
	Password string `yaml:"password,omitempty" json:"password,omitempty"`
	// Truststore references the CA certificates that the server's chain must
	// lead to (PEM, PKCS#12 or JKS). Empty means the system's roots.
	Truststore string `yaml:"truststore,omitempty" json:"truststore,omitempty"`
	// TruststorePassword references the truststore's password, if it has one.
	TruststorePassword string `yaml:"truststore_password,omitempty" json:"truststore_password,omitempty"`
	// KeyAlias picks the key entry of a keystore with several (compared
	// case-insensitively). Empty means the keystore's only key entry.
	KeyAlias string `yaml:"key_alias,omitempty" json:"key_alias,omitempty"`
	// ServerName overrides the name the server's certificate is checked
	// against (and sent as SNI). Empty means the host of the call's URL.
	ServerName string `yaml:"server_name,omitempty" json:"server_name,omitempty"`
	// MinTLSVersion is "1.2" (the default) or "1.3".
	MinTLSVersion string `yaml:"min_tls_version,omitempty" json:"min_tls_version,omitempty"`
	// Renegotiation is "never" (the default), "once" or "freely": whether
	// the server may renegotiate TLS 1.2, which some IIS servers do to ask
	// for the client certificate of one path only.
	Renegotiation string `yaml:"renegotiation,omitempty" json:"renegotiation,omitempty"`
	// Revocation is "off" (the default), "prefer" or "require": whether
	// the partner's certificate is checked by OCSP (stapled, else the
	// responder it names) and CRL distribution points. prefer accepts when
	// no answer can be had; require does not (server_cert_revoked).
	Revocation string `yaml:"revocation,omitempty" json:"revocation,omitempty"`
	// SOAP holds the SOAP settings of calls made with this profile's
	// identity: soap.wss signs them with WS-Security. A connection's own
	// soap.wss replaces it.
	SOAP *SOAPSettings `yaml:"soap,omitempty" json:"soap,omitempty"`
}

// Revocation checking of a profile's partners.
const (
	RevocationOff     = "off"
	RevocationPrefer  = "prefer"
	RevocationRequire = "require"
)

// profileRefs are a profile's references, parsed.
type profileRefs struct {
	keystore, key, password, truststore, truststorePassword Ref
}

// refField is one reference of a profile, named by its field.
type refField struct {
	field string
	ref   Ref
}

// fields lists the profile's references that are set, keystore first: the
// one list that fetching, checking and versioning walk.
func (r profileRefs) fields() []refField {
	all := []refField{
		{"keystore", r.keystore}, {"key", r.key}, {"password", r.password},
		{"truststore", r.truststore}, {"truststore_password", r.truststorePassword},
	}
	return slices.DeleteFunc(all, func(f refField) bool { return f.ref.IsZero() })
}

// Validate checks the profile: a keystore reference is given, every
// reference parses, and the TLS settings have known values. It does not
// fetch anything; Resolver.Validate also checks that this build has a
// Source for each reference. Errors carry jobs.CodeKeystoreInvalid.
func (p Profile) Validate() error {
	_, err := p.parse()
	return err
}

// parse validates p and returns its parsed references.
func (p Profile) parse() (profileRefs, error) {
	var r profileRefs
	if strings.TrimSpace(p.Keystore) == "" {
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile has no keystore reference; set keystore, e.g. keystore: file:/etc/mtlsrelay/client.p12")
	}
	fields := []struct {
		name string
		text string
		ref  *Ref
	}{
		{"keystore", p.Keystore, &r.keystore},
		{"key", p.Key, &r.key},
		{"password", p.Password, &r.password},
		{"truststore", p.Truststore, &r.truststore},
		{"truststore_password", p.TruststorePassword, &r.truststorePassword},
	}
	for _, f := range fields {
		if f.text == "" {
			continue
		}
		ref, err := ParseRef(f.text)
		if err != nil {
			return r, prefixError(err, "profile field "+f.name)
		}
		*f.ref = ref
	}
	if p.TruststorePassword != "" && p.Truststore == "" {
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile sets truststore_password but no truststore; set truststore or remove truststore_password")
	}
	if _, err := p.minVersion(); err != nil {
		return r, err
	}
	if _, err := p.renegotiation(); err != nil {
		return r, err
	}
	if err := p.SOAP.Validate("profile"); err != nil {
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "%v", err)
	}
	if err := p.SOAP.ValidateTrust("profile", p.Truststore != ""); err != nil {
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "%v", err)
	}
	switch p.Revocation {
	case "", RevocationOff, RevocationPrefer, RevocationRequire:
	default:
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile's revocation %q is not supported; use \"off\" (the default), \"prefer\" or \"require\"", p.Revocation)
	}
	if strings.ContainsAny(p.ServerName, "/ \t") {
		return r, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile's server_name %q is not a host name; write the name only, without scheme or path", p.ServerName)
	}
	return r, nil
}

// minVersion maps min_tls_version to crypto/tls.
func (p Profile) minVersion() (uint16, error) {
	switch p.MinTLSVersion {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile's min_tls_version %q is not supported; use \"1.2\" (the default) or \"1.3\"", p.MinTLSVersion)
}

// renegotiation maps renegotiation to crypto/tls.
func (p Profile) renegotiation() (tls.RenegotiationSupport, error) {
	switch p.Renegotiation {
	case "", "never":
		return tls.RenegotiateNever, nil
	case "once":
		return tls.RenegotiateOnceAsClient, nil
	case "freely":
		return tls.RenegotiateFreelyAsClient, nil
	}
	return 0, jobs.Errorf(jobs.CodeKeystoreInvalid, "the profile's renegotiation %q is not supported; use \"never\" (the default), \"once\" or \"freely\"", p.Renegotiation)
}

// ResolvePaths returns p with relative file: references made relative to
// baseDir, the directory of the config file the profile was read from.
func (p Profile) ResolvePaths(baseDir string) Profile {
	for _, f := range []*string{&p.Keystore, &p.Password, &p.Truststore, &p.TruststorePassword} {
		if r, err := ParseRef(*f); err == nil && r.Scheme == SchemeFile {
			*f = r.Resolve(baseDir).String()
		}
	}
	return p
}

// plainProfile has Profile's fields and none of its methods, for encoding.
type plainProfile Profile

// redacted returns p with inline references replaced by their redacted form.
func (p Profile) redacted() plainProfile {
	p.Keystore = RedactRef(p.Keystore)
	p.Key = RedactRef(p.Key)
	p.Password = RedactRef(p.Password)
	p.Truststore = RedactRef(p.Truststore)
	p.TruststorePassword = RedactRef(p.TruststorePassword)
	return plainProfile(p)
}

// String prints the profile with inline references redacted.
func (p Profile) String() string {
	return fmt.Sprintf("%+v", p.redacted())
}

// GoString is the %#v form, redacted too.
func (p Profile) GoString() string {
	return fmt.Sprintf("secrets.Profile%+v", p.redacted())
}

// Format prints the redacted form for every verb.
func (p Profile) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, p.GoString())
		return
	}
	_, _ = io.WriteString(f, p.String())
}

// MarshalJSON encodes the profile with inline references redacted. A
// profile decoded from that JSON fails Validate rather than quietly using
// "[redacted]" as a password.
func (p Profile) MarshalJSON() ([]byte, error) { return json.Marshal(p.redacted()) }

// MarshalYAML encodes the profile with inline references redacted.
func (p Profile) MarshalYAML() (any, error) { return p.redacted(), nil }

// MarshalUnredactedJSON encodes the profile with inline secrets intact, for
// storing it where secrets belong (the registry). Never log its output.
func (p Profile) MarshalUnredactedJSON() ([]byte, error) { return json.Marshal(plainProfile(p)) }

// MarshalZerologObject logs the profile's fields, inline references redacted.
func (p Profile) MarshalZerologObject(e *zerolog.Event) {
	r := p.redacted()
	e.Str("keystore", r.Keystore)
	for _, f := range [][2]string{
		{"key", r.Key}, {"password", r.Password}, {"truststore", r.Truststore}, {"truststore_password", r.TruststorePassword},
		{"key_alias", r.KeyAlias}, {"server_name", r.ServerName}, {"min_tls_version", r.MinTLSVersion},
		{"renegotiation", r.Renegotiation},
	} {
		if f[1] != "" {
			e.Str(f[0], f[1])
		}
	}
}

// prefixError returns err with context before its message, keeping its
// code, retryability and cause; an error that is not a *jobs.Error becomes
// an internal one.
func prefixError(err error, context string) *jobs.Error {
	je := jobs.AsError(err)
	out := jobs.Wrap(je, je.Code, "%s: %s", context, je.Message)
	out.Retryable = je.Retryable
	return out
}

// ProfileError is the cause of every error the Resolver returns: which
// profile failed, in which field (empty when no one field did, as for a
// certificate outside its dates) and reference. The *jobs.Error around it
// says so in words for a call's result; a caller with other words (the
// registry, naming an uploaded keystore) takes them from here.
type ProfileError struct {
	Profile string
	Field   string
	Ref     Ref
	// Err is the failure itself, its message without the profile's name.
	Err *jobs.Error
}

func (e *ProfileError) Error() string { return e.Err.Error() }
func (e *ProfileError) Unwrap() error { return e.Err }

// profileError returns err as the Resolver reports it: a *jobs.Error with
// the code and retryability of err, whose message names the profile, the
// field and the reference, caused by a *ProfileError.
func profileError(err error, name, field string, ref Ref) *jobs.Error {
	je := jobs.AsError(err)
	where := fmt.Sprintf("profile %q", name)
	if field != "" {
		where += " " + field + " " + ref.String()
	}
	out := jobs.Wrap(&ProfileError{Profile: name, Field: field, Ref: ref, Err: je}, je.Code, "%s: %s", where, je.Message)
	out.Retryable = je.Retryable
	return out
}
