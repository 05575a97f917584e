package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Zones: a connection's zone names the workers that run its calls. The
// cut-over rule: a call runs in the zone its connection has in the
// catalog of the worker that takes it, when it takes it. Workers of zone
// default take the calls flows publish (MTLSRELAY_CALLS and the tenants'
// streams, <prefix>.rpc.>); any worker that takes a call of a zone it does
// not serve forwards it to <prefix>.zone.<zone>.…, where that zone's
// workers take it (consumer workers-<zone> on MTLSRELAY_ZONES, queue group
// workers on <prefix>.zone.<zone>.rpc.>). A connection moved to another
// zone so loses no queued call: its calls waiting in the old zone are
// forwarded on by the old zone's workers when they take them. A call
// already running finishes where it started.

// maxForwards bounds how often one call is forwarded: workers whose
// catalogs disagree for a moment (a registry change on its way) could
// otherwise pass it back and forth. Past it the call waits a little and
// is taken again.
const maxForwards = 8

// forwardWait is how long a call forwarded maxForwards times waits before
// it is taken again.
const forwardWait = time.Second

// foreignZone returns the zone of tenant's connection when this worker
// does not serve it. A connection the catalog does not have, or the
// tenant may not use, is run here: it ends unknown_connection, and where
// it would have gone says nothing.
func (w *Worker) foreignZone(tenant, connection string) (string, bool) {
	if len(w.tenants) > 0 || tenant != "" {
		if t, ok := w.tenants[tenant]; !ok || !t.Allows(connection) {
			return "", false
		}
	}
	cat := w.catalog.load()
	if cat == nil {
		return "", false
	}
	c, ok := cat.Connections[connection]
	if !ok {
		return "", false
	}
	z := c.ZoneName()
	return z, !w.serves(z)
}

// serves reports whether this worker runs the calls of zone: those of
// worker.zones, or of zone default when it lists none.
func (w *Worker) serves(zone string) bool {
	if len(w.zones) == 0 {
		return zone == jobs.DefaultZone
	}
	return w.zones[zone]
}

// fromZones reports whether msg was taken from MTLSRELAY_ZONES: only
// there do the forwarding headers come from a worker (a flow publishing to
// a calls subject may set any header).
func fromZones(meta *jetstream.MsgMetadata) bool { return meta.Stream == jobs.StreamZones }

// forwardCount is how often a message whose forwarding headers are
// trusted (fromZones, or a direct call on a zone subject) was forwarded.
func forwardCount(h nats.Header) int {
	n, _ := strconv.Atoi(h.Get(jobs.HeaderForwarded))
	return n
}

// origin names the message a call was first taken from, for the claim
// that lets exactly one copy of a forwarded call run: the stream, its
// sequence and the stored time (a stream recreated with the same name
// starts its sequences again).
func origin(meta *jetstream.MsgMetadata) string {
	return meta.Stream + "." + strconv.FormatUint(meta.Sequence.Stream, 10) + "." + strconv.FormatInt(meta.Timestamp.UnixNano(), 10)
}

// forwardHeaders are the headers of a call a forward keeps: trace context.
// Nats-* headers (an expected stream or sequence, valid on the flow's
// publish) would make MTLSRELAY_ZONES refuse the copy.
var forwardHeaders = []string{jobs.HeaderTraceparent, "tracestate"}

