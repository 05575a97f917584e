package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// directAdmissionWait bounds how long a direct call waits for a slot.
const directAdmissionWait = 2 * time.Second

// directMaxTotal bounds a direct call's attempts and retry waits together.
const directMaxTotal = time.Minute

// handleDirect serves a core request on <prefix>.rpc.<connection>: the call
// runs at once, retries happen in process within the call's attempts, and
// the result is the reply. Nothing is persisted: the caller retries if the
// worker dies.
func (w *Worker) handleDirect(nc *nats.Conn, msg *nats.Msg) {
	if msg.Reply == "" {
		w.log.Warn().Str("subject", msg.Subject).Msg("direct call without a reply inbox dropped; use a request, or publish to calls for durable delivery")
		return
	}
	tenant, conn := w.subj.Route(msg.Subject)
	if err := w.checkReply(msg.Reply, tenant); err != nil {
		// Answering would publish there with the worker's permissions.
		w.log.Warn().Str("subject", msg.Subject).Str("reason", err.Message).Msg("direct call with a reply subject results may not go to dropped; nothing is published there")
		w.metrics.directRefused.Inc()
		return
	}
	if zone, foreign := w.foreignZone(tenant, conn); foreign {
		w.forwardDirect(nc, msg, zone)
		return
	}
	// Admission happens off the subscription's callback, with slots of
	// its own: a direct call never waits for a durable pull to end, nor
	// holds up the direct calls behind it. Past the waiting bound the
	// worker does not answer, and the caller's request times out.
	if w.stopping.Load() || !w.directWaiting.TryAcquire(1) {
		w.log.Debug().Str("subject", msg.Subject).Msg("too many direct calls waiting; this one is not answered")
		return
	}
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		defer w.directWaiting.Release(1)
		// A caller does not wait long for a direct call: past
		// directAdmissionWait it has likely given up or sent the call
		// elsewhere, and making it then could repeat a POST.
		actx, cancel := context.WithTimeout(w.callCtx, directAdmissionWait)
		err := w.direct.Acquire(actx, 1)
		cancel()
		if err != nil {
			w.log.Debug().Str("subject", msg.Subject).Msg("no direct slot freed in time; this call is not answered")
			return
		}
		defer w.direct.Release(1)
		if w.stopping.Load() {
			return // shutdown began while it waited
		}
		defer func() {
			if p := recover(); p != nil {
				// The caller's request times out; its value may hold call data.
				w.log.Error().Str("panic_type", fmt.Sprintf("%T", p)).Msg("a direct call panicked; no reply sent")
			}
		}()
		w.metrics.inflight.Add(1)
		defer w.metrics.inflight.Add(-1)
		ctx, span := w.startCallSpan(w.callCtx, msg.Header, nil, msg.Subject, 0)
		defer span.End()
		res := w.runDirect(ctx, msg)
		data, err := jobs.EncodeResult(res)
		if err != nil {
			w.log.Error().Err(err).Msg("encoding a direct result failed")
			return
		}
		mp := w.maxPayload()
		if mp > 0 && int64(len(data)) > mp && (res.Body != "" || res.BodyBase64 != nil) {
			// Too large for a reply with its body inline: the body goes
			// to the Object Store, as a durable call's does.
			tenant, _ := w.subj.Route(msg.Subject)
			if moved, merr := w.moveBody(ctx, &jobs.Call{ID: res.ID, Tenant: tenant}, res); merr == nil {
				res = moved
			} else {
				w.log.Error().Err(merr).Str("call_id", res.ID).Msg("a direct result is too large for NATS, and its body could not go to the Object Store")
			}
			if data, err = jobs.EncodeResult(res); err != nil {
				return
			}
		}
		if mp > 0 && int64(len(data)) > mp {
			res = tooLargeResult(res, len(data), mp)
			if data, err = jobs.EncodeResult(res); err != nil {
				return
			}
		}
		reply := nats.NewMsg(msg.Reply)
		reply.Data = data
		reply.Header.Set(jobs.HeaderCallID, res.ID)
		w.injectTrace(ctx, reply.Header, msg.Header)
		if err := msg.RespondMsg(reply); err != nil {
			w.log.Warn().Err(err).Str("call_id", res.ID).Msg("could not send the direct result")
		}
	}()
}

func (w *Worker) runDirect(parent context.Context, msg *nats.Msg) *jobs.Result {
	start := time.Now()
	tenant, conn := w.subj.Route(msg.Subject)
	call, err := jobs.DecodeCall(msg.Data, conn)
	if call != nil {
		call.Tenant = tenant
	}
	if err == nil {
		err = checkNotReplayed(msg.Header)
	}
	if err == nil {
		err = w.checkTenant(call)
	}
	log := w.log.With().Str("mode", "direct").Logger()
	if call != nil {
		log = log.With().Str("call_id", call.ID).Str("connection", call.Connection).Logger()
	}
	if err != nil {
		log.Warn().Str("code", string(jobs.CodeOf(err))).Msg("direct call rejected")
		res := jobs.FailedResult(call, err)
		res.Worker, res.Attempt = w.Name(), 1
		w.callFinished(parent, w.subj.ConnectionOf(msg.Subject), res)
		return res
	}
	// A direct call holds one of the worker's direct slots from its first
	// attempt to its last: bound the whole, so no caller (who has likely
	// given up by then) keeps a slot through long retry waits.
	ctx, cancel := context.WithTimeout(log.WithContext(parent), directMaxTotal)
	defer cancel()
	for n := 1; ; n++ {
		ao := w.attempt(ctx, call, n, time.Since(start), attemptOptions{block: true, lane: outbound.LaneDirect})
		if ao.handback > 0 {
			// The worker is stopping, or the call's time ran out while it
			// waited for its connection: there is no one to hand back to.
			jerr := jobs.Errorf(jobs.CodeCanceled, "the worker stopped before it could make this direct call; send it again")
			if w.callCtx.Err() == nil {
				jerr = jobs.Errorf(jobs.CodeTimeout, "this direct call waited for connection %s (max_conns, rate_limit) until its %s were up; send it durably, or later", call.Connection, directMaxTotal)
			}
			res := jobs.FailedResult(call, jerr)
			res.Worker, res.Attempt = w.Name(), n
			return res
		}
		attempts := maxAttempts(call, ao.conn)
		retry, delay := w.retry.decide(call, ao.Outcome, n, attempts)
		if retry {
			w.callRetried(ctx, call.Connection, ao.Result, delay)
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
			}
		}
		finalize(ao.Result, attempts)
		w.callFinished(ctx, call.Connection, ao.Result)
		logResult(log, ao.Result)
		return ao.Result
	}
}
