// Package streams defines and creates the JetStream streams and the
// consumer of the wire contract: MTLSRELAY_CALLS and its consumer
// "workers", MTLSRELAY_RESULTS and MTLSRELAY_DEAD. Workers create or update
// them on start, so any worker may start first.
package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Stream defaults.
const (
	// DefaultResultsMaxAge is how long MTLSRELAY_RESULTS keeps a result.
	DefaultResultsMaxAge = 24 * time.Hour
	// DefaultDuplicateWindow is the de-duplication window on Nats-Msg-Id.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultAckWait is how long a worker holds a call before JetStream
	// redelivers it; a running call is kept alive with InProgress.
	DefaultAckWait = 30 * time.Second
)

// Options tunes the streams and the consumer the worker creates.
// Zero values mean the defaults above, one replica and file storage.
type Options struct {
	// Subjects names the subjects; zero means prefix "mtlsrelay".
	Subjects jobs.Subjects
	// Replicas of each stream (3 on a cluster for failover).
	Replicas int
	// ResultsMaxAge bounds how long results are kept.
	ResultsMaxAge time.Duration
	// DeadMaxAge bounds how long dead letters are kept; 0 keeps them 7 days.
	DeadMaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id de-duplication window (at least 2 min).
	DuplicateWindow time.Duration
	// MemoryStorage keeps streams in memory (tests, benchmarks); default file.
	MemoryStorage bool
	// AckWait of consumer "workers".
	AckWait time.Duration
	// MaxAckPending of consumer "workers": calls held by all workers at once.
	MaxAckPending int
	// Tenants are the tenants whose calls arrive on
	// <prefix>.calls.<tenant>.<connection>. Each has a calls stream of its
	// own (jobs.TenantStream), so one tenant's Nats-Msg-Ids cannot make
	// another's calls vanish as duplicates, and MTLSRELAY_CALLS keeps the
	// v1 subjects <prefix>.calls.<connection> only. None: MTLSRELAY_CALLS
	// takes <prefix>.calls.> as in v1.
	Tenants []string
	// MaxDeliver bounds how many times JetStream delivers one call;
	// default DefaultMaxDeliver.
	MaxDeliver int
	// Zones are the zones of the worker: Ensure creates the consumer of
	// each on MTLSRELAY_ZONES (jobs.ZoneConsumer). Default: none.
	Zones []string
	// Partitions spreads v1 durable calls over this many streams
	// (jobs.PartitionStream), each with consumer "workers", fed by the
	// NATS server's subject mapping (Subjects.PartitionMapping). 0 or 1:
	// none. Not with Tenants: each tenant has a stream of its own already.
	Partitions int
}

// partitions is how many partition streams there are: none below 2.
func (o Options) partitions() int {
	if o.Partitions < 2 {
		return 0
	}
	return o.Partitions
}

// DefaultMaxDeliver is the default bound on a call's deliveries: far above
// any max_attempts (at most 100), with room for hand-backs while a
// connection is saturated (their delays grow with the deliveries).
const DefaultMaxDeliver = 1000

func (o Options) maxDeliver() int {
	if o.MaxDeliver > 0 {
		return o.MaxDeliver
	}
	return DefaultMaxDeliver
}