// forward stores the durable call msg on its zone's subject and then
// acknowledges it here. The copy's Nats-Msg-Id names the message it was
// taken from, so a forward repeated after a lost ack within the duplicate
// window is stored once; past it a second copy may be stored, and the
// claim on the call's origin (claimForwarded) lets only one run. A call
// that can never be stored there (too large with the forwarding headers)
// ends invalid_call.
func (w *Worker) forward(ctx context.Context, msg jetstream.Msg, call *jobs.Call, zone string, meta *jetstream.MsgMetadata) {
	log := zerolog.Ctx(ctx)
	n, orig, enqueued := 0, origin(meta), meta.Timestamp
	if fromZones(meta) {
		n = forwardCount(msg.Headers())
		if o := msg.Headers().Get(jobs.HeaderOrigin); o != "" {
			orig = o
		}
		enqueued = enqueuedAt(msg.Headers(), meta)
	}
	if n >= maxForwards {
		log.Warn().Str("zone", zone).Int("forwards", n).Msg("call forwarded too often between zones; workers disagree on its connection's zone for now; taking it again later")
		w.handBack(msg, forwardWait)
		return
	}
	w.ensureZoneConsumer(ctx, zone, call.Tenant)
	out := nats.NewMsg(w.subj.Zoned(zone, msg.Subject()))
	out.Data = msg.Data()
	for _, k := range forwardHeaders {
		if v := msg.Headers().Values(k); len(v) > 0 {
			out.Header[k] = v
		}
	}
	out.Header.Set(jobs.HeaderMsgID, origin(meta))
	out.Header.Set(jobs.HeaderOrigin, orig)
	out.Header.Set(jobs.HeaderForwarded, strconv.Itoa(n+1))
	out.Header.Set(jobs.HeaderEnqueued, enqueued.UTC().Format(time.RFC3339Nano))
	ack, err := w.publishJetStream(ctx, out, w.ackWait/2)
	if neverPublishable(err) {
		w.reject(ctx, msg, call, jobs.Errorf(jobs.CodeInvalidCall,
			"the call is too large to forward to zone %s, where its connection %s runs (%d bytes, near the NATS server's max_payload); send a smaller call, or its body by body_ref", zone, call.Connection, len(out.Data)), meta)
		return
	}
	if err != nil {
		// It stays where it is and comes back: forwarding is tried again.
		log.Warn().Err(err).Str("zone", zone).Msg("could not forward the call to its connection's zone; handed back")
		w.handBack(msg, handBackBackoff(meta.NumDelivered))
		return
	}
	// The copy just stored owns the call; a claim this delivery held
	// moves to it.
	if err := w.state.setOwner(ctx, orig, ack.Sequence, fromZones(meta), meta.Sequence.Stream); err != nil {
		log.Warn().Err(err).Msg("could not record the forward; the zone's workers claim the call themselves")
	}
	w.metrics.forwarded.WithLabelValues(zone).Inc()
	log.Debug().Str("zone", zone).Uint64("zone_seq", ack.Sequence).Msg("call forwarded to its connection's zone")
	w.acknowledge(ctx, msg)
}

// claimed decides whether this delivery of a durable call may go on, when
// the call may have been forwarded: a copy taken from MTLSRELAY_ZONES runs
// only if it owns the call's origin (claiming it when nobody does); a
// redelivery of a call a worker forwarded already is acknowledged here,
// its forwarded copy running in the zone. It hands the call back when the
// state cannot be read, and reports false when the delivery ends here.
func (w *Worker) claimed(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) bool {
	log := zerolog.Ctx(ctx)
	switch {
	case fromZones(meta):
		orig := msg.Headers().Get(jobs.HeaderOrigin)
		if orig == "" {
			orig = origin(meta)
		}
		owner, err := w.state.claim(ctx, orig, meta.Sequence.Stream)
		if err != nil {
			log.Warn().Err(err).Msg("could not claim a forwarded call; handing it back")
			w.handBack(msg, jitter(time.Second))
			return false
		}
		if owner != meta.Sequence.Stream {
			log.Info().Uint64("owner_seq", owner).Msg("a second copy of a forwarded call; acknowledged without running it")
			w.acknowledge(ctx, msg)
			return false
		}
	case meta.NumDelivered > 1:
		forwarded, err := w.state.forwarded(ctx, origin(meta))
		if err != nil {
			log.Warn().Err(err).Msg("could not read whether the call was forwarded; handing it back")
			w.handBack(msg, jitter(time.Second))
			return false
		}
		if forwarded {
			log.Info().Msg("the call was forwarded to its zone already; acknowledged here")
			w.acknowledge(ctx, msg)
			return false
		}
	}
	return true
}

// ensureZoneConsumer creates, once per process, the consumer of the calls
// of tenant forwarded to zone, so that they are visible (status, KEDA)
// and taken as soon as a worker of the zone starts, even from zero.
func (w *Worker) ensureZoneConsumer(ctx context.Context, zone, tenant string) {
	key := zone + "\x00" + tenant
	if _, done := w.zoneConsumers.Load(key); done {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Create only: the zone's own workers set its configuration.
	if _, err := w.js.CreateConsumer(cctx, jobs.StreamZones, w.streams.ZoneConsumerConfig(zone, tenant)); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		zerolog.Ctx(ctx).Debug().Err(err).Str("zone", zone).Msg("could not create the zone's consumer; its workers create it when they start")
		return
	}
	w.zoneConsumers.Store(key, true)
}

