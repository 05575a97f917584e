package registry

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Snapshot is the registry's profiles and connections at one moment, as
// workers use them: a sealed password reads registry:profiles/<name>/password.
// Its maps are never modified once delivered.
type Snapshot struct {
	// Profiles by name.
	Profiles map[string]secrets.Profile
	// Connections by name.
	Connections map[string]catalog.Connection
	// Revision is the highest KV revision the snapshot reflects.
	Revision uint64
}

// Watch calls fn with a Snapshot once the registry's current profiles and
// connections are read, then after every change: changes arriving together
// are gathered for Options.Debounce (50 ms by default) and delivered as one
// Snapshot. fn is called from one goroutine, never concurrently.
//
// An entry that does not decode or validate is left out of the Snapshot and
// logged through zerolog.Ctx(ctx). Watch returns when ctx ends; when its KV
// watcher stops for another reason, it logs that and watches again, reading
// the whole registry afresh.
func (r *Registry) Watch(ctx context.Context, fn func(Snapshot)) {
	log := zerolog.Ctx(ctx)
	for {
		err := r.watchOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Msg("registry watch interrupted; watching again in 1s")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// errWatchClosed reports a KV watcher whose updates channel was closed.
var errWatchClosed = errors.New("registry watcher closed")

func (r *Registry) watchOnce(ctx context.Context, fn func(Snapshot)) error {
	log := zerolog.Ctx(ctx)
	w, err := r.kv.WatchFiltered(ctx, []string{prefixProfiles + ">", prefixConnections + ">"})
	if err != nil {
		return kvError(err, "watch")
	}
	defer func() { _ = w.Stop() }()
	snap := Snapshot{Profiles: map[string]secrets.Profile{}, Connections: map[string]catalog.Connection{}}
	deliver := func() {
		fn(Snapshot{Profiles: maps.Clone(snap.Profiles), Connections: maps.Clone(snap.Connections), Revision: snap.Revision})
	}
	initial := true
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-debounce:
			debounce = nil
			deliver()
		case e, ok := <-w.Updates():
			if !ok {
				return errWatchClosed
			}
			if e == nil {
				// The current values have all been read.
				if initial {
					initial = false
					deliver()
				}
				continue
			}
			apply(&snap, e, log)
			if !initial && debounce == nil {
				debounce = time.After(r.debounce)
			}
		}
	}
}

// apply records one KV change in snap.
func apply(snap *Snapshot, e jetstream.KeyValueEntry, log *zerolog.Logger) {
	snap.Revision = max(snap.Revision, e.Revision())
	removed := e.Operation() != jetstream.KeyValuePut
	if name, ok := strings.CutPrefix(e.Key(), prefixProfiles); ok {
		delete(snap.Profiles, name)
		if removed {
			log.Debug().Str("profile", name).Uint64("revision", e.Revision()).Msg("registry profile removed")
			return
		}
		pe, err := profileEntry(name, e)
		if err != nil {
			log.Error().Err(err).Str("profile", name).Msg("registry profile ignored until it is put again")
			return
		}
		snap.Profiles[name] = pe.Profile
		log.Debug().Str("profile", name).Uint64("revision", e.Revision()).Msg("registry profile changed")
		return
	}
	if name, ok := strings.CutPrefix(e.Key(), prefixConnections); ok {
		delete(snap.Connections, name)
		if removed {
			log.Debug().Str("connection", name).Uint64("revision", e.Revision()).Msg("registry connection removed")
			return
		}
		ce, err := connectionEntry(name, e)
		if err != nil {
			log.Error().Err(err).Str("connection", name).Msg("registry connection ignored until it is put again")
			return
		}
		snap.Connections[name] = ce.Connection
		log.Debug().Str("connection", name).Uint64("revision", e.Revision()).Msg("registry connection changed")
	}
}

