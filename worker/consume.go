package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// consume pulls durable calls while slots are free, until ctx ends. A
// fixed pool of goroutines, one per slot, runs the calls: their stacks,
// grown deep by TLS and HTTP/2, are kept from call to call.
func (w *Worker) consume(ctx context.Context, cons jetstream.Consumer) {
	concurrency := w.cfg.Worker.Concurrency
	work := make(chan jetstream.Msg)
	for range concurrency {
		go func() {
			for msg := range work {
				w.safeHandle(msg)
				w.slots.Release(1)
				w.inflight.Done()
			}
		}()
	}
	// The pool ends once the calls it runs end; Run's shutdown waits for
	// those (w.inflight) within the grace period.
	defer close(work)

	batchMax := int64(w.cfg.Worker.FetchBatch)
	// Under load slots free up one at a time; a pull per freed slot would
	// cost a request each. Waiting up to a millisecond for a few more slots
	// turns that into one pull per batch. An idle worker has every slot
	// free and pulls at once.
	batchMin := int64(max(1, concurrency/8))
	errDelay := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := w.slots.Acquire(ctx, 1); err != nil {
			return
		}
		n := int64(1)
		for n < batchMax && w.slots.TryAcquire(1) {
			n++
		}
		if n < batchMin {
			wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			for n < batchMin && w.slots.Acquire(wctx, 1) == nil {
				n++
			}
			cancel()
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(int(n), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			w.slots.Release(n)
			w.log.Warn().Err(err).Msg("fetching calls failed; retrying")
			select {
			case <-ctx.Done():
			case <-time.After(errDelay):
			}
			errDelay = min(errDelay*2, 5*time.Second)
			continue
		}
		errDelay = 100 * time.Millisecond
		var got int64
		for msg := range batch.Messages() {
			got++
			if w.stopping.Load() || ctx.Err() != nil {
				// Taken after shutdown began: hand it back at once.
				_ = msg.Nak()
				w.slots.Release(1)
				continue
			}
			w.inflight.Add(1)
			work <- msg
		}
		cancel()
		w.slots.Release(n - got)
		if err := batch.Error(); err != nil && !isFetchEnd(err) && ctx.Err() == nil {
			w.log.Warn().Err(err).Msg("pull request ended with an error")
		}
	}
}

// safeHandle runs handleDurable and survives a defect in it: the call is
// handed back (it is not lost), the panic's type is logged (its value may
// hold call data), and the pool goroutine lives on.
func (w *Worker) safeHandle(msg jetstream.Msg) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Str("panic_type", fmt.Sprintf("%T", p)).Str("subject", msg.Subject()).
				Msg("handling a call panicked; handed back for redelivery")
			_ = msg.NakWithDelay(time.Second)
		}
	}()
	w.handleDurable(msg)
}

func isFetchEnd(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat)
}

