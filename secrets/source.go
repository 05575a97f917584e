package secrets

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Source fetches the secrets of one reference scheme (file:, env:, vault:...).
//
// Fetch returns the secret's current bytes and a Version, or a *jobs.Error
// whose code tells the caller what to do:
//
//   - Not found: the reference names nothing (no such file, variable, key or
//     field). Code jobs.CodeSecretUnavailable with Retryable false, wrapping
//     ErrNotFound, and a message naming the path, variable or field that is
//     missing. Retrying soon will not help; a person must fix the reference
//     or create the secret.
//   - Unavailable: the source could not be reached or answered with a
//     transient failure (I/O error, network error, 5xx, sealed Vault, ctx
//     deadline). Code jobs.CodeSecretUnavailable with Retryable true: the
//     call is retried later with backoff.
//   - Invalid: the source answered, but what it holds cannot be a secret of
//     this kind (a directory instead of a file, bad base64, a Vault field
//     that is not a string). Code jobs.CodeKeystoreInvalid, not retryable.
//
// Messages never contain secret bytes; the Resolver prefixes them with the
// profile and field, so a Source names only what it knows (path, variable).
//
// Caching: the caller (Resolver) caches what it builds from a Secret and
// calls Fetch again at most once per refresh interval per reference, to see
// whether Version changed. A Source therefore need not cache; one whose
// fetches are expensive (a network round trip) may, as long as Version
// still changes when the secret does. Version must change whenever Data may
// have changed, and should stay the same while it has not, because a new
// Version makes the caller decode the keystore again. It must not reveal the
// secret (use a keyed hash, not a plain one).
//
// Implementations must be safe for concurrent use: many profiles resolve at
// once.
type Source interface {
	// Fetch returns the secret that ref names. ref.Scheme is the scheme the
	// Source was registered for.
	Fetch(ctx context.Context, ref Ref) (Secret, error)
}

// ErrNotFound is wrapped by the errors of a Source when the reference names
// nothing, so callers can tell "not there" from "not reachable" with errors.Is.
var ErrNotFound = errors.New("secret not found")

// ErrUnsupportedScheme is wrapped by the error for a reference whose scheme
// is known but has no Source registered: the worker lacks the provider's
// config.
var ErrUnsupportedScheme = errors.New("no source for this secret scheme")

// Secret and Profile redact themselves for every printer.
var (
	_ zerolog.LogObjectMarshaler = Secret{}
	_ fmt.Formatter              = Secret{}
	_ zerolog.LogObjectMarshaler = Profile{}
	_ fmt.Formatter              = Profile{}
	_ fmt.Formatter              = Ref{}
)

// Secret is the content of a secret and the version it was read at.
//
// Every way of printing a Secret (fmt verbs, JSON, zerolog) shows
// "[redacted]" in place of Data, so logging one by mistake leaks nothing.
type Secret struct {
	// Data is the secret's bytes: a keystore, a PEM bundle or a password.
	Data []byte
	// Version changes whenever Data may have changed (file: inode, size,
	// mtime and a keyed content hash; env: a keyed hash of the value). It is
	// safe to log.
	Version string
}

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns a form without Data, for %#v.
func (s Secret) GoString() string {
	return fmt.Sprintf("secrets.Secret{Data:%s, Version:%q}", redacted, s.Version)
}

// Format prints "[redacted]" for every verb, %x and %d included, and
// GoString for %#v.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	_, _ = io.WriteString(f, redacted)
}

