package secrets

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultRefreshInterval is how often, at most, a Resolver asks a profile's
// sources whether its secrets changed.
const DefaultRefreshInterval = time.Second

// Resolver turns profiles into Materials, caching them per profile and
// refreshing them when a secret changes. It is safe for concurrent use.
//
// Per profile name and definition it keeps the last outcome. At most once
// per refresh interval a call fetches the profile's secrets again and
// compares their Versions; only a change makes it decode again. Meanwhile:
//
//   - Concurrent calls for one profile resolve it once: one goroutine
//     fetches and decodes, the others wait for its outcome, or keep using
//     the previous Material while it refreshes.
//   - A failure to decode (wrong password, invalid keystore) is cached until
//     a secret's Version changes, so a broken profile is not decoded again
//     on every call.
//   - When a source fails, or a changed secret does not decode, and a good
//     Material exists, the Resolver keeps serving it and logs a warning
//     through zerolog.Ctx(ctx).
type Resolver struct {
	sources         *Sources
	now             func() time.Time
	refreshInterval time.Duration
	observers       []func(LoadEvent)

	mu      sync.Mutex
	entries map[string]*entry
}

// LoadEvent reports one load of a profile's keystore: its secrets were
// fetched and decoded (Material set, Err nil), or a fetch or the decoding
// failed (Err set; Material nil). Scheme is the scheme of the reference
// that failed, else of the keystore. A refresh that finds every secret
// unchanged is not a load. It carries no secret.
type LoadEvent struct {
	Profile  string
	Scheme   string
	Material *Material
	Err      error
}

// AddLoadObserver adds f, called synchronously after every keystore load
// (see LoadEvent) while the profile is locked: f must be quick and must not
// call the Resolver. Loads already under way may not report to f.
func (r *Resolver) AddLoadObserver(f func(LoadEvent)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observers = append(slices.Clip(r.observers), f)
}

func (r *Resolver) notify(ev LoadEvent) {
	r.mu.Lock()
	obs := r.observers
	r.mu.Unlock()
	for _, f := range obs {
		f(ev)
	}
}

// Option configures a Resolver.
type Option func(*Resolver)

// WithClock sets the clock used for refresh timing and for checking the
// client certificate's validity window. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(r *Resolver) { r.now = now } }

// WithRefreshInterval sets how often, at most, a profile's sources are asked
// whether a secret changed. The default is DefaultRefreshInterval; zero or
// less asks on every call.
func WithRefreshInterval(d time.Duration) Option {
	return func(r *Resolver) { r.refreshInterval = d }
}

// NewResolver returns a Resolver fetching secrets through sources.
func NewResolver(sources *Sources, opts ...Option) *Resolver {
	r := &Resolver{
		sources:         sources,
		now:             time.Now,
		refreshInterval: DefaultRefreshInterval,
		entries:         map[string]*entry{},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// entry is the cache of one profile name for one definition.
type entry struct {
	def Profile
	// parsed reads def's references once: every call resolves its
	// profile.
	parsed func() (profileRefs, error)
	// sem is held by the one goroutine fetching and decoding the profile,
	// so concurrent callers share its outcome.
	sem chan struct{}

	mu    sync.Mutex
	state *state
}

// state is one outcome of resolving a profile; it is replaced, never
// modified, so a reader holding one sees a consistent outcome.
type state struct {
	mat      *Material // the Material to serve, nil when there is none
	err      error     // the failure to report when mat is nil
	versions []string  // secret versions mat or err were built from; nil after a failed fetch
	checked  time.Time // when the sources were last asked
}

// Validate checks p as Profile.Validate does, and that this build has a
// Source for each of its references, so a config naming vault: in a build
// without Vault fails when it loads rather than on the first call.
func (r *Resolver) Validate(name string, p Profile) error {
	refs, err := p.parse()
	if err != nil {
		return profileError(err, name, "", Ref{})
	}
	for _, f := range refs.fields() {
		if err := r.sources.Check(f.ref); err != nil {
			return profileError(err, name, f.field, f.ref)
		}
	}
	return nil
}

// Resolve returns the Material of profile name, defined as p. It checks the
// client certificate's validity window on every call, cached or not:
// jobs.CodeClientCertExpired or jobs.CodeClientCertNotYetValid. Other
// failures carry the code of what failed (keystore_password_wrong,
// keystore_invalid, secret_unavailable...), with a message naming the
// profile and the reference.
func (r *Resolver) Resolve(ctx context.Context, name string, p Profile) (*Material, error) {
	e := r.entryFor(name, p)
	refs, err := e.parsed()
	if err != nil {
		return nil, profileError(err, name, "", Ref{})
	}
	m, err := e.get(ctx, r, name, refs)
	if err != nil {
		return nil, err
	}
	if err := CheckValidity(name, m.Leaf, r.now()); err != nil {
		return nil, err
	}
	return m, nil
}

// Secret reads the secret that reference ref names (env:, file:, vault:,
// cyberark:, registry:...) through the resolver's sources, for the
// credentials that are not a profile's (a connection's auth, a proxy's
// password). Each call reads the source, whose own caching applies (Vault
// KV answers are reused for vault.poll_interval), so a rotated secret is
// used at the next read. The bytes are the caller's; a trailing newline
// is dropped, as for passwords.
func (r *Resolver) Secret(ctx context.Context, ref string) ([]byte, error) {
	parsed, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	sec, err := r.sources.Fetch(ctx, parsed)
	if err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(sec.Data, []byte("\n"))
	return bytes.Clone(bytes.TrimSuffix(out, []byte("\r"))), nil
}

// Invalidate forgets what is cached for profile name, so the next Resolve
// fetches and decodes it afresh. Materials already returned stay usable.
func (r *Resolver) Invalidate(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, name)
}

// entryFor returns the cache entry of name for definition p, replacing one
// made for another definition.
func (r *Resolver) entryFor(name string, p Profile) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[name]
	if e == nil || e.def != p {
		e = &entry{def: p, sem: make(chan struct{}, 1), parsed: sync.OnceValues(p.parse)}
		r.entries[name] = e
	}
	return e
}