// Merge returns the catalog of a worker whose config file defines
// cfgProfiles and cfgConnections and whose registry holds snap. The config
// file wins for the names it defines: each registry entry it shadows is
// logged on log. Unless allowLocalRefs, a registry profile that references
// a secret outside RemoteSchemes is refused (CheckRefs): calls on it end
// with its error.
func Merge(cfgProfiles map[string]secrets.Profile, cfgConnections map[string]catalog.Connection, snap Snapshot, allowLocalRefs bool, log zerolog.Logger) *catalog.Catalog {
	c := &catalog.Catalog{
		Profiles:    make(map[string]secrets.Profile, len(cfgProfiles)+len(snap.Profiles)),
		Connections: make(map[string]catalog.Connection, len(cfgConnections)+len(snap.Connections)),
		Refused:     map[string]*jobs.Error{},
	}
	maps.Copy(c.Profiles, cfgProfiles)
	maps.Copy(c.Connections, cfgConnections)
	for name, p := range snap.Profiles {
		if _, ok := c.Profiles[name]; ok {
			log.Info().Str("profile", name).Msg("registry profile shadowed by the worker's config file, which wins")
			continue
		}
		if !allowLocalRefs {
			if err := CheckRefs(name, p); err != nil {
				log.Error().Str("profile", name).Str("reason", err.Message).Msg("registry profile refused: it names the worker's own secrets")
				c.Refused[name] = err
				continue
			}
		}
		c.Profiles[name] = p
	}
	for name, conn := range snap.Connections {
		if _, ok := c.Connections[name]; ok {
			log.Info().Str("connection", name).Msg("registry connection shadowed by the worker's config file, which wins")
			continue
		}
		if !allowLocalRefs && conn.Auth != nil {
			if err := checkAuthRefs(name, conn.Auth); err != nil {
				// Its calls end as for a connection that does not exist,
				// and the log says why.
				log.Error().Str("connection", name).Str("reason", err.Message).Msg("registry connection refused: its auth names the worker's own secrets")
				continue
			}
		}
		c.Connections[name] = conn
	}
	return c
}

// checkAuthRefs applies CheckRefs' rule to the secrets of a registry
// connection's auth: a header value of env:MTLSRELAY_REGISTRY_KEY would
// otherwise send the worker's own secret to the connection's host.
func checkAuthRefs(name string, a *catalog.Auth) *jobs.Error {
	for _, f := range []struct{ field, text string }{
		{"password", a.Password}, {"token", a.Token}, {"value", a.Value}, {"client_secret", a.ClientSecret},
	} {
		if f.text == "" {
			continue
		}
		ref, err := secrets.ParseRef(f.text)
		if err != nil {
			return jobs.AsError(err)
		}
		if !slices.Contains(RemoteSchemes, ref.Scheme) {
			return jobs.Errorf(jobs.CodeSecretUnavailable,
				"registry connection %s: its auth %s is a %s: reference, and registry entries may reference only %s: secrets unless the worker's config sets registry.allow_local_refs: true",
				name, f.field, ref.Scheme, strings.Join(RemoteSchemes, ":, "))
		}
	}
	return nil
}

// RemoteSchemes are the secret references a registry profile may use by
// default: secrets kept outside the worker. file: and env: name the
// worker's own secrets (every partner's identity it holds), so write
// access to the registry would otherwise mean use of all of them.
var RemoteSchemes = []string{secrets.SchemeRegistry, secrets.SchemeVault, secrets.SchemeVaultPKI, secrets.SchemeCyberArk}

// CheckRefs refuses a registry profile that references a secret outside
// RemoteSchemes, unless the worker's config sets registry.allow_local_refs.
// A truststore may also be inline (PEM or base64): CA certificates are
// public, and profile put stores a local truststore file so.
func CheckRefs(name string, p secrets.Profile) *jobs.Error {
	for _, f := range []struct{ field, text string }{
		{"keystore", p.Keystore}, {"key", p.Key}, {fieldPassword, p.Password},
		{"truststore", p.Truststore}, {fieldTruststorePassword, p.TruststorePassword},
	} {
		if f.text == "" {
			continue
		}
		ref, err := secrets.ParseRef(f.text)
		if err != nil {
			return jobs.AsError(err)
		}
		if slices.Contains(RemoteSchemes, ref.Scheme) || (f.field == "truststore" && ref.IsInline()) {
			continue
		}
		return jobs.Errorf(jobs.CodeSecretUnavailable,
			"registry profile %s: its %s is a %s: reference, and registry profiles may reference only %s: secrets unless the worker's config sets registry.allow_local_refs: true; keep the secret in Vault, CyberArk or the registry (profile put --keystore FILE uploads it)",
			name, f.field, ref.Scheme, strings.Join(RemoteSchemes, ":, ")).WithRetryable(false)
	}
	return nil
}
