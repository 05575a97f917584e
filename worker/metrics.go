package worker

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// The phases of a call that mtlsrelay_call_phase_seconds measures.
const (
	phaseQueue = iota
	phaseDNS
	phaseConnect
	phaseTLS
	phaseTTFB
	phaseTotal
	numPhases
)

// phaseNames are the values of the phase label, indexed by phase.
var phaseNames = [numPhases]string{"queue", "dns", "connect", "tls", "ttfb", "total"}

// Values of the outcome label of mtlsrelay_calls_total.
const (
	outcomeOK    = "ok"
	outcomeNotOK = "not_ok"
	outcomeError = "error"
)

// Connection label values for calls that name no connection of the
// catalog: a flow cannot create series by inventing names.
const (
	unknownConnectionLabel = "_unknown"
	invalidConnectionLabel = "_invalid"
)

// phaseBuckets span a keep-alive round trip on a LAN to a call that waited
// in the queue for minutes.
var phaseBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// observability is a Worker's state for metrics, tracing, certificate
// expiry and discovery, embedded in Worker.
type observability struct {
	metrics *metrics
	// tracer is nil unless WithTracerProvider was given.
	tracer  trace.Tracer
	certs   certTracker
	started time.Time
}

// initObservability runs at the end of New, once options are applied.
func (w *Worker) initObservability() {
	w.started = time.Now()
	w.metrics = newMetrics(w)
	w.resolver.AddLoadObserver(w.keystoreLoaded)
}

// metrics are one worker's Prometheus metrics, on a registry of its own.
// docs/METRICS.md lists them; no label or value ever holds a secret.
type metrics struct {
	reg     *prometheus.Registry
	calls   *prometheus.CounterVec
	phases  *prometheus.HistogramVec
	retries *prometheus.CounterVec
	dead    *prometheus.CounterVec
	loads   *prometheus.CounterVec
	// directRefused counts direct calls dropped for their reply subject.
	directRefused prometheus.Counter
	// forwarded counts calls forwarded to their connection's zone.
	forwarded *prometheus.CounterVec

	inflight atomic.Int64
	handled  handledCounters
	consumer consumerStats

	mu    sync.RWMutex
	conns map[string]*connMetrics
}

// connMetrics are the label-bound children of one connection, cached so the
// hot path does not look labels up.
type connMetrics struct {
	ok     prometheus.Counter
	phases [numPhases]prometheus.Observer
}

// handledCounters count what the worker handled, for the micro service's
// stats and status.
type handledCounters struct {
	ok, notOK, failed, retries, dead atomic.Uint64
}

// Handled counts the calls a worker finished since it started, by outcome,
// and its retries and dead letters.
type Handled struct {
	OK          uint64 `json:"ok"`
	NotOK       uint64 `json:"not_ok"`
	Error       uint64 `json:"error"`
	Retries     uint64 `json:"retries"`
	DeadLetters uint64 `json:"dead_letters"`
}

func (h *handledCounters) snapshot() Handled {
	return Handled{OK: h.ok.Load(), NotOK: h.notOK.Load(), Error: h.failed.Load(), Retries: h.retries.Load(), DeadLetters: h.dead.Load()}
}

