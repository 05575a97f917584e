package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// ServiceName is the NATS micro service every worker registers as, so
// `nats micro ls`, `nats micro info mtlsrelay` and `mtlsrelay status` find
// the fleet through $SRV.PING|INFO|STATS.mtlsrelay.
const ServiceName = "mtlsrelay"

// StatusEndpoint is the name of each worker's micro endpoint that answers
// with its WorkerStatus, on subject <prefix>.status.<worker>.
const StatusEndpoint = "status"

// Metadata keys of the micro service.
const (
	metaWorker      = "worker"
	metaConcurrency = "concurrency"
	metaPrefix      = "prefix"
)

// Version returns mtlsrelay's version as the build recorded it (the main
// module's version without "v"), or "0.0.0-dev" for a development build.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := strings.TrimPrefix(bi.Main.Version, "v")
		if semver.MatchString(v) {
			return v
		}
	}
	return "0.0.0-dev"
}

var semver = regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// WorkerStatus is what a worker's status endpoint answers.
type WorkerStatus struct {
	Worker string `json:"worker"`
	// InstanceID is the micro service instance id (set by FleetStatus).
	InstanceID  string    `json:"instance_id,omitempty"`
	Version     string    `json:"version"`
	Ready       bool      `json:"ready"`
	Started     time.Time `json:"started"`
	Concurrency int       `json:"concurrency"`
	// Zones are the zones whose calls the worker runs (worker.zones).
	Zones []string `json:"zones"`
	// InFlight is the number of calls the worker is processing now.
	InFlight int64 `json:"in_flight"`
	// Handled counts what the worker finished since it started.
	Handled     Handled            `json:"handled"`
	Profiles    []ProfileStatus    `json:"profiles"`
	Connections []ConnectionStatus `json:"connections"`
	// Error is set by FleetStatus when the worker was discovered but its
	// status endpoint did not answer.
	Error string `json:"error,omitempty"`
}

// ConnectionStatus names a connection of a worker's catalog.
type ConnectionStatus struct {
	Name    string `json:"name"`
	Profile string `json:"profile"`
	Zone    string `json:"zone"`
	// Host is the host (and port) of the connection's base URL.
	Host string `json:"host"`
}

// Status returns the worker's status, as its status endpoint answers it.
func (w *Worker) Status() WorkerStatus {
	now := time.Now()
	cat := w.catalog.load()
	conns := make([]ConnectionStatus, 0, len(cat.Connections))
	for _, name := range sortedKeys(cat.Connections) {
		c := cat.Connections[name]
		cs := ConnectionStatus{Name: name, Profile: c.Profile, Zone: c.ZoneName()}
		if u, err := url.Parse(c.BaseURL); err == nil {
			cs.Host = u.Host
		}
		conns = append(conns, cs)
	}
	return WorkerStatus{
		Worker:      w.Name(),
		Version:     Version(),
		Ready:       w.Ready(),
		Started:     w.started.UTC(),
		Concurrency: w.cfg.Worker.Concurrency,
		Zones:       w.cfg.Worker.zones(),
		InFlight:    w.metrics.inflight.Load(),
		Handled:     w.metrics.handled.snapshot(),
		Profiles:    w.profileStatuses(now),
		Connections: conns,
	}
}

func (w *Worker) prefix() string {
	if w.cfg.NATS.Prefix != "" {
		return w.cfg.NATS.Prefix
	}
	return jobs.DefaultPrefix
}

// StatusSubject is the subject of the status endpoint of the worker named
// name under prefix: <prefix>.status.<name>, with characters a subject
// token cannot hold replaced by '_'.
func StatusSubject(prefix, name string) string {
	if prefix == "" {
		prefix = jobs.DefaultPrefix
	}
	tok := []byte(name)
	for i, c := range tok {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			tok[i] = '_'
		}
	}
	return prefix + "." + StatusEndpoint + "." + string(tok)
}