func (o Options) storage() jetstream.StorageType {
	if o.MemoryStorage {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func orDuration(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// Configs returns the configurations of MTLSRELAY_CALLS,
// MTLSRELAY_RESULTS and MTLSRELAY_DEAD.
func (o Options) Configs() []jetstream.StreamConfig {
	dup := max(o.DuplicateWindow, DefaultDuplicateWindow)
	replicas := max(o.Replicas, 1)
	s := o.Subjects
	calls := func(name, desc, subject string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     o.storage(),
			Replicas:    replicas,
			Duplicates:  dup,
			MaxMsgSize:  jobs.MaxCallBytes,
			Discard:     jetstream.DiscardOld,
		}
	}
	v1 := calls(jobs.StreamCalls, "mtlsrelay durable calls, taken by consumer workers", s.CallsAll())
	if len(o.Tenants) > 0 {
		// calls.* and calls.<tenant>.* do not overlap: one token, or two.
		v1 = calls(jobs.StreamCalls, "mtlsrelay v1 calls (no tenant), answered unknown_connection while tenants are configured", s.UntenantedCalls())
	}
	out := []jetstream.StreamConfig{v1}
	for i := range o.partitions() {
		out = append(out, calls(jobs.PartitionStream(i), fmt.Sprintf("mtlsrelay durable calls, partition %d of %d", i, o.Partitions), s.PartitionCallsAll(i)))
	}
	for _, t := range o.Tenants {
		out = append(out, calls(jobs.TenantStream(t), "mtlsrelay durable calls of tenant "+t, s.TenantCallsAll(t)))
	}
	// Forwarded calls are deduplicated by the stream and sequence they
	// were taken from, not by call id: <prefix>.zone.… never overlaps
	// <prefix>.calls.….
	out = append(out, calls(jobs.StreamZones, "mtlsrelay durable calls forwarded to the zone of their connection", s.ZonesCallsAll()))
	return append(out, []jetstream.StreamConfig{
		{
			Name:        jobs.StreamResults,
			Description: "mtlsrelay results, one per call id",
			Subjects:    []string{s.ResultsAll()},
			AllowDirect: true,
			Retention:   jetstream.LimitsPolicy,
			Storage:     o.storage(),
			Replicas:    replicas,
			Duplicates:  dup,
			MaxAge:      orDuration(o.ResultsMaxAge, DefaultResultsMaxAge),
		},
		{
			Name:        jobs.StreamDead,
			Description: "mtlsrelay dead letters: calls whose last attempt failed or that could not be processed",
			Subjects:    []string{s.DeadAll()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     o.storage(),
			Replicas:    replicas,
			Duplicates:  dup,
			MaxAge:      orDuration(o.DeadMaxAge, 7*24*time.Hour),
		},
	}...)
}

// ConsumerConfig returns the configuration of the durable pull consumer
// "workers". Attempts are counted by the worker (max_attempts is per call);
// JetStream's MaxDeliver (MaxDeliver, default DefaultMaxDeliver) bounds the
// deliveries, hand-backs included, so no call is delivered without end: a
// call at its last delivery is ended by the worker, and one that reaches it
// unended by whoever handles the max-deliveries advisory.
func (o Options) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       jobs.ConsumerWorkers,
		Description:   "mtlsrelay workers share this consumer",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       orDuration(o.AckWait, DefaultAckWait),
		MaxDeliver:    o.maxDeliver(),
		MaxAckPending: max(o.MaxAckPending, 10000),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      max(o.Replicas, 1),
	}
}

// ZoneConsumerConfig returns the configuration of the consumer of zone's
// workers on MTLSRELAY_ZONES for the calls of tenant ("" for v1 calls):
// ConsumerConfig's, filtered to them. Each tenant has its own, so the
// workers serve the tenants' forwarded calls in turn, as their own
// streams' (the filters do not overlap: calls.* and calls.<tenant>.*).
func (o Options) ZoneConsumerConfig(zone, tenant string) jetstream.ConsumerConfig {
	c := o.ConsumerConfig()
	c.Durable = jobs.ZoneConsumer(zone, tenant)
	c.Description = "mtlsrelay workers of zone " + zone + " share this consumer"
	if tenant != "" {
		c.Description += " for the calls of tenant " + tenant
	}
	c.FilterSubject = o.Subjects.ZoneCalls(zone, tenant)
	return c
}

// Queue is one calls stream and the workers' consumer on it: the v1
// stream (Tenant "", Zone ""), its partitions, with tenants one per
// tenant, and one per zone of the worker on MTLSRELAY_ZONES.
type Queue struct {
	Tenant   string
	Zone     string
	Stream   string
	Consumer jetstream.Consumer
}

// Ensure creates or updates the streams and consumer "workers" on each
// calls stream, and the consumers of o.Zones on MTLSRELAY_ZONES, so any
// worker can start first. It returns the queues, the v1 one first, the
// zones' last. MTLSRELAY_CALLS is updated before the tenants' streams are
// created: its v1 subjects <prefix>.calls.> would overlap theirs.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) ([]Queue, error) {
	for _, cfg := range o.Configs() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
				return nil, fmt.Errorf("NATS server has no JetStream; start nats-server with -js: %w", err)
			}
			return nil, fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
		}
	}
	queues := []Queue{{Stream: jobs.StreamCalls}}
	for i := range o.partitions() {
		queues = append(queues, Queue{Stream: jobs.PartitionStream(i)})
	}
	for _, t := range o.Tenants {
		queues = append(queues, Queue{Tenant: t, Stream: jobs.TenantStream(t)})
	}
	for _, z := range o.Zones {
		queues = append(queues, Queue{Zone: z, Stream: jobs.StreamZones})
		for _, t := range o.Tenants {
			queues = append(queues, Queue{Zone: z, Tenant: t, Stream: jobs.StreamZones})
		}
	}
	for i := range queues {
		cfg := o.ConsumerConfig()
		if queues[i].Zone != "" {
			cfg = o.ZoneConsumerConfig(queues[i].Zone, queues[i].Tenant)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, queues[i].Stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("create or update consumer %s on %s: %w", cfg.Durable, queues[i].Stream, err)
		}
		queues[i].Consumer = cons
	}
	return queues, nil
}