func newMetrics(w *Worker) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), conns: map[string]*connMetrics{}}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtlsrelay_calls_total",
		Help: "Calls finished by this worker (one per final result), by connection, outcome (ok, not_ok, error) and code (error code, HTTP status or soap_fault for not_ok, empty for ok).",
	}, []string{"connection", "outcome", "code"})
	m.phases = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mtlsrelay_call_phase_seconds",
		Help:    "Duration of the phases of each attempt: queue (enqueued to attempt start), dns, connect, tls (only when a new connection was made), ttfb (request start to first response byte), total.",
		Buckets: phaseBuckets,
	}, []string{"connection", "phase"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtlsrelay_retries_total",
		Help: "Failed attempts that were scheduled for another attempt, by connection and code (http_status for a retryable status).",
	}, []string{"connection", "code"})
	m.dead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtlsrelay_dead_letters_total",
		Help: "Calls published to the dead-letter subject, by connection and error code.",
	}, []string{"connection", "code"})
	m.loads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtlsrelay_keystore_loads_total",
		Help: "Keystore loads (fetched and decoded because a secret changed or was not loaded yet), by profile, source (reference scheme) and result (ok, error).",
	}, []string{"profile", "source", "result"})
	m.directRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mtlsrelay_direct_calls_refused_total",
		Help: "Direct calls dropped unanswered because their reply subject is not one results may go to (worker.reply_prefixes).",
	})
	m.forwarded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mtlsrelay_calls_forwarded_total",
		Help: "Calls (durable and direct) this worker took and forwarded to the zone of their connection, which it does not serve, by zone.",
	}, []string{"zone"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mtlsrelay_calls_in_flight",
		Help: "Calls this worker is processing now.",
	}, func() float64 { return float64(m.inflight.Load()) })
	concurrency := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mtlsrelay_worker_concurrency",
		Help: "Calls this worker may process at once (worker.concurrency).",
	})
	concurrency.Set(float64(w.cfg.Worker.Concurrency))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mtlsrelay_worker_info",
		Help:        "Always 1; labels name the worker and its version.",
		ConstLabels: prometheus.Labels{"worker": w.Name(), "version": Version()},
	})
	info.Set(1)
	m.consumer.timeout = 2 * time.Second
	m.reg.MustRegister(m.calls, m.phases, m.retries, m.dead, m.loads, m.directRefused, m.forwarded, inflight, concurrency, info,
		&m.consumer, &certCollector{w: w},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsHandler serves the worker's metrics in the Prometheus text and
// OpenMetrics formats. Each worker has its own registry, not the global one.
func (w *Worker) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(w.metrics.reg, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorLog:          promLogger{w},
		Timeout:           10 * time.Second,
	})
}

type promLogger struct{ w *Worker }

func (l promLogger) Println(v ...any) {
	l.w.log.Warn().Interface("error", v).Msg("serving metrics")
}

// conn returns the cached children of a connection label.
func (m *metrics) conn(label string) *connMetrics {
	m.mu.RLock()
	c := m.conns[label]
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c = m.conns[label]; c != nil {
		return c
	}
	c = &connMetrics{ok: m.calls.WithLabelValues(label, outcomeOK, "")}
	for i := range c.phases {
		c.phases[i] = m.phases.WithLabelValues(label, phaseNames[i])
	}
	m.conns[label] = c
	return c
}

// connLabel is the connection label of a call naming connection: the name
// when the catalog defines it, "_invalid" for a subject naming no valid
// connection, else "_unknown".
func (w *Worker) connLabel(connection string) string {
	if _, ok := w.catalog.load().Connections[connection]; ok || connection == invalidConnectionLabel {
		return connection
	}
	return unknownConnectionLabel
}

// observeAttempt records the phases of an attempt the executor made on
// connection (a catalog name).
func (m *metrics) observeAttempt(connection string, queued time.Duration, res *jobs.Result) {
	if res == nil {
		return
	}
	c := m.conn(connection)
	c.phases[phaseQueue].Observe(queued.Seconds())
	t := &res.Timing
	for _, p := range [...]struct {
		phase int
		ms    float64
	}{{phaseDNS, t.DNSMS}, {phaseConnect, t.ConnectMS}, {phaseTLS, t.TLSMS}, {phaseTTFB, t.TTFBMS}} {
		if p.ms > 0 {
			c.phases[p.phase].Observe(p.ms / 1000)
		}
	}
	c.phases[phaseTotal].Observe(t.TotalMS / 1000)
}

// finished records a call's final result under a connection label.
func (m *metrics) finished(label string, res *jobs.Result) {
	switch {
	case res.Error != nil:
		m.handled.failed.Add(1)
		m.calls.WithLabelValues(label, outcomeError, string(res.Error.Code)).Inc()
	case res.OK:
		m.handled.ok.Add(1)
		m.conn(label).ok.Inc()
	default:
		m.handled.notOK.Add(1)
		code := "soap_fault"
		if res.SOAPFault == nil {
			code = strconv.Itoa(res.Status)
		}
		m.calls.WithLabelValues(label, outcomeNotOK, code).Inc()
	}
}