// startMicro registers the worker as an instance of the micro service.
func (w *Worker) startMicro() (micro.Service, error) {
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version(),
		Description: "mtlsrelay worker: relays REST and SOAP calls over mutual TLS",
		Metadata: map[string]string{
			metaWorker:      w.Name(),
			metaConcurrency: strconv.Itoa(w.cfg.Worker.Concurrency),
			metaPrefix:      w.prefix(),
		},
		StatsHandler: func(*micro.Endpoint) any { return w.metrics.handled.snapshot() },
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			w.log.Warn().Str("subject", err.Subject).Str("error", err.Description).Msg("micro service error")
		},
	})
	if err != nil {
		return nil, err
	}
	err = svc.AddEndpoint(StatusEndpoint, micro.HandlerFunc(func(req micro.Request) {
		if err := req.RespondJSON(w.Status()); err != nil {
			w.log.Debug().Err(err).Msg("answering a status request failed")
		}
	}), micro.WithEndpointSubject(StatusSubject(w.prefix(), w.Name())), micro.WithEndpointMetadata(map[string]string{metaWorker: w.Name()}))
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

// startObservability starts what a running worker does besides calls:
// consumer stats, profile loading and expiry checks, and the micro
// service. The returned func stops them.
func (w *Worker) startObservability(ctx context.Context, cons ...jetstream.Consumer) (stop func()) {
	w.metrics.consumer.set(cons...)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.refreshConsumer(ctx) })
	wg.Go(func() { w.watchExpiry(ctx) })
	svc, err := w.startMicro()
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot register the micro service; mtlsrelay status will not list this worker")
	}
	return func() {
		if svc != nil {
			_ = svc.Stop()
		}
		cancel()
		wg.Wait()
	}
}

// FleetOptions tune FleetStatus.
type FleetOptions struct {
	// Prefix is the fleet's subject prefix; default "mtlsrelay". Workers
	// of other prefixes on the same NATS are left out.
	Prefix string
	// Wait bounds how long workers are waited for; default 2s. Collection
	// ends earlier once no worker answered for a quarter of it.
	Wait time.Duration
}

// Fleet is what FleetStatus found.
type Fleet struct {
	// Workers are the running workers, sorted by name.
	Workers []WorkerStatus `json:"workers"`
	// Consumer is consumer "workers" of MTLSRELAY_CALLS; nil when it could
	// not be read (ConsumerError says why).
	Consumer      *ConsumerStatus `json:"consumer,omitempty"`
	ConsumerError string          `json:"consumer_error,omitempty"`
	// Zones are the consumers of MTLSRELAY_ZONES, one per zone with
	// workers now or before (workers-<zone>): the calls forwarded to
	// each zone and waiting there.
	Zones []ConsumerStatus `json:"zones,omitempty"`
	// Partitions are consumer "workers" of each partition stream
	// (nats.partitions), in order.
	Partitions []ConsumerStatus `json:"partitions,omitempty"`
}

// ConsumerStatus is the state of the shared consumer: the calls waiting.
type ConsumerStatus struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Zone is the zone of a consumer of MTLSRELAY_ZONES.
	Zone string `json:"zone,omitempty"`
	// Pending calls are not delivered to any worker yet.
	Pending uint64 `json:"pending"`
	// AckPending calls are held by workers (running, or waiting to retry).
	AckPending  int `json:"ack_pending"`
	Redelivered int `json:"redelivered"`
	// Waiting pull requests: workers with free slots.
	Waiting int `json:"waiting"`
}

// FleetStatus discovers the running workers through the micro service API
// ($SRV.INFO.mtlsrelay), asks each for its status on its status endpoint,
// and reads consumer "workers" for the calls pending.
func FleetStatus(ctx context.Context, nc *nats.Conn, opts FleetOptions) (*Fleet, error) {
	if opts.Prefix == "" {
		opts.Prefix = jobs.DefaultPrefix
	}
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Second
	}
	infoSubject, err := micro.ControlSubject(micro.InfoVerb, ServiceName, "")
	if err != nil {
		return nil, err
	}
	msgs, err := requestMany(ctx, nc, infoSubject, opts.Wait)
	if err != nil {
		return nil, fmt.Errorf("discover workers on %s: %w", infoSubject, err)
	}
	var infos []micro.Info
	for _, m := range msgs {
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil || info.Metadata[metaPrefix] != opts.Prefix {
			continue
		}
		infos = append(infos, info)
	}
	fleet := &Fleet{Workers: make([]WorkerStatus, len(infos))}
	var wg sync.WaitGroup
	for i, info := range infos {
		wg.Go(func() { fleet.Workers[i] = workerStatus(ctx, nc, info, opts.Wait) })
	}
	js, err := jetstream.New(nc)
	if err == nil {
		fleet.Consumer, err = consumerStatus(ctx, js, jobs.StreamCalls, jobs.ConsumerWorkers)
	}
	if err != nil {
		fleet.ConsumerError = err.Error()
	} else {
		fleet.Zones = zoneStatuses(ctx, js)
		fleet.Partitions = partitionStatuses(ctx, js)
	}
	wg.Wait()
	sort.Slice(fleet.Workers, func(i, j int) bool {
		a, b := fleet.Workers[i], fleet.Workers[j]
		return a.Worker < b.Worker || a.Worker == b.Worker && a.InstanceID < b.InstanceID
	})
	return fleet, nil
}

