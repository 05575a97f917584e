// Package registry is the shared registry of mtlsrelay: profiles,
// connections and uploaded keystores kept in the NATS KV bucket
// mtlsrelay_registry, which every worker watches and applies live.
//
// Keys are profiles.<name> (a profile's JSON), connections.<name> (a
// connection's JSON) and keystores.<name> (the bytes of a keystore uploaded
// with its profile, named by the reference registry:keystores/<name>).
//
// A password stored in the registry is sealed with AES-256-GCM under a key
// that workers and the command line read through a secret reference
// (registry.key in the worker's config); the KV value holds only the sealed
// form. Workers open it through the Source of scheme registry:, which names
// the sealed field as registry:profiles/<name>/password.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Key prefixes of the bucket, fixed by the wire contract.
const (
	prefixProfiles    = "profiles."
	prefixConnections = "connections."
	prefixKeystores   = "keystores."
)

// History is how many revisions the bucket keeps per key.
const History = 5

// DefaultDebounce is how long Watch gathers a burst of changes before it
// delivers one Snapshot.
const DefaultDebounce = 50 * time.Millisecond

// ErrNotFound is wrapped by the errors of Get and Delete methods when the
// registry holds no entry of that name.
var ErrNotFound = errors.New("not in the registry")

// Options configures a Registry. The zero value is a registry without an
// encryption key whose references are read by secrets.DefaultSources("").
type Options struct {
	// Sources fetch the encryption key and, when a profile is put, the
	// references it names, to check that its keystore opens. Nil means
	// secrets.DefaultSources(""). When no Source is registered for scheme
	// registry:, Open registers the Registry's own (see Source).
	Sources *secrets.Sources
	// Key references the 32-byte AES-256 key sealing passwords, base64 or
	// hex encoded: env:MTLSRELAY_REGISTRY_KEY, file:/etc/mtlsrelay/registry.key
	// or a vault: reference. Empty means no key: a password can then be
	// stored only as a reference (env:, file:, vault:...), and sealed
	// passwords cannot be opened.
	Key string
	// Replicas of the bucket when Open creates it; default 1 (3 on a
	// cluster). An existing bucket is used as it is.
	Replicas int
	// Wait makes Open retry until NATS answers or ctx ends, for a worker
	// that starts before its cluster is up. Retries are logged through
	// zerolog.Ctx(ctx).
	Wait bool
	// Debounce is how long Watch gathers a burst of changes; default
	// DefaultDebounce. Changes reach fn well within 2 s either way.
	Debounce time.Duration
}

// Registry reads and writes the registry bucket. It is safe for concurrent
// use.
type Registry struct {
	kv       jetstream.KeyValue
	sources  *secrets.Sources
	key      keyring
	debounce time.Duration
}

// Open creates the bucket mtlsrelay_registry (History 5, file storage) or
// opens it when it exists, and returns a Registry on it.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Registry, error) {
	if opts.Sources == nil {
		opts.Sources = secrets.DefaultSources("")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	key, err := newKeyring(opts.Sources, opts.Key)
	if err != nil {
		return nil, err
	}
	r := &Registry{sources: opts.Sources, key: key, debounce: opts.Debounce}
	delay := 250 * time.Millisecond
	for {
		r.kv, err = openBucket(ctx, js, opts.Replicas)
		if err == nil || !opts.Wait || ctx.Err() != nil {
			break
		}
		zerolog.Ctx(ctx).Warn().Err(err).Dur("retry_in", delay).Msg("cannot open the registry bucket yet")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
	if err != nil {
		return nil, err
	}
	if !slices.Contains(r.sources.Schemes(), secrets.SchemeRegistry) {
		r.sources.Register(secrets.SchemeRegistry, r.Source())
	}
	return r, nil
}

// openBucket opens the bucket, creating it when it does not exist. An
// existing bucket's settings are left alone, so a command line with
// another Replicas cannot change a cluster's bucket.
func openBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(cctx, jobs.RegistryBucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open registry bucket %s: %w", jobs.RegistryBucket, err)
	}
	kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket:      jobs.RegistryBucket,
		Description: "mtlsrelay registry: profiles, connections and uploaded keystores",
		History:     History,
		Replicas:    max(replicas, 1),
		Storage:     jetstream.FileStorage,
	})
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another worker created it meanwhile.
		kv, err = js.KeyValue(cctx, jobs.RegistryBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create registry bucket %s: %w", jobs.RegistryBucket, err)
	}
	return kv, nil
}

// checkName checks a profile or connection name: it becomes a KV key token.
func checkName(kind, name string) error {
	if !jobs.ValidName(name) {
		return fmt.Errorf("%s name %q must be 1-128 characters of A-Z, a-z, 0-9, _ and -", kind, name)
	}
	return nil
}

// kvError describes a failure of the bucket itself (not a missing key).
func kvError(err error, doing string) error {
	return fmt.Errorf("registry: %s: %w (is NATS reachable?)", doing, err)
}