// handleDurable processes one delivery of a durable call: decode, attempt,
// then retry through NakWithDelay or publish the final result and ack.
func (w *Worker) handleDurable(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Msg("message without JetStream metadata; terminating it")
		_ = msg.Term()
		return
	}
	queued := time.Since(meta.Timestamp)
	call, derr := jobs.DecodeCall(msg.Data(), w.subj.ConnectionOf(msg.Subject()))
	lc := w.log.With().Uint64("stream_seq", meta.Sequence.Stream).Uint64("delivery", meta.NumDelivered)
	if call != nil {
		lc = lc.Str("call_id", call.ID).Str("connection", call.Connection)
	}
	log := lc.Logger()
	ctx := log.WithContext(w.callCtx)
	w.metrics.inflight.Add(1)
	defer w.metrics.inflight.Add(-1)
	ctx, span := w.startCallSpan(ctx, msg.Headers(), call, msg.Subject(), meta.NumDelivered)
	defer span.End()

	if derr != nil {
		w.reject(ctx, msg, call, derr, meta)
		return
	}
	if w.subj.Reserved(call.ReplyTo) {
		w.reject(ctx, msg, call, jobs.Errorf(jobs.CodeInvalidCall,
			"reply_to %q is a subject mtlsrelay consumes calls on; use a subject under %s", call.ReplyTo, w.subj.ResultsAll()), meta)
		return
	}
	if call.ReplyTo == "" {
		w.reject(ctx, msg, call, jobs.Errorf(jobs.CodeInvalidCall,
			"durable call has no reply_to, so its result could not be delivered; set reply_to (for example %s)", w.subj.Result(call.ID)), meta)
		return
	}

	attemptNo, done := w.recall(ctx, msg, call, int(meta.NumDelivered))
	if done {
		return
	}
	var beforeSend func() error
	if !call.IsIdempotent() {
		// Recorded before the request leaves: if this worker dies now, the
		// redelivery knows the partner may have seen it and does not repeat it.
		beforeSend = func() error {
			return w.state.put(ctx, call.ID, callState{Attempts: attemptNo - 1, Inflight: true})
		}
	}

	w.held.add(msg)
	actx, cancel := context.WithCancel(ctx)
	ao := w.attempt(actx, call, attemptNo, queued, attemptOptions{beforeSend: beforeSend})
	cancel()
	w.held.remove(msg)

	if ao.handback > 0 {
		// No attempt was made: record that, so the redelivery does not
		// count this delivery as one.
		if err := w.state.put(ctx, call.ID, callState{Attempts: attemptNo - 1}); err != nil {
			log.Warn().Err(err).Msg("could not record a hand-back")
		}
		log.Debug().Dur("retry_in", ao.handback).Msg("connection saturated or rate-limited; call handed back")
		_ = msg.NakWithDelay(ao.handback)
		return
	}
	res := ao.Result
	if w.callCtx.Err() != nil && (res.Error == nil || res.Error.Code == jobs.CodeCanceled || res.Error.Code == jobs.CodeTimeout) {
		// Cut short by shutdown: hand the call back rather than report it.
		// A non-idempotent call keeps its in-flight marker: the partner may
		// have seen it, so the redelivery reports outcome_unknown.
		log.Info().Msg("call interrupted by shutdown; handed back")
		_ = msg.Nak()
		return
	}
	attempts := maxAttempts(call, ao.conn)
	if retry, delay := w.retry.decide(call, ao.Outcome, attemptNo, attempts); retry {
		w.callRetried(ctx, call.Connection, res, delay)
		if call.Progress {
			w.publishProgress(ctx, call, res, delay, msg.Headers())
		}
		if err := w.state.put(ctx, call.ID, callState{Attempts: attemptNo}); err != nil {
			log.Warn().Err(err).Msg("could not record the attempt; the retry may count it twice")
		}
		ev := log.Info().Int("status", res.Status).Dur("retry_in", delay)
		if res.Error != nil {
			ev = ev.Str("code", string(res.Error.Code))
		}
		ev.Msg("attempt failed; retrying")
		_ = msg.NakWithDelay(delay)
		return
	}
	finalize(res, attempts)
	w.complete(ctx, msg, call, res)
}

// recall reads what earlier deliveries of call did, when it matters: on a
// redelivery, and for every non-idempotent call (its id may have completed
// already). It returns the attempt number to make, or done when the call
// needs nothing more (already completed, or its outcome is unknown and was
// reported).
func (w *Worker) recall(ctx context.Context, msg jetstream.Msg, call *jobs.Call, deliveries int) (attempt int, done bool) {
	if deliveries <= 1 && call.IsIdempotent() {
		return 1, false
	}
	log := zerolog.Ctx(ctx)
	st, err := w.state.get(ctx, call.ID)
	if err != nil {
		log.Warn().Err(err).Msg("could not read the call's state; handing it back")
		_ = msg.NakWithDelay(jitter(time.Second))
		return 0, true
	}
	switch {
	case st == nil:
		// Nothing recorded: every earlier delivery may have been an attempt
		// (a worker died before it could record anything).
		return deliveries, false
	case st.Done:
		log.Info().Msg("call already completed; acknowledged without calling the partner again")
		_ = msg.Ack()
		return 0, true
	case st.Inflight:
		res := jobs.FailedResult(call, jobs.Errorf(jobs.CodeOutcomeUnknown,
			"worker %s stopped while this non-idempotent %s may have reached the partner; it is not repeated: check with the partner whether it took effect",
			st.Worker, call.Method))
		res.Attempt, res.Worker = st.Attempts+1, w.Name()
		w.complete(ctx, msg, call, res)
		return 0, true
	}
	return st.Attempts + 1, false
}