// forwardDirect passes the direct call msg on to its zone's workers and
// relays their answer to the caller. When no worker of that zone listens,
// the caller gets zone_unavailable at once: a forward with the caller's
// own reply subject would leave it waiting for its timeout, as the NATS
// server tells only the publisher that no one responded. The relay's reply
// subject is under the first of worker.reply_prefixes, which the zone's
// workers accept. Relays have their own bound, so a zone that does not
// answer cannot take this worker's own direct calls' places; shutdown
// does not wait for them (a direct call has no persistence anyway).
func (w *Worker) forwardDirect(nc *nats.Conn, msg *nats.Msg, zone string) {
	n := 0
	if z, _ := w.subj.Unzone(msg.Subject); z != "" {
		n = forwardCount(msg.Header)
	}
	if n >= maxForwards {
		w.log.Warn().Str("zone", zone).Str("subject", msg.Subject).Msg("direct call forwarded too often between zones; not answered")
		return
	}
	if w.stopping.Load() || nc == nil || !w.forwardWaiting.TryAcquire(1) {
		w.log.Debug().Str("subject", msg.Subject).Msg("too many direct calls being relayed to other zones; this one is not forwarded")
		return
	}
	out := &nats.Msg{Subject: w.subj.Zoned(zone, msg.Subject), Data: msg.Data, Header: nats.Header{}}
	for _, k := range forwardHeaders {
		if v := msg.Header.Values(k); len(v) > 0 {
			out.Header[k] = v
		}
	}
	out.Header.Set(jobs.HeaderForwarded, strconv.Itoa(n+1))
	prefix := jobs.DefaultReplyPrefix
	if len(w.replyPrefixes) > 0 {
		prefix = w.replyPrefixes[0]
	}
	out.Reply = prefix + ".mtlsrelay-zone." + nuid.Next()
	sub, err := nc.SubscribeSync(out.Reply)
	if err != nil {
		w.forwardWaiting.Release(1)
		w.log.Warn().Err(err).Msg("could not subscribe to relay a direct call to its zone")
		return
	}
	if err := nc.PublishMsg(out); err != nil {
		_ = sub.Unsubscribe()
		w.forwardWaiting.Release(1)
		w.log.Warn().Err(err).Str("zone", zone).Msg("could not forward a direct call to its connection's zone")
		return
	}
	w.metrics.forwarded.WithLabelValues(zone).Inc()
	go func() {
		defer w.forwardWaiting.Release(1)
		defer func() { _ = sub.Unsubscribe() }()
		// The zone's worker answers within its admission wait and a direct
		// call's bound, or not at all.
		ctx, cancel := context.WithTimeout(w.callCtx, directAdmissionWait+directMaxTotal+5*time.Second)
		defer cancel()
		resp, err := sub.NextMsgWithContext(ctx)
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			w.log.Debug().Err(err).Str("zone", zone).Msg("no answer from the zone of a forwarded direct call")
			return
		}
		if err != nil {
			// The server's "no responders": no worker of the zone listens.
			tenant, conn := w.subj.Route(msg.Subject)
			call, _ := jobs.DecodeCall(msg.Data, conn)
			if call != nil {
				call.Tenant = tenant
			}
			res := jobs.FailedResult(call, jobs.Errorf(jobs.CodeZoneUnavailable,
				"connection %s is in zone %s, and no running worker serves that zone (worker.zones); start one, or move the connection", conn, zone))
			res.Worker = w.Name()
			data, err := jobs.EncodeResult(res)
			if err != nil {
				return
			}
			reply := nats.NewMsg(msg.Reply)
			reply.Data = data
			reply.Header.Set(jobs.HeaderCallID, res.ID)
			_ = nc.PublishMsg(reply)
			return
		}
		reply := &nats.Msg{Subject: msg.Reply, Data: resp.Data, Header: resp.Header}
		if err := nc.PublishMsg(reply); err != nil {
			w.log.Warn().Err(err).Msg("could not relay a direct result from its zone")
		}
	}()
}

// enqueuedAt is when the call was first stored: the header a forward set,
// else the stream's timestamp.
func enqueuedAt(h nats.Header, meta *jetstream.MsgMetadata) time.Time {
	if v := h.Get(jobs.HeaderEnqueued); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && t.Before(meta.Timestamp) {
			return t
		}
	}
	return meta.Timestamp
}