// workerStatus asks one discovered instance for its status.
func workerStatus(ctx context.Context, nc *nats.Conn, info micro.Info, wait time.Duration) WorkerStatus {
	ws := WorkerStatus{Worker: info.Metadata[metaWorker], InstanceID: info.ID, Version: info.Version}
	ws.Concurrency, _ = strconv.Atoi(info.Metadata[metaConcurrency])
	subject := ""
	for _, ep := range info.Endpoints {
		if ep.Name == StatusEndpoint {
			subject = ep.Subject
		}
	}
	if subject == "" {
		ws.Error = "the worker has no status endpoint"
		return ws
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, subject, nil)
	if err != nil {
		ws.Error = fmt.Sprintf("status request on %s: %v", subject, err)
		return ws
	}
	var got WorkerStatus
	if err := json.Unmarshal(m.Data, &got); err != nil {
		ws.Error = fmt.Sprintf("status answer on %s is not JSON: %v", subject, err)
		return ws
	}
	got.InstanceID = info.ID
	return got
}

func consumerStatus(ctx context.Context, js jetstream.JetStream, stream, consumer string) (*ConsumerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	return statusOf(stream, info), nil
}

func statusOf(stream string, info *jetstream.ConsumerInfo) *ConsumerStatus {
	return &ConsumerStatus{
		Stream: stream, Consumer: info.Name,
		Pending: info.NumPending, AckPending: info.NumAckPending,
		Redelivered: info.NumRedelivered, Waiting: info.NumWaiting,
	}
}

// partitionStatuses reads consumer "workers" of each partition stream,
// MTLSRELAY_CALLS_PART0 on, until one is missing.
func partitionStatuses(ctx context.Context, js jetstream.JetStream) []ConsumerStatus {
	var out []ConsumerStatus
	for i := 0; i < 64; i++ {
		cs, err := consumerStatus(ctx, js, jobs.PartitionStream(i), jobs.ConsumerWorkers)
		if err != nil {
			break
		}
		out = append(out, *cs)
	}
	return out
}

// zoneStatuses lists the consumers of MTLSRELAY_ZONES, by zone; none when
// the stream cannot be read (a relay older than zones).
func zoneStatuses(ctx context.Context, js jetstream.JetStream) []ConsumerStatus {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, jobs.StreamZones)
	if err != nil {
		return nil
	}
	var out []ConsumerStatus
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		zone, _, ok := jobs.ParseZoneConsumer(info.Name)
		if !ok {
			continue
		}
		cs := statusOf(jobs.StreamZones, info)
		cs.Zone = zone
		out = append(out, *cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Zone < out[j].Zone })
	return out
}

// requestMany publishes a request on subject and gathers the answers for
// up to wait, stopping early once none came for a quarter of wait. No
// responders is no answers, not an error.
func requestMany(ctx context.Context, nc *nats.Conn, subject string, wait time.Duration) ([]*nats.Msg, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	var out []*nats.Msg
	for {
		left := time.Until(deadline)
		if len(out) > 0 {
			left = min(left, wait/4)
		}
		if left <= 0 {
			return out, nil
		}
		mctx, cancel := context.WithTimeout(ctx, left)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return out, nil
		case errors.Is(err, nats.ErrNoResponders):
			return out, nil // no worker runs
		case err != nil:
			return out, err
		}
		out = append(out, m)
	}
}
