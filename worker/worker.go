package worker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/streams"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Worker consumes calls from NATS, makes them over mTLS and publishes their
// results. Many workers share consumer "workers"; each is stateless.
type Worker struct {
	cfg *Config
	nc  *nats.Conn
	// directNC is the connection direct calls come in on (directConn),
	// set while Run serves them.
	directNC atomic.Pointer[nats.Conn]
	js       jetstream.JetStream
	subj     jobs.Subjects
	// replyPrefixes are the inbox prefixes reply subjects may be under
	// besides the results subjects (worker.reply_prefixes).
	replyPrefixes []string
	// tenants are the configured tenants (worker.Config.Tenants), and
	// tenantNames their names; empty without tenants.
	tenants     map[string]TenantConfig
	tenantNames []string
	// zones are the zones whose calls this worker runs (worker.zones).
	zones map[string]bool
	// zoneConsumers are the zone consumers this worker made sure exist
	// when it forwarded (zone and tenant, NUL-separated).
	zoneConsumers sync.Map
	// forwardWaiting bounds the direct calls this worker relays to other
	// zones, apart from its own direct calls.
	forwardWaiting *semaphore.Weighted
	log            zerolog.Logger
	exec           executor
	resolver       *secrets.Resolver
	catalog        catalogHolder
	retry          retryPolicy
	slots          *semaphore.Weighted
	// direct admits direct calls apart from durable ones (slots);
	// directWaiting bounds those running or waiting for it.
	direct        *semaphore.Weighted
	directWaiting *semaphore.Weighted
	limits        limitSet
	state         *stateStore
	results       resultWindow
	held          *heldCalls
	// pub publishes to JetStream and waits for the ack: w.js, or a fake.
	pub publisher
	// patience is how long a result or a dead letter is published again
	// while no stream answers (resultPatience).
	patience time.Duration

	// resultsWaiting counts results published again while no stream
	// stores them; the pull loop takes no calls while it is above 0.
	resultsWaiting atomic.Int64

	// resultsS reads MTLSRELAY_RESULTS, looked up once (resultsStream).
	resultsMu sync.Mutex
	resultsS  lastMsgReader

	// callCtx is the parent of every call's context: canceled only when the
	// shutdown grace period ends, so SIGTERM lets calls in flight finish.
	callCtx    context.Context
	cancelCall context.CancelFunc
	// stopping is set once shutdown starts: no new calls are taken.
	stopping atomic.Bool
	ready    atomic.Bool
	inflight sync.WaitGroup
	streams  streams.Options
	ackWait  time.Duration
	// maxDeliver is the consumer's MaxDeliver: a call delivered that many
	// times is at its last delivery.
	maxDeliver int
	// bodies keeps bodies too large for a message (mtlsrelay_bodies).
	bodies *objectBodies
	// memory admits calls by bytes (worker.max_memory); nil admits all.
	memory *memoryBudget

	observability
}

// Option configures a Worker.
type Option func(*Worker)

// WithLogger sets the logger (default: zerolog's global logger).
func WithLogger(l zerolog.Logger) Option { return func(w *Worker) { w.log = l } }

// WithResolver sets the profile resolver (default: file, env and inline sources).
func WithResolver(r *secrets.Resolver) Option { return func(w *Worker) { w.resolver = r } }

