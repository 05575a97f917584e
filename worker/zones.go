package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// forwardCount is how often the message with header h was forwarded.
func forwardCount(h nats.Header) int {
	n, _ := strconv.Atoi(h.Get(jobs.HeaderForwarded))
	return n
}

// forward stores the durable call msg on its zone's subject and then
// acknowledges it here. The forwarded copy's Nats-Msg-Id is the stream
// and sequence msg was taken from, so a forward repeated after a lost ack
// is stored once; the flow's own Nats-Msg-Id stays the call's in the
// stream the flow published to.
func (w *Worker) forward(ctx context.Context, msg jetstream.Msg, call *jobs.Call, zone string, meta *jetstream.MsgMetadata) {
	log := zerolog.Ctx(ctx)
	n := forwardCount(msg.Headers())
	if n >= maxForwards {
		log.Warn().Str("zone", zone).Int("forwards", n).Msg("call forwarded too often between zones; workers disagree on its connection's zone for now; taking it again later")
		w.handBack(msg, forwardWait)
		return
	}
	out := nats.NewMsg(w.subj.Zoned(zone, msg.Subject()))
	out.Data = msg.Data()
	for k, v := range msg.Headers() {
		out.Header[k] = v
	}
	out.Header.Set(jobs.HeaderMsgID, meta.Stream+"/"+strconv.FormatUint(meta.Sequence.Stream, 10))
	out.Header.Set(jobs.HeaderForwarded, strconv.Itoa(n+1))
	if out.Header.Get(jobs.HeaderEnqueued) == "" {
		out.Header.Set(jobs.HeaderEnqueued, meta.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	if _, err := w.publishJetStream(ctx, out, w.ackWait/2); err != nil {
		// It stays where it is and comes back: forwarding is tried again.
		log.Warn().Err(err).Str("zone", zone).Msg("could not forward the call to its connection's zone; handed back")
		w.handBack(msg, handBackBackoff(meta.NumDelivered))
		return
	}
	w.metrics.forwarded.WithLabelValues(zone).Inc()
	log.Debug().Str("zone", zone).Msg("call forwarded to its connection's zone")
	w.acknowledge(ctx, msg)
}

// forwardDirect passes the direct call msg on to its zone's workers and
// relays their answer to the caller. When no worker of that zone listens,
// the caller gets zone_unavailable at once: a forward with the caller's
// own reply subject would leave it waiting for its timeout, as the NATS
// server tells only the publisher that no one responded.
func (w *Worker) forwardDirect(nc *nats.Conn, msg *nats.Msg, zone string) {
	n := forwardCount(msg.Header)
	if n >= maxForwards {
		w.log.Warn().Str("zone", zone).Str("subject", msg.Subject).Msg("direct call forwarded too often between zones; not answered")
		return
	}
	if w.stopping.Load() || !w.directWaiting.TryAcquire(1) {
		w.log.Debug().Str("subject", msg.Subject).Msg("too many direct calls waiting; this one is not forwarded")
		return
	}
	out := &nats.Msg{Subject: w.subj.Zoned(zone, msg.Subject), Data: msg.Data, Header: nats.Header{}}
	for k, v := range msg.Header {
		out.Header[k] = v
	}
	out.Header.Set(jobs.HeaderForwarded, strconv.Itoa(n+1))
	w.metrics.forwarded.WithLabelValues(zone).Inc()
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		defer w.directWaiting.Release(1)
		ctx, cancel := context.WithTimeout(w.callCtx, directAdmissionWait+directMaxTotal+5*time.Second)
		defer cancel()
		resp, err := nc.RequestMsgWithContext(ctx, out)
		switch {
		case err == nil:
			reply := &nats.Msg{Subject: msg.Reply, Data: resp.Data, Header: resp.Header}
			if err := nc.PublishMsg(reply); err != nil {
				w.log.Warn().Err(err).Msg("could not relay a direct result from its zone")
			}
		case errors.Is(err, nats.ErrNoResponders):
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
		default:
			w.log.Debug().Err(err).Str("zone", zone).Msg("no answer from the zone of a forwarded direct call")
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
