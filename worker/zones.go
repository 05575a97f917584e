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

// holderOf returns who a delivery is in the claims (claims.go), the
// origin of its call and the hand-off nonce it carries: a copy taken from
// MTLSRELAY_ZONES is s:<seq>, with the headers its forwarder set; the
// message a flow published is the original.
func holderOf(msg jetstream.Msg, meta *jetstream.MsgMetadata) (me, orig, nonce string) {
	if !fromZones(meta) {
		return originalHolder, origin(meta), ""
	}
	orig = msg.Headers().Get(jobs.HeaderOrigin)
	if orig == "" {
		orig = origin(meta)
	}
	return "s:" + strconv.FormatUint(meta.Sequence.Stream, 10), orig, msg.Headers().Get(jobs.HeaderHandoff)
}

// forward hands the durable call msg to its zone: it records the hand-off
// (claims.go), stores a copy carrying the hand-off's nonce on the zone's
// subject, and then acknowledges msg. With nonce set (a redelivery of a
// delivery that handed off already) it stores that copy again: within
// the duplicate window it is the same message (Nats-Msg-Id is the nonce),
// past it a second copy, which finds the call taken and does not run. A
// call that can never be stored there (too large with the forwarding
// headers) ends invalid_call.
func (w *Worker) forward(ctx context.Context, msg jetstream.Msg, call *jobs.Call, zone string, meta *jetstream.MsgMetadata, nonce string) {
	log := zerolog.Ctx(ctx)
	me, orig, _ := holderOf(msg, meta)
	n, enqueued := 0, meta.Timestamp
	if fromZones(meta) {
		n = forwardCount(msg.Headers())
		enqueued = enqueuedAt(msg.Headers(), meta)
	}
	if n >= maxForwards {
		log.Warn().Str("zone", zone).Int("forwards", n).Msg("call forwarded too often between zones; workers disagree on its connection's zone for now; taking it again later")
		w.handBack(msg, forwardWait)
		return
	}
	if nonce == "" {
		var err error
		if nonce, err = w.state.handOff(ctx, orig, me); errors.Is(err, errNotHolder) {
			log.Info().Msg("another delivery holds this forwarded call; acknowledged without running it")
			w.acknowledge(ctx, msg)
			return
		} else if err != nil {
			log.Warn().Err(err).Msg("could not record the hand-off of the call to its zone; handed back")
			w.handBack(msg, handBackBackoff(meta.NumDelivered))
			return
		}
	}
	w.ensureZoneConsumer(ctx, zone, call.Tenant)
	out := nats.NewMsg(w.subj.Zoned(zone, msg.Subject()))
	out.Data = msg.Data()
	for _, k := range forwardHeaders {
		if v := msg.Headers().Values(k); len(v) > 0 {
			out.Header[k] = v
		}
	}
	out.Header.Set(jobs.HeaderMsgID, "fwd."+nonce)
	out.Header.Set(jobs.HeaderOrigin, orig)
	out.Header.Set(jobs.HeaderHandoff, nonce)
	out.Header.Set(jobs.HeaderForwarded, strconv.Itoa(n+1))
	out.Header.Set(jobs.HeaderEnqueued, enqueued.UTC().Format(time.RFC3339Nano))
	ack, err := w.publishJetStream(ctx, out, w.ackWait/2)
	if neverPublishable(err) {
		w.reject(ctx, msg, call, jobs.Errorf(jobs.CodeInvalidCall,
			"the call is too large to forward to zone %s, where its connection %s runs (%d bytes, near the NATS server's max_payload); send a smaller call, or its body by body_ref", zone, call.Connection, len(out.Data)), meta)
		return
	}
	if err != nil {
		// It stays where it is and comes back: its redelivery stores the
		// copy again, with the same nonce.
		log.Warn().Err(err).Str("zone", zone).Msg("could not forward the call to its connection's zone; handed back")
		w.handBack(msg, handBackBackoff(meta.NumDelivered))
		return
	}
	w.metrics.forwarded.WithLabelValues(zone).Inc()
	log.Debug().Str("zone", zone).Uint64("zone_seq", ack.Sequence).Msg("call forwarded to its connection's zone")
	w.acknowledge(ctx, msg)
}

// claimed decides whether this delivery of a durable call may go on
// (claims.go): a copy taken from MTLSRELAY_ZONES must hold the call or
// take it over from the hand-off that made it; a redelivery of the
// original must not find it handed off. A delivery that handed the call
// off stores its copy again (forward) and runs nothing; one that another
// delivery's claim excludes is acknowledged. The original's first
// delivery reads nothing: nothing can have handed it off yet. It hands
// the call back when the state cannot be read, and reports false when
// the delivery ends here.
func (w *Worker) claimed(ctx context.Context, msg jetstream.Msg, call *jobs.Call, meta *jetstream.MsgMetadata) bool {
	if !fromZones(meta) && meta.NumDelivered <= 1 {
		return true
	}
	log := zerolog.Ctx(ctx)
	me, orig, nonce := holderOf(msg, meta)
	h, handedTo, err := w.state.hold(ctx, orig, me, nonce, fromZones(meta))
	if err != nil {
		log.Warn().Err(err).Msg("could not read who holds the call; handing it back")
		// Deliveries count toward max_deliver: wait longer after each.
		w.handBack(msg, handBackBackoff(meta.NumDelivered))
		return false
	}
	switch h {
	case holdDrop:
		log.Info().Msg("another delivery holds this call (it was forwarded to a zone); acknowledged without running it")
		w.acknowledge(ctx, msg)
		return false
	case holdReforward:
		zone, foreign := w.foreignZone(call.Tenant, call.Connection)
		if !foreign {
			// Its copy goes on through the zone stream, even to this
			// worker's own zone: the hand-off is recorded.
			zone = w.cfg.Worker.zones()[0]
			if c, ok := w.catalog.load().Connections[call.Connection]; ok {
				zone = c.ZoneName()
			}
		}
		log.Info().Str("zone", zone).Msg("the call was handed to a zone; storing its copy again")
		w.forward(ctx, msg, call, zone, meta, handedTo)
		return false
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
