package worker

import (
	"context"
	"crypto/x509"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// DefaultCertExpiryWarnDays is how many days before a client certificate
// expires the worker starts warning about it.
const DefaultCertExpiryWarnDays = 30

// expiryCheckInterval is how often a running worker loads every profile
// and warns about certificates that expire soon.
const expiryCheckInterval = 24 * time.Hour

// certTracker remembers, per profile, the client certificate of the last
// keystore load and the last load's failure, for the expiry metrics, the
// warnings and the status endpoint.
type certTracker struct {
	mu       sync.Mutex
	profiles map[string]*certState
}

type certState struct {
	subject, serial     string
	notBefore, notAfter time.Time
	hasCert             bool
	loadedAt            time.Time
	lastErr             *jobs.Error
}

// ProfileStatus describes a profile's client certificate as a worker last
// loaded it.
type ProfileStatus struct {
	Profile string `json:"profile"`
	// Subject, Serial (hex) and NotAfter identify the certificate; empty
	// when no keystore of the profile loaded yet.
	Subject  string    `json:"subject,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// ExpiresInSeconds is NotAfter minus now; negative once expired.
	ExpiresInSeconds float64 `json:"expires_in_seconds,omitempty"`
	// Expiring is set within worker.cert_expiry_warn_days of NotAfter
	// (and after it).
	Expiring bool `json:"expiring,omitempty"`
	Expired  bool `json:"expired,omitempty"`
	// LoadedAt is when the certificate was loaded.
	LoadedAt time.Time `json:"loaded_at,omitzero"`
	// LastError is the failure of the last load, if it failed: the worker
	// keeps serving the certificate loaded before, if any.
	LastError *jobs.Error `json:"last_error,omitempty"`
}

// warnWindow is how long before expiry a certificate is reported as
// expiring; negative when warnings are off.
func (w *Worker) warnWindow() time.Duration {
	d := w.cfg.Worker.CertExpiryWarnDays
	if d < 0 {
		return -1
	}
	if d == 0 {
		d = DefaultCertExpiryWarnDays
	}
	return time.Duration(d) * 24 * time.Hour
}

func (w *Worker) expiring(notAfter, now time.Time) bool {
	win := w.warnWindow()
	return win >= 0 && notAfter.Sub(now) <= win
}

// keystoreLoaded is the Resolver's load observer: it counts the load,
// remembers the certificate and warns when it expires soon.
func (w *Worker) keystoreLoaded(ev secrets.LoadEvent) {
	w.metrics.keystoreLoaded(ev)
	now := time.Now()
	t := &w.certs
	t.mu.Lock()
	if t.profiles == nil {
		t.profiles = map[string]*certState{}
	}
	st := t.profiles[ev.Profile]
	if st == nil {
		st = &certState{}
		t.profiles[ev.Profile] = st
	}
	var leaf *x509.Certificate
	if ev.Err != nil {
		st.lastErr = jobs.AsError(ev.Err)
	} else if ev.Material != nil && ev.Material.Leaf != nil {
		leaf = ev.Material.Leaf
		*st = certState{
			subject: leaf.Subject.String(), serial: secrets.SerialHex(leaf),
			notBefore: leaf.NotBefore, notAfter: leaf.NotAfter, hasCert: true, loadedAt: now,
		}
	}
	snap := *st
	t.mu.Unlock()
	if ev.Err != nil {
		w.log.Debug().Str("profile", ev.Profile).Str("source", ev.Scheme).Str("code", string(jobs.CodeOf(ev.Err))).Msg("keystore load failed")
		return
	}
	if leaf != nil {
		w.log.Debug().Str("profile", ev.Profile).Str("source", ev.Scheme).Str("serial", snap.serial).Time("not_after", snap.notAfter).Msg("keystore loaded")
		w.warnExpiry(ProfileStatus{Profile: ev.Profile, Subject: snap.subject, Serial: snap.serial, NotAfter: snap.notAfter}, now)
	}
}

// warnExpiry logs a warning when ps's certificate expires within the warn
// window, or has expired.
func (w *Worker) warnExpiry(ps ProfileStatus, now time.Time) {
	if ps.NotAfter.IsZero() || !w.expiring(ps.NotAfter, now) {
		return
	}
	left := ps.NotAfter.Sub(now)
	ev := w.log.Warn().Str("profile", ps.Profile).Str("subject", ps.Subject).Str("serial", ps.Serial).
		Time("not_after", ps.NotAfter).Float64("days_left", math.Floor(left.Hours()/24*10)/10)
	if left <= 0 {
		ev.Msg("client certificate has expired; calls with this profile fail until its keystore is renewed")
		return
	}
	ev.Msg("client certificate expires soon; renew the profile's keystore")
}

// profileStatuses returns the certificate of every profile of the current
// catalog that was loaded or failed to load, sorted by name.
func (w *Worker) profileStatuses(now time.Time) []ProfileStatus {
	profiles := w.catalog.load().Profiles
	w.certs.mu.Lock()
	defer w.certs.mu.Unlock()
	out := make([]ProfileStatus, 0, len(w.certs.profiles))
	for name, st := range w.certs.profiles {
		if _, ok := profiles[name]; !ok {
			continue
		}
		ps := ProfileStatus{Profile: name, LastError: st.lastErr}
		if st.hasCert {
			ps.Subject, ps.Serial, ps.NotAfter, ps.LoadedAt = st.subject, st.serial, st.notAfter.UTC(), st.loadedAt.UTC()
			ps.ExpiresInSeconds = math.Round(st.notAfter.Sub(now).Seconds())
			ps.Expiring, ps.Expired = w.expiring(st.notAfter, now), !now.Before(st.notAfter)
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Profile < out[j].Profile })
	return out
}

// watchExpiry loads every profile of the catalog at start and then daily,
// so expiring certificates are reported even for profiles no call used
// yet, and warns about each one that expires soon.
func (w *Worker) watchExpiry(ctx context.Context) {
	t := time.NewTicker(expiryCheckInterval)
	defer t.Stop()
	for first := true; ; first = false {
		w.loadProfiles(ctx)
		if !first {
			// A load already warned for certificates that changed.
			now := time.Now()
			for _, ps := range w.profileStatuses(now) {
				w.warnExpiry(ps, now)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loadProfiles resolves every profile of the catalog, one at a time. The
// Resolver caches the outcome, so calls do not load them again.
func (w *Worker) loadProfiles(ctx context.Context) {
	cat := w.catalog.load()
	for _, name := range sortedKeys(cat.Profiles) {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(w.log.WithContext(ctx), 30*time.Second)
		_, err := w.resolver.Resolve(rctx, name, cat.Profiles[name])
		cancel()
		if err != nil && ctx.Err() == nil {
			e := jobs.AsError(err)
			w.log.Warn().Str("profile", name).Str("code", string(e.Code)).Str("error", e.Message).Msg("profile cannot be loaded; its calls will fail")
		}
	}
}

var (
	expiryDesc = prometheus.NewDesc("mtlsrelay_client_cert_expiry_seconds",
		"Seconds until the client certificate of a profile expires (negative once expired), as last loaded.", []string{"profile"}, nil)
	notAfterDesc = prometheus.NewDesc("mtlsrelay_client_cert_not_after_timestamp_seconds",
		"Unix time at which the client certificate of a profile expires, as last loaded.", []string{"profile"}, nil)
	expiringDesc = prometheus.NewDesc("mtlsrelay_client_cert_expiring",
		"1 when the client certificate of a profile expires within worker.cert_expiry_warn_days (or has expired), else 0.", []string{"profile"}, nil)
	warnDaysDesc = prometheus.NewDesc("mtlsrelay_client_cert_expiry_warn_days",
		"worker.cert_expiry_warn_days: how many days before expiry a certificate counts as expiring (-1: never).", nil, nil)
)

// certCollector reports the tracked certificates of the catalog's profiles,
// computing the time left at scrape.
type certCollector struct{ w *Worker }

// Describe implements prometheus.Collector.
func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- notAfterDesc
	ch <- expiringDesc
	ch <- warnDaysDesc
}

// Collect implements prometheus.Collector.
func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	days := -1.0
	if win := c.w.warnWindow(); win >= 0 {
		days = win.Hours() / 24
	}
	ch <- prometheus.MustNewConstMetric(warnDaysDesc, prometheus.GaugeValue, days)
	for _, ps := range c.w.profileStatuses(now) {
		if ps.NotAfter.IsZero() {
			continue
		}
		expiring := 0.0
		if ps.Expiring {
			expiring = 1
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, ps.NotAfter.Sub(now).Seconds(), ps.Profile)
		ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(ps.NotAfter.Unix()), ps.Profile)
		ch <- prometheus.MustNewConstMetric(expiringDesc, prometheus.GaugeValue, expiring, ps.Profile)
	}
}