// MarshalJSON encodes "[redacted]".
func (Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// MarshalYAML encodes "[redacted]"; without it YAML would print Data as a
// list of byte values.
func (Secret) MarshalYAML() (any, error) { return redacted, nil }

// MarshalZerologObject logs the version and "[redacted]" for the data.
func (s Secret) MarshalZerologObject(e *zerolog.Event) {
	e.Str("data", redacted).Str("version", s.Version)
}

// Sources maps reference schemes to the Source that fetches them. It is safe
// for concurrent use; Register may be called while fetches run.
type Sources struct {
	mu sync.RWMutex
	m  map[string]Source
	// missing says, per scheme, what a worker lacks when no Source reads
	// it (explain); needs has the defaults.
	missing map[string]string
}

// NewSources returns an empty registry, for a build that picks its Sources
// one by one; DefaultSources is the usual start.
func NewSources() *Sources { return &Sources{m: map[string]Source{}, missing: map[string]string{}} }

// explain records what a worker lacks to read scheme, for Check.
func (s *Sources) explain(scheme, missing string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.missing[scheme] = missing
}

// DefaultSources returns Sources with the built-in schemes registered:
// file: (relative paths are relative to baseDir, the config file's
// directory), env: (the process environment), and the inline base64:,
// value: and PEM references. registry:, vault:, vault-pki: and cyberark:
// are parsed, and until a Source is registered for them a reference to one
// reports what the worker needs to read it (Check).
func DefaultSources(baseDir string) *Sources {
	s := NewSources()
	s.Register(SchemeFile, NewFileSource(baseDir))
	s.Register(SchemeEnv, NewEnvSource(nil))
	s.Register(SchemeBase64, newInlineSource())
	s.Register(SchemeValue, newInlineSource())
	s.Register(SchemePEM, newInlineSource())
	return s
}

// needs says, for the schemes whose Source the worker's wiring registers
// from its config, what a worker without one lacks.
var needs = map[string]string{
	SchemeVault:    "Vault: add a vault: section to the worker's config (address and auth), or set VAULT_ADDR and VAULT_TOKEN in the worker's environment (the worker's log says why Vault did not start when they are set)",
	SchemeVaultPKI: "Vault: add a vault: section to the worker's config (address and auth), or set VAULT_ADDR and VAULT_TOKEN in the worker's environment (the worker's log says why Vault did not start when they are set)",
	SchemeCyberArk: "CyberArk: add a cyberark: section to the worker's config (url, app_id and the client certificate of the Central Credential Provider)",
	SchemeRegistry: "the registry: give the worker a NATS server (nats.url or --nats) and leave registry.disabled unset",
}

// Register makes src fetch the references of scheme, replacing any Source
// registered for it before. Adding a provider is this call.
func (s *Sources) Register(scheme string, src Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[scheme] = src
}

// Schemes lists the registered schemes, sorted.
func (s *Sources) Schemes() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.m))
	for k := range s.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *Sources) lookup(scheme string) (Source, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	src, ok := s.m[scheme]
	return src, ok
}

// Check reports whether ref can be fetched: nil when a Source is registered
// for its scheme, else a jobs.CodeKeystoreInvalid error saying what the
// worker lacks to read it (the config section of a provider), or that no
// build reads the scheme.
func (s *Sources) Check(ref Ref) error {
	if _, ok := s.lookup(ref.Scheme); ok {
		return nil
	}
	s.mu.RLock()
	need, ok := s.missing[ref.Scheme]
	s.mu.RUnlock()
	if !ok {
		need, ok = needs[ref.Scheme]
	}
	if ok {
		return jobs.Wrap(ErrUnsupportedScheme, jobs.CodeKeystoreInvalid,
			"secret reference scheme %s: needs %s", ref.Scheme, need)
	}
	names := s.Schemes()
	for i, n := range names {
		names[i] = n + ":"
	}
	return jobs.Wrap(ErrUnsupportedScheme, jobs.CodeKeystoreInvalid,
		"secret reference scheme %s: is not supported by this build yet; this build reads %s",
		ref.Scheme, strings.Join(names, ", "))
}

// Fetch fetches ref from the Source registered for its scheme. Errors are
// *jobs.Error values; a Source returning another error type is reported as
// an unavailable secret without echoing its text.
func (s *Sources) Fetch(ctx context.Context, ref Ref) (Secret, error) {
	src, ok := s.lookup(ref.Scheme)
	if !ok {
		return Secret{}, s.Check(ref)
	}
	if err := ctx.Err(); err != nil {
		return Secret{}, ctxError(err, "fetching secret "+ref.String())
	}
	sec, err := safeFetch(ctx, src, ref)
	if err != nil {
		var je *jobs.Error
		if errors.As(err, &je) {
			return Secret{}, je
		}
		return Secret{}, jobs.Wrap(err, jobs.CodeSecretUnavailable,
			"secret %s could not be fetched (%T); see the worker log", ref.String(), err)
	}
	return sec, nil
}

// safeFetch calls src.Fetch and turns a panic into an internal error, so a
// buggy provider cannot take a worker down. The panic value may hold the
// secret: only its type is kept.
func safeFetch(ctx context.Context, src Source, ref Ref) (sec Secret, err error) {
	defer func() {
		if p := recover(); p != nil {
			sec, err = Secret{}, jobs.Errorf(jobs.CodeInternal,
				"the %s secret source panicked (%T) while fetching %s; this is a defect in that provider", ref.Scheme, p, ref.String())
		}
	}()
	return src.Fetch(ctx, ref)
}

// ctxError turns a context error into a jobs error: a deadline is a timeout,
// anything else a cancellation.
func ctxError(err error, doing string) *jobs.Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return jobs.Wrap(err, jobs.CodeTimeout, "deadline passed while %s", doing)
	}
	return jobs.Wrap(err, jobs.CodeCanceled, "canceled while %s", doing)
}

// versioner makes Versions from secret content with a key of its own, so a
// Version can be logged without offering a hash of a password to crack.
type versioner struct{ key []byte }

func newVersioner() versioner {
	key := make([]byte, 32)
	// crypto/rand.Read never returns an error since Go 1.24: it crashes
	// instead, which is right, as a fixed key would make Versions crackable.
	_, _ = rand.Read(key)
	return versioner{key: key}
}

// sum returns a short keyed hash of data.
func (v versioner) sum(data []byte) string {
	m := hmac.New(sha256.New, v.key)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil)[:12])
}
