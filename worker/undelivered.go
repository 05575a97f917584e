package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// maxDeliveriesSubject is JetStream's advisory of a message that reached
// its consumer's MaxDeliver without being acknowledged, for consumer
// "workers" of any stream.
// Consumers "workers" and "workers-<zone>" of every stream: the callback
// keeps the relay's.
const maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*"

// maxDeliveriesAdvisory is the part of the advisory the worker reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// watchUndelivered ends the calls JetStream gave up delivering: a call
// whose last delivery was handed back (a NATS failure while its result was
// published, a worker that crashed or stopped on it) stays in its work
// queue stream, delivered to nobody. One worker of the queue group takes
// each advisory and ends the call as a last delivery would: a
// max_deliveries result where results may go, unless a result is stored
// already, and a dead letter; then it deletes the call from its stream.
func (w *Worker) watchUndelivered() (*nats.Subscription, error) {
	sub, err := w.nc.QueueSubscribe(maxDeliveriesSubject, jobs.QueueGroup, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || !w.isCallsConsumer(adv.Stream, adv.Consumer) {
			return
		}
		w.inflight.Add(1)
		go func() {
			defer w.inflight.Done()
			w.endUndelivered(adv)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", maxDeliveriesSubject, err)
	}
	return sub, nil
}

// isCallsConsumer reports whether consumer of stream is the workers' on
// one of the relay's calls streams: "workers" on MTLSRELAY_CALLS or a
// tenant's stream, "workers-<zone>" on MTLSRELAY_ZONES (any zone: a call
// forwarded to a zone whose workers are gone is ended by whoever hears).
func (w *Worker) isCallsConsumer(stream, consumer string) bool {
	if stream == jobs.StreamZones {
		_, _, ok := jobs.ParseZoneConsumer(consumer)
		return ok
	}
	if consumer != jobs.ConsumerWorkers {
		return false
	}
	if stream == jobs.StreamCalls {
		return true
	}
	for i := range w.streams.Partitions {
		if stream == jobs.PartitionStream(i) {
			return true
		}
	}
	return slices.ContainsFunc(w.tenantNames, func(t string) bool { return jobs.TenantStream(t) == stream })
}

// endUndelivered ends the call at adv.StreamSeq of adv.Stream.
func (w *Worker) endUndelivered(adv maxDeliveriesAdvisory) {
	log := w.log.With().Str("stream", adv.Stream).Uint64("stream_seq", adv.StreamSeq).Uint64("deliveries", adv.Deliveries).Logger()
	ctx, cancel := context.WithTimeout(log.WithContext(context.WithoutCancel(w.callCtx)), 2*w.patience+30*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, adv.Stream)
	if err != nil {
		log.Error().Err(err).Msg("a call reached its last delivery unended, and its stream cannot be read; it stays in the stream")
		return
	}
	raw, err := s.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return // acknowledged or ended meanwhile
	}
	if err != nil {
		log.Error().Err(err).Msg("a call reached its last delivery unended, and cannot be read; it stays in the stream")
		return
	}
	tenant, conn := w.subj.Route(raw.Subject)
	call, _ := jobs.DecodeCall(raw.Data, conn)
	id := fmt.Sprintf("seq-%d", adv.StreamSeq)
	if call != nil {
		call.Tenant = tenant
		if call.ID != "" {
			id = call.ID
		}
	}
	if !jobs.ValidName(conn) {
		conn = "_invalid"
	}
	log = log.With().Str("call_id", id).Str("connection", conn).Logger()
	ctx = log.WithContext(ctx)
	jerr := jobs.Errorf(jobs.CodeMaxDeliveries,
		"the call was delivered %d times (worker.max_deliver) and never ended: its workers stopped or crashed on it, or NATS failed each time its result was stored; it was ended and dead-lettered. Send it again if it still matters; a non-idempotent call may have reached the partner",
		adv.Deliveries)
	if call != nil && call.ReplyTo != "" && w.checkReply(call.ReplyTo, call.Tenant) == nil {
		enqueued := raw.Time
		if adv.Stream == jobs.StreamZones {
			// A forwarded copy was stored when it was forwarded; the call
			// was first enqueued before.
			if t, err := time.Parse(time.RFC3339Nano, raw.Header.Get(jobs.HeaderEnqueued)); err == nil && t.Before(enqueued) {
				enqueued = t
			}
		}
		stored, err := w.storedResult(ctx, call, enqueued)
		switch {
		case err != nil:
			log.Warn().Err(err).Msg("could not look for the call's stored result; publishing max_deliveries")
			fallthrough
		case stored == nil:
			res := jobs.FailedResult(call, jerr)
			res.Worker = w.Name()
			if perr := w.publishResult(ctx, call, res, raw.Header); perr != nil {
				log.Error().Err(perr).Msg("could not publish the max_deliveries result; the call is dead-lettered all the same")
			}
		}
	}
	if derr := w.deadLetterRaw(ctx, raw.Data, raw.Subject, id, conn, jerr); derr != nil {
		log.Error().Err(derr).Msg("could not store the dead letter of a call at its delivery limit; it stays in the stream")
		return
	}
	if err := s.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn().Err(err).Msg("could not delete the ended call from its stream")
	}
	log.Error().Msg("call delivered worker.max_deliver times without ending; ended with max_deliveries and dead-lettered")
	w.callFinished(ctx, conn, &jobs.Result{ID: id, Error: jerr, Attempt: int(adv.Deliveries)})
}