// complete publishes the final result of call and, once it is safely
// published, finishes the call. A result kept in MTLSRELAY_RESULTS goes
// through the result window: the goroutine is free for the next call while
// JetStream acknowledges it, and the call is acknowledged after that. Any
// other reply subject gets a core publish (see publishResult).
func (w *Worker) complete(ctx context.Context, msg jetstream.Msg, call *jobs.Call, res *jobs.Result) {
	w.annotateFinished(ctx, call.Connection, res)
	out, err := w.resultMsg(ctx, call, res, msg.Headers())
	if err != nil || !w.subj.IsResult(call.ReplyTo) {
		if err == nil {
			err = w.nc.PublishMsg(out)
		}
		w.finish(ctx, msg, call, res, err)
		return
	}
	w.inflight.Add(1)
	w.results.Publish(out, func(err error) {
		if err == nil && call.IsIdempotent() && res.Error == nil {
			// Nothing left that waits on NATS: finish on the ack's goroutine.
			w.finish(ctx, msg, call, res, nil)
			w.inflight.Done()
			return
		}
		go func() {
			defer w.inflight.Done()
			if err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("result not acknowledged; publishing it again")
				err = w.publishJetStream(ctx, out, resultTries)
			}
			w.finish(ctx, msg, call, res, err)
		}()
	})
}

// finish ends a call whose result was published (err nil): metrics, the
// call recorded as done, a dead letter for a failure, the ack. When the
// result could not be published (err), the call is handed back instead.
func (w *Worker) finish(ctx context.Context, msg jetstream.Msg, call *jobs.Call, res *jobs.Result, err error) {
	log := zerolog.Ctx(ctx)
	if err != nil {
		log.Error().Err(err).Msg("could not publish the result; the call will be redelivered")
		_ = msg.NakWithDelay(w.retry.backoff(1))
		return
	}
	w.metrics.finished(w.connLabel(call.Connection), res)
	if !call.IsIdempotent() {
		if err := w.state.put(ctx, call.ID, callState{Attempts: res.Attempt, Done: true}); err != nil {
			log.Warn().Err(err).Msg("could not record the call as done")
		}
	}
	if res.Error != nil {
		w.deadLetter(ctx, msg, call.ID, call.Connection, res.Error)
	}
	if err := msg.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack failed; a redelivery will be de-duplicated by call id")
	}
	logResult(*log, res)
}

// reject ends a call that cannot be processed: a result when it has a usable
// reply_to, a dead letter with the raw bytes always, and Term so it is
// never delivered again.
func (w *Worker) reject(ctx context.Context, msg jetstream.Msg, call *jobs.Call, err error, meta *jetstream.MsgMetadata) {
	log := zerolog.Ctx(ctx)
	jerr := jobs.AsError(err)
	log.Warn().Str("code", string(jerr.Code)).Str("reason", jerr.Message).Msg("call rejected and dead-lettered")
	id, conn := fmt.Sprintf("seq-%d", meta.Sequence.Stream), w.subj.ConnectionOf(msg.Subject())
	if call != nil && call.ID != "" {
		id = call.ID
	}
	if !jobs.ValidName(conn) {
		conn = "_invalid"
	}
	w.callFinished(ctx, conn, &jobs.Result{ID: id, Error: jerr, Attempt: int(meta.NumDelivered)})
	if call != nil && call.ReplyTo != "" && jobs.ValidSubject(call.ReplyTo) && !w.subj.Reserved(call.ReplyTo) {
		res := jobs.FailedResult(call, jerr)
		res.Attempt, res.Worker = int(meta.NumDelivered), w.Name()
		if perr := w.publishResult(ctx, call, res, msg.Headers()); perr != nil {
			log.Error().Err(perr).Msg("could not publish the rejection result")
		}
	}
	w.deadLetter(ctx, msg, id, conn, jerr)
	_ = msg.TermWithReason(string(jerr.Code))
}

// publishResult publishes res to the call's reply_to and waits until it is
// safely published. A subject MTLSRELAY_RESULTS keeps is published through
// JetStream, waiting for its ack. Any other subject (a flow's inbox) gets a
// core publish: no stream of ours acks it, and a subscriber would take the
// publish's reply subject and never answer. It leaves on the connection the
// call's ack follows, so NATS has the result before it sees the ack; a
// flow's own stream on that subject still stores it.
func (w *Worker) publishResult(ctx context.Context, call *jobs.Call, res *jobs.Result, in nats.Header) error {
	msg, err := w.resultMsg(ctx, call, res, in)
	if err != nil {
		return err
	}
	return w.send(ctx, msg, resultTries)
}

