package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The profile fields that may be stored sealed.
const (
	fieldPassword           = "password"
	fieldTruststorePassword = "truststore_password"
)

var _ secrets.Source = source{}

// Source returns the secrets.Source of scheme registry:. It reads
//
//   - registry:keystores/<name>: the keystore uploaded with profile <name>;
//   - registry:profiles/<name>/password (or /truststore_password): the
//     sealed field of profile <name>, opened with the registry key. The
//     associated data is the key it was read from, so a sealed value copied
//     into another profile does not open.
//
// The Version of either is "kv:<revision>" of the KV entry read. A missing
// entry is ErrNotFound (secret_unavailable, not retryable); a NATS failure is
// secret_unavailable, retryable. It is safe for concurrent use.
func (r *Registry) Source() secrets.Source { return source{r} }

type source struct{ r *Registry }

// Fetch reads the keystore or sealed field that ref names.
func (s source) Fetch(ctx context.Context, ref secrets.Ref) (secrets.Secret, error) {
	kind, rest, _ := strings.Cut(ref.Body, "/")
	switch kind {
	case "keystores":
		if !jobs.ValidName(rest) {
			break
		}
		e, err := s.r.getEntry(ctx, prefixKeystores+rest)
		if errors.Is(err, ErrNotFound) {
			return secrets.Secret{}, jobs.Wrap(errors.Join(secrets.ErrNotFound, err), jobs.CodeSecretUnavailable,
				"the registry holds no keystore %s%s; upload it with `mtlsrelay profile put %s --keystore FILE`",
				prefixKeystores, rest, rest).WithRetryable(false)
		}
		if err != nil {
			return secrets.Secret{}, unavailable(err, prefixKeystores+rest)
		}
		return secrets.Secret{Data: bytes.Clone(e.Value()), Version: kvVersion(e)}, nil
	case "profiles":
		name, field, _ := strings.Cut(rest, "/")
		if !jobs.ValidName(name) || (field != fieldPassword && field != fieldTruststorePassword) {
			break
		}
		return s.sealed(ctx, name, field)
	}
	return secrets.Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
		"registry reference %s names nothing the registry holds; write registry:keystores/NAME (or registry:profiles/NAME/password)", ref)
}

// sealed opens the sealed field of profile name.
func (s source) sealed(ctx context.Context, name, field string) (secrets.Secret, error) {
	e, err := s.r.getEntry(ctx, prefixProfiles+name)
	if errors.Is(err, ErrNotFound) {
		return secrets.Secret{}, jobs.Wrap(errors.Join(secrets.ErrNotFound, err), jobs.CodeSecretUnavailable,
			"the registry holds no profile %s, whose %s is referenced; put it with `mtlsrelay profile put %s`", name, field, name).WithRetryable(false)
	}
	if err != nil {
		return secrets.Secret{}, unavailable(err, prefixProfiles+name)
	}
	p, err := decodeStoredProfile(e.Value())
	if err != nil {
		return secrets.Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid, "registry profile %s is not valid JSON; put it again", name)
	}
	text := p.Password
	if field == fieldTruststorePassword {
		text = p.TruststorePassword
	}
	if !isSealed(text) {
		return secrets.Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the %s of registry profile %s is not stored sealed, so registry:profiles/%s/%s names nothing; reference the password itself", field, name, name, field)
	}
	key, err := s.r.key.get(ctx)
	if errors.Is(err, errNoKey) {
		return secrets.Secret{}, jobs.Errorf(jobs.CodeSecretUnavailable,
			"the %s of registry profile %s is sealed, but this worker has no registry key to open it; %s", field, name, keyHowTo).WithRetryable(false)
	}
	if err != nil {
		return secrets.Secret{}, err
	}
	plain, err := key.open(name, field, text)
	if err != nil {
		return secrets.Secret{}, err
	}
	return secrets.Secret{Data: plain, Version: kvVersion(e)}, nil
}

// getEntry reads key, returning an error wrapping ErrNotFound when it is
// absent or deleted.
func (r *Registry) getEntry(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return e, err
}

func unavailable(err error, key string) error {
	return jobs.Wrap(err, jobs.CodeSecretUnavailable,
		"the registry (NATS KV %s, key %s) could not be read: %v; check the worker's NATS connection", jobs.RegistryBucket, key, err)
}

func kvVersion(e jetstream.KeyValueEntry) string { return fmt.Sprintf("kv:%d", e.Revision()) }