// retried records an attempt that will be tried again.
func (m *metrics) retried(label string, res *jobs.Result) {
	code := jobs.CodeHTTPStatus
	if res.Error != nil {
		code = res.Error.Code
	}
	m.handled.retries.Add(1)
	m.retries.WithLabelValues(label, string(code)).Inc()
}

// deadLettered records a dead letter.
func (m *metrics) deadLettered(label string, code jobs.Code) {
	m.handled.dead.Add(1)
	m.dead.WithLabelValues(label, string(code)).Inc()
}

// keystoreLoaded records a keystore load reported by the Resolver.
func (m *metrics) keystoreLoaded(ev secrets.LoadEvent) {
	result := "ok"
	if ev.Err != nil {
		result = "error"
	}
	m.loads.WithLabelValues(ev.Profile, ev.Scheme, result).Inc()
}

// consumerStats are consumer "workers" as this worker sees it: refreshed
// every consumerRefresh by the worker and on scrape when older than a
// second. It is a prometheus.Collector.
type consumerStats struct {
	timeout time.Duration

	mu         sync.Mutex
	cons       []jetstream.Consumer // every calls stream's (one per tenant)
	fetched    time.Time
	known      bool
	pending    uint64
	ackPending int
	waiting    int
}

// consumerRefresh is how often a running worker reads its consumer's info.
const consumerRefresh = 10 * time.Second

var (
	pendingDesc = prometheus.NewDesc("mtlsrelay_consumer_pending",
		"Calls in MTLSRELAY_CALLS (and the tenants' calls streams) not yet delivered to any worker (consumer workers' num_pending, summed), as this worker last read it.", nil, nil)
	ackPendingDesc = prometheus.NewDesc("mtlsrelay_consumer_ack_pending",
		"Calls delivered to workers and not yet acknowledged (consumer workers' num_ack_pending), as this worker last read it.", nil, nil)
	waitingDesc = prometheus.NewDesc("mtlsrelay_consumer_waiting",
		"Pull requests of workers waiting for calls (consumer workers' num_waiting), as this worker last read it.", nil, nil)
)

func (c *consumerStats) set(cons ...jetstream.Consumer) {
	c.mu.Lock()
	c.cons = cons
	c.mu.Unlock()
}

// refresh reads the consumer's info when the last read is older than maxAge.
func (c *consumerStats) refresh(ctx context.Context, maxAge time.Duration) error {
	c.mu.Lock()
	cons, fresh := c.cons, time.Since(c.fetched) < maxAge
	c.mu.Unlock()
	if len(cons) == 0 || fresh {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var pending uint64
	var ackPending, waiting int
	for _, one := range cons {
		info, err := one.Info(ctx)
		if err != nil {
			return err
		}
		pending += info.NumPending
		ackPending += info.NumAckPending
		waiting += info.NumWaiting
	}
	c.mu.Lock()
	c.fetched, c.known = time.Now(), true
	c.pending, c.ackPending, c.waiting = pending, ackPending, waiting
	c.mu.Unlock()
	return nil
}

// Describe implements prometheus.Collector.
func (c *consumerStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- ackPendingDesc
	ch <- waitingDesc
}

// Collect implements prometheus.Collector: it reads the consumer's info
// unless it did within the last second, and reports the last values read.
func (c *consumerStats) Collect(ch chan<- prometheus.Metric) {
	_ = c.refresh(context.Background(), time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		return
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(c.pending))
	ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(c.ackPending))
	ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(c.waiting))
}

// refreshConsumer keeps the consumer stats fresh until ctx ends.
func (w *Worker) refreshConsumer(ctx context.Context) {
	t := time.NewTicker(consumerRefresh)
	defer t.Stop()
	for {
		if err := w.metrics.consumer.refresh(ctx, consumerRefresh/2); err != nil && ctx.Err() == nil {
			w.log.Debug().Err(err).Msg("reading consumer info failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