// New returns a worker for cfg on the NATS connection nc. It does not start
// consuming: call Run.
func New(cfg *Config, nc *nats.Conn, opts ...Option) (*Worker, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:  cfg,
		nc:   nc,
		js:   js,
		pub:  js,
		subj: jobs.Subjects{Prefix: cfg.NATS.Prefix},

		replyPrefixes: cfg.Worker.ReplyPrefixes,
		tenants:       cfg.Tenants,
		tenantNames:   cfg.TenantNames(),
		zones:         map[string]bool{},
		log:           zerolog.Nop(),
		retry:         retryPolicy{base: cfg.Worker.RetryBase.D(), max: cfg.Worker.RetryMax.D()},
		slots:         semaphore.NewWeighted(int64(cfg.Worker.Concurrency)),
		// Direct calls: their own slots, and as many again may wait.
		direct:         semaphore.NewWeighted(int64(cfg.Worker.directConcurrency())),
		directWaiting:  semaphore.NewWeighted(int64(2 * cfg.Worker.directConcurrency())),
		forwardWaiting: semaphore.NewWeighted(int64(2 * cfg.Worker.directConcurrency())),
	}
	w.streams = streams.Options{
		Subjects:      w.subj,
		Replicas:      cfg.NATS.Replicas,
		ResultsMaxAge: cfg.NATS.ResultsMaxAge.D(),
		AckWait:       cfg.Worker.AckWait.D(),
		Tenants:       cfg.TenantNames(),
		MaxDeliver:    cfg.Worker.MaxDeliver,
		Zones:         cfg.Worker.zones(),
		Partitions:    cfg.NATS.Partitions,
	}
	for _, z := range cfg.Worker.zones() {
		w.zones[z] = true
	}
	for _, o := range opts {
		o(w)
	}
	w.ackWait = w.streams.ConsumerConfig().AckWait
	w.maxDeliver = w.streams.ConsumerConfig().MaxDeliver
	w.log = w.log.With().Str("worker", cfg.Worker.Name).Logger()
	if w.resolver == nil {
		w.resolver = secrets.NewResolver(secrets.DefaultSources(cfg.Dir))
	}
	if w.results, err = pubwindow.New(nc, max(cfg.Worker.Concurrency, 64), resultTimeout); err != nil {
		return nil, err
	}
	w.bodies = &objectBodies{inlineMax: inlineMaxFor(cfg.Worker.InlineBodyMax, nc.MaxPayload())}
	maxMemory := cfg.Worker.MaxMemory
	if maxMemory == 0 {
		maxMemory = defaultMaxMemory()
	}
	w.memory = newMemoryBudget(maxMemory, w.bodies.inlineMax)
	execOpts := ExecutorOptions(cfg, w.resolver)
	execOpts.Bodies = w.bodies
	w.exec = outbound.NewExecutor(execOpts)
	w.catalog.store(&catalog.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections})
	w.initObservability()
	w.callCtx, w.cancelCall = context.WithCancel(context.Background())
	w.held = newHeldCalls()
	w.patience = resultPatience
	return w, nil
}

// SetCatalog replaces the profiles and connections in use; calls already
// running keep the view they started with.
func (w *Worker) SetCatalog(c *catalog.Catalog) { w.catalog.store(c) }

// Name returns the worker's name.
func (w *Worker) Name() string { return w.cfg.Worker.Name }

// Ready reports whether the worker is connected and consuming.
func (w *Worker) Ready() bool {
	return w.ready.Load() && !w.stopping.Load() && w.nc.IsConnected() && w.directConnected()
}

// directConnected reports whether the connection of direct calls, when
// it is one of its own, is connected.
func (w *Worker) directConnected() bool {
	dnc := w.directNC.Load()
	return dnc == nil || dnc.IsConnected()
}

// Run creates the streams and consumer if needed, serves direct calls and
// consumes durable calls until ctx is canceled; then it shuts down
// gracefully: no new calls, calls in flight get ShutdownGrace to finish,
// the rest are handed back to JetStream at once.
func (w *Worker) Run(ctx context.Context) error {
	queues, err := w.ensureStreams(ctx)
	if err != nil {
		return err
	}
	// The gauges of the backlog are of the consumers this worker takes
	// calls from: a worker of another zone does not report the intake's.
	var consumers []jetstream.Consumer
	for _, q := range queues {
		if q.Zone != "" || w.serves(jobs.DefaultZone) {
			consumers = append(consumers, q.Consumer)
		}
	}
	directNC, closeDirect := w.directConn()
	subs, err := w.subscribeDirect(directNC)
	if err == nil {
		// Ready means direct calls reach this worker: the server has the
		// subscriptions (on a connection of its own, nothing else the
		// worker does before it is ready orders after it).
		err = directNC.FlushTimeout(10 * time.Second)
	}
	if err != nil {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		closeDirect()
		return err
	}
	undelivered, err := w.watchUndelivered()
	if err != nil {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		closeDirect()
		return err
	}
	w.ready.Store(true)
	stopObservability := w.startObservability(ctx, consumers...)
	// Until the calls in flight end, after the shutdown grace at the latest.
	go w.held.keepAlive(w.callCtx, w.ackWait/3)
	w.log.Info().Int("concurrency", w.cfg.Worker.Concurrency).Str("stream", jobs.StreamCalls).
		Str("consumer", jobs.ConsumerWorkers).Msg("worker ready")

	w.consume(ctx, queues)
	stopObservability()

	w.stopping.Store(true)
	for _, sub := range subs {
		_ = sub.Drain()
	}
	_ = undelivered.Drain()
	w.shutdown()
	closeDirect()
	return nil
}