// send publishes msg: through JetStream, waiting for its ack and trying up
// to tries times, when MTLSRELAY_RESULTS keeps its subject; else with a
// core publish (see publishResult).
func (w *Worker) send(ctx context.Context, msg *nats.Msg, tries int) error {
	if !w.subj.IsResult(msg.Subject) {
		return w.nc.PublishMsg(msg)
	}
	return w.publishJetStream(ctx, msg, tries)
}

// publishProgress tells a call that asked for progress that the attempt of
// res failed and another follows after delay. It is best-effort: one try,
// and a failure is logged; the call is retried all the same.
func (w *Worker) publishProgress(ctx context.Context, call *jobs.Call, res *jobs.Result, delay time.Duration, in nats.Header) {
	p := *res
	p.Progress, p.RetryInMS = true, max(delay.Milliseconds(), 1)
	if p.Error == nil && retryableStatus(p.Status) {
		p.Error = jobs.Errorf(jobs.CodeHTTPStatus, "the partner answered HTTP %d on attempt %d; retrying in %s", p.Status, p.Attempt, delay.Round(time.Millisecond))
	}
	out, err := w.resultMsg(ctx, call, &p, in)
	if err == nil {
		out.Header.Set(jobs.HeaderMsgID, jobs.ProgressMsgID(call.ID, p.Attempt))
		out.Header.Set(jobs.HeaderProgress, strconv.Itoa(p.Attempt))
		err = w.send(ctx, out, 1)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Int("attempt", p.Attempt).Msg("could not publish the progress message; the call is retried all the same")
	}
}

// resultMsg is the message carrying res to the call's reply_to, with
// Nats-Msg-Id set to the call id and the trace context of in.
func (w *Worker) resultMsg(ctx context.Context, call *jobs.Call, res *jobs.Result, in nats.Header) (*nats.Msg, error) {
	data, err := jobs.EncodeResult(res)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(call.ReplyTo)
	msg.Data = data
	msg.Header.Set(jobs.HeaderMsgID, call.ID)
	msg.Header.Set(jobs.HeaderCallID, call.ID)
	w.injectTrace(ctx, msg.Header, in)
	return msg, nil
}

// resultTimeout bounds the wait for JetStream's ack of one result, and a
// publish's wait for room in the full result window (internal/pubwindow):
// at most max(concurrency, 64) results await their acks at once.
const resultTimeout = 5 * time.Second

// resultTries is how many times a result is published before its call is
// handed back.
const resultTries = 5

// publishJetStream publishes msg and waits for JetStream's ack, trying up
// to tries times.
func (w *Worker) publishJetStream(ctx context.Context, msg *nats.Msg, tries int) error {
	var lastErr error
	for i := range tries {
		pctx, cancel := context.WithTimeout(ctx, resultTimeout)
		_, err := w.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		lastErr = err
		if i == tries-1 {
			break
		}
		select {
		case <-ctx.Done():
			return lastErr
		case <-time.After(time.Duration(i+1) * 200 * time.Millisecond):
		}
	}
	return lastErr
}

// deadLetter publishes the call's raw bytes to <prefix>.dead.<connection>,
// with the reason in headers.
func (w *Worker) deadLetter(ctx context.Context, in jetstream.Msg, id, conn string, reason *jobs.Error) {
	w.metrics.deadLettered(w.connLabel(conn), reason.Code)
	msg := nats.NewMsg(w.subj.Dead(conn))
	msg.Data = in.Data()
	msg.Header.Set(jobs.HeaderMsgID, id)
	msg.Header.Set(jobs.HeaderCallID, id)
	msg.Header.Set(jobs.HeaderDeadReason, string(reason.Code)+": "+reason.Message)
	msg.Header.Set("Mtlsrelay-Original-Subject", in.Subject())
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, msg); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Msg("could not publish dead letter")
	}
}

func logResult(log zerolog.Logger, res *jobs.Result) {
	ev := log.Info()
	if res.Error != nil {
		ev = log.Warn().Str("code", string(res.Error.Code)).Str("error", res.Error.Message)
	}
	ev.Bool("ok", res.OK).Int("status", res.Status).Float64("total_ms", res.Timing.TotalMS).Msg("call completed")
}