func (e *entry) load() *state {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

func (e *entry) store(s *state) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.state = s
}

// fresh reports whether s was checked within the refresh interval.
func (r *Resolver) fresh(s *state) bool {
	return s != nil && r.now().Sub(s.checked) < r.refreshInterval
}

// get returns the entry's outcome, refreshing it when it is stale.
func (e *entry) get(ctx context.Context, r *Resolver, name string, refs profileRefs) (*Material, error) {
	s := e.load()
	if r.fresh(s) {
		return s.mat, s.err
	}
	if s != nil && s.mat != nil {
		// A stale Material is still good while one goroutine refreshes it:
		// the others need not wait for the sources.
		select {
		case e.sem <- struct{}{}:
		default:
			return s.mat, nil
		}
	} else {
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, profileError(ctxError(ctx.Err(), "waiting for the keystore to be loaded"), name, "", Ref{})
		}
	}
	defer func() { <-e.sem }()
	// Whoever held the semaphore before may have just refreshed.
	if s = e.load(); r.fresh(s) {
		return s.mat, s.err
	}
	next, keep := r.refresh(ctx, name, e.def, refs, s)
	if keep {
		e.store(next)
	}
	return next.mat, next.err
}

// refresh fetches the profile's secrets and, when their versions changed
// since prev, decodes them. It returns the outcome and whether to cache it.
func (r *Resolver) refresh(ctx context.Context, name string, p Profile, refs profileRefs, prev *state) (*state, bool) {
	now := r.now()
	log := zerolog.Ctx(ctx)
	got := map[Ref]Secret{}
	var versions []string
	for _, f := range refs.fields() {
		if _, done := got[f.ref]; done {
			versions = append(versions, got[f.ref].Version)
			continue
		}
		sec, err := r.sources.Fetch(ctx, f.ref)
		if err != nil {
			err = profileError(err, name, f.field, f.ref)
			r.notify(LoadEvent{Profile: name, Scheme: f.ref.Scheme, Err: err})
			// A certificate that expired meanwhile (a vault-pki: one that
			// could not be renewed) is not worth keeping: report why.
			if prev != nil && prev.mat != nil && now.Before(prev.mat.Leaf.NotAfter) {
				log.Warn().Err(err).Str("profile", name).Str("material_version", prev.mat.Version).
					Msg("secret source failed; still using the keystore loaded before")
				return &state{mat: prev.mat, versions: prev.versions, checked: now}, true
			}
			if ctx.Err() != nil {
				// This caller's deadline says nothing about the profile:
				// the next caller tries again.
				return &state{err: err}, false
			}
			return &state{err: err, checked: now}, true
		}
		got[f.ref] = sec
		versions = append(versions, sec.Version)
	}
	if prev != nil && prev.versions != nil && slices.Equal(prev.versions, versions) {
		return &state{mat: prev.mat, err: prev.err, versions: versions, checked: now}, true
	}
	m, err := r.build(name, p, refs, got, materialVersion(name, p, versions))
	r.notify(LoadEvent{Profile: name, Scheme: refs.keystore.Scheme, Material: m, Err: err})
	if err != nil {
		if prev != nil && prev.mat != nil {
			log.Error().Err(err).Str("profile", name).Str("material_version", prev.mat.Version).
				Msg("a changed secret does not decode; still using the keystore loaded before")
			return &state{mat: prev.mat, versions: versions, checked: now}, true
		}
		return &state{err: err, versions: versions, checked: now}, true
	}
	if prev != nil && prev.mat != nil {
		log.Info().Str("profile", name).Str("material_version", m.Version).Str("serial", SerialHex(m.Leaf)).
			Msg("profile's secrets changed; new connections use the new keystore")
	}
	return &state{mat: m, versions: versions, checked: now}, true
}