// subscribeDirect subscribes to the direct calls this worker takes: those
// flows send (<prefix>.rpc.>), when it serves zone default, and those
// forwarded to each of its zones.
func (w *Worker) subscribeDirect(nc *nats.Conn) ([]*nats.Subscription, error) {
	subjects := make([]string, 0, len(w.zones)+1)
	if w.serves(jobs.DefaultZone) {
		subjects = append(subjects, w.subj.RPCAll())
	}
	for _, z := range w.cfg.Worker.zones() {
		subjects = append(subjects, w.subj.ZoneRPCAll(z))
	}
	var subs []*nats.Subscription
	for _, subject := range subjects {
		sub, err := nc.QueueSubscribe(subject, jobs.QueueGroup, func(m *nats.Msg) { w.handleDirect(nc, m) })
		if err != nil {
			return subs, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// directConn returns the NATS connection direct calls come in and go back
// on: a second connection made with the worker's connection's options, so
// that a direct call and its reply do not queue behind the durable
// consumer's pulls, acks and result publishes in one socket and one read
// loop. When it cannot be made, the worker's connection serves. close
// flushes the replies sent and closes it.
func (w *Worker) directConn() (nc *nats.Conn, close func()) {
	opts := w.nc.Opts
	opts.Name = strings.TrimSpace(opts.Name + " (direct calls)")
	// Fail now, not in the background: then the worker's connection serves.
	opts.RetryOnFailedConnect = false
	nc, err := opts.Connect()
	if err != nil {
		w.log.Warn().Err(err).Msg("no NATS connection of their own for direct calls; they share the worker's")
		return w.nc, func() {}
	}
	w.directNC.Store(nc)
	return nc, func() {
		_ = nc.FlushTimeout(time.Second)
		w.directNC.Store(nil)
		nc.Close()
	}
}

// ensureStreams creates the streams, the consumer and the call-state bucket,
// retrying until NATS answers, so a worker may start before its cluster is
// up.
func (w *Worker) ensureStreams(ctx context.Context) ([]streams.Queue, error) {
	delay := 250 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		queues, err := streams.Ensure(cctx, w.js, w.streams)
		if err == nil {
			w.state, err = openState(cctx, w.js, w.streams.Replicas, max(w.streams.ResultsMaxAge, streams.DefaultResultsMaxAge), w.Name())
		}
		if err == nil {
			err = w.bodies.open(cctx, w.js, w.streams.Replicas, orDefault(w.streams.ResultsMaxAge, streams.DefaultResultsMaxAge), w.cfg.Tenants)
		}
		cancel()
		if err == nil {
			return queues, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		w.log.Warn().Err(err).Dur("retry_in", delay).Msg("cannot set up streams yet")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (w *Worker) shutdown() {
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	grace := w.cfg.Worker.ShutdownGrace.D()
	select {
	case <-done:
	case <-time.After(grace):
		w.log.Warn().Dur("grace", grace).Msg("calls still running after the grace period; handing them back")
		w.cancelCall()
		<-done
	}
	w.cancelCall()
	w.exec.Close()
	w.log.Info().Msg("worker stopped")
}

// AdminHandler serves /healthz (the process is alive), /readyz (NATS
// connected, streams and consumer ready, not shutting down) and /metrics.
func (w *Worker) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "not ready: "+w.notReadyReason(), http.StatusServiceUnavailable)
			return
		}
		rw.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", w.MetricsHandler())
	return mux
}

func (w *Worker) notReadyReason() string {
	switch {
	case w.stopping.Load():
		return "shutting down"
	case !w.nc.IsConnected():
		return "NATS disconnected (" + w.nc.Status().String() + ")"
	case !w.directConnected():
		if dnc := w.directNC.Load(); dnc != nil {
			return "NATS connection of direct calls disconnected (" + dnc.Status().String() + ")"
		}
		return "NATS connection of direct calls disconnected"
	default:
		return "streams and consumer not set up yet"
	}
}
