package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Provider is a secret source that a worker starts from a section of its
// config file, such as Vault's vault: or CyberArk's cyberark:. Adding one
// is a package that implements Provider and one line in the list of
// providers the command starts (cmd/mtlsrelay); the worker's config and
// the rest of the worker do not change.
type Provider interface {
	// Section is the top-level key of the provider's settings in the
	// worker's config file.
	Section() string
	// Schemes are the secret reference schemes the provider reads.
	Schemes() []string
	// Missing says what a worker must be given to read the provider's
	// references, for the error of a reference that no source reads.
	Missing() string
	// Start starts the provider and registers its sources on sources, and
	// returns what stops its background work. section holds its settings,
	// nil when the config has none: the provider then starts with its
	// documented defaults where it has any and they are called for
	// (needed reports that a profile of the config references one of its
	// schemes), or does not start and returns a nil stop. Settings that do
	// not decode or do not work are errors.
	Start(ctx context.Context, section *yaml.Node, needed bool, sources *Sources, log zerolog.Logger) (stop func(), err error)
}

// StartProviders starts providers for a config whose provider sections
// are sections and whose profiles are profiles, and returns what stops
// them all. A section that no provider claims is refused (a misspelt key
// would otherwise be ignored). A provider that does not start leaves its
// schemes to report what is missing (Sources.Check).
func StartProviders(ctx context.Context, providers []Provider, sections map[string]yaml.Node, profiles map[string]Profile, sources *Sources, log zerolog.Logger) (stop func(), err error) {
	if err := CheckSections(providers, sections); err != nil {
		return func() {}, err
	}
	var stops []func()
	stop = func() {
		for _, s := range slices.Backward(stops) {
			s()
		}
	}
	for _, p := range providers {
		var section *yaml.Node
		if n, ok := sections[p.Section()]; ok {
			section = &n
		}
		for _, scheme := range p.Schemes() {
			sources.explain(scheme, p.Missing())
		}
		s, err := p.Start(ctx, section, referencesAny(profiles, p.Schemes()), sources, log)
		if err != nil {
			stop()
			return func() {}, &SectionError{Section: p.Section(), Err: err}
		}
		if s != nil {
			stops = append(stops, s)
		}
	}
	return stop, nil
}

// CheckSections refuses a config section that none of providers claims.
func CheckSections(providers []Provider, sections map[string]yaml.Node) error {
	known := make([]string, 0, len(providers))
	for _, p := range providers {
		known = append(known, p.Section())
	}
	var unknown []string
	for name := range sections {
		if !slices.Contains(known, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	sort.Strings(known)
	return fmt.Errorf("config has a section %q that nothing reads; check its spelling (the sections of secret providers are %v)", unknown[0], known)
}

// DecodeSection decodes a provider's config section into out, refusing
// keys out does not have, as the worker's config refuses its own.
func DecodeSection(section *yaml.Node, out any) error {
	data, err := yaml.Marshal(section)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// referencesAny reports whether a profile of profiles names a secret of
// one of schemes.
func referencesAny(profiles map[string]Profile, schemes []string) bool {
	for _, p := range profiles {
		for _, ref := range []string{p.Keystore, p.Password, p.Truststore, p.TruststorePassword} {
			if r, err := ParseRef(ref); err == nil && slices.Contains(schemes, r.Scheme) {
				return true
			}
		}
	}
	return false
}

// SectionError is a provider that did not start: the operator's to fix, so
// its text is the section and the message, without the wire error code a
// call's result would carry for the same fault (errors.As still finds it).
type SectionError struct {
	Section string
	Err     error
}

func (e *SectionError) Error() string {
	var je *jobs.Error
	if errors.As(e.Err, &je) {
		return e.Section + ": " + je.Message
	}
	return e.Section + ": " + e.Err.Error()
}

func (e *SectionError) Unwrap() error { return e.Err }
