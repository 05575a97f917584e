package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/streams"
)

// consume pulls durable calls from queues while slots are free, until ctx
// ends: from the one calls stream in batches, or, with tenants, from each
// tenant's in turn; and from the consumers of its zones in turn. A fixed pool of goroutines, one per slot, runs the
// calls: their stacks, grown deep by TLS and HTTP/2, are kept from call to
// call.
func (w *Worker) consume(ctx context.Context, queues []streams.Queue) {
	concurrency := w.cfg.Worker.Concurrency
	work := make(chan admitted)
	for range concurrency {
		go func() {
			for a := range work {
				w.safeHandle(a.msg)
				w.memory.release(a.bytes)
				w.slots.Release(1)
				w.inflight.Done()
			}
		}()
	}
	// The pool ends once the calls it runs end; Run's shutdown waits for
	// those (w.inflight) within the grace period.
	defer close(work)
	// Only workers of zone default take the calls flows publish; each
	// worker takes those forwarded to its zones.
	var intake, zoned []streams.Queue
	for _, q := range queues {
		switch {
		case q.Zone != "":
			zoned = append(zoned, q)
		case w.serves(jobs.DefaultZone):
			intake = append(intake, q)
		}
	}
	var wg sync.WaitGroup
	for _, q := range zoned {
		wg.Go(func() { w.pullInTurn(ctx, q, work) })
	}
	if len(intake) == 1 {
		// No tenants: the one calls stream, in batches.
		w.pullBatches(ctx, intake[0].Consumer, work)
	} else {
		for _, q := range intake {
			wg.Go(func() { w.pullInTurn(ctx, q, work) })
		}
	}
	wg.Wait()
}

// pausedForResults reports whether results wait for a stream to store
// them, after waiting a little: the pull loops then take no new calls.
// paused is the loop's own flag, so each logs the change once.
func (w *Worker) pausedForResults(ctx context.Context, paused *bool) bool {
	if n := w.resultsWaiting.Load(); n > 0 {
		if !*paused {
			w.log.Warn().Int64("results_waiting", n).
				Msg("results wait for a stream to store them; taking no more calls until they are stored")
			*paused = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return true
	}
	if *paused {
		w.log.Info().Msg("results are stored again; taking calls")
		*paused = false
	}
	return false
}

// pullBatches takes calls from the one calls stream of a relay without
// tenants, in batches as large as the free slots.
func (w *Worker) pullBatches(ctx context.Context, cons jetstream.Consumer, work chan<- admitted) {
	concurrency := w.cfg.Worker.Concurrency
	batchMax := int64(w.cfg.Worker.FetchBatch)
	// Under load slots free up one at a time; a pull per freed slot would
	// cost a request each. Waiting up to a millisecond for a few more slots
	// turns that into one pull per batch. An idle worker has every slot
	// free and pulls at once.
	batchMin := int64(max(1, concurrency/8))
	var pulls pullBackoff
	paused := false
	for ctx.Err() == nil {
		if w.pausedForResults(ctx, &paused) {
			continue
		}
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
			w.pullFailed(ctx, &pulls, err)
			continue
		}
		var got int64
		for msg := range batch.Messages() {
			got++
			if w.stopping.Load() || ctx.Err() != nil {
				// Taken after shutdown began: hand it back at once.
				_ = msg.Nak()
				w.slots.Release(1)
				continue
			}
			w.dispatch(msg, work)
		}
		cancel()
		w.slots.Release(n - got)
		w.pullEnded(ctx, &pulls, got, batch.Error())
	}
}

// fairBatch is how many calls a tenant's pull loop takes at once; each
// then waits for a slot in turn with the other tenants' calls.
const fairBatch = 8

// pullInTurn takes the calls of one queue of a relay with tenants. It
// holds no slot while it waits for calls, so an idle tenant takes nothing
// from a busy one; each call it took then waits for a slot in the
// semaphore's first-come order, one at a time, so while several tenants
// have calls queued the slots go to them in turn: a tenant with 50,000
// calls queued gets its share, not the worker.
func (w *Worker) pullInTurn(ctx context.Context, q streams.Queue, work chan<- admitted) {
	var pulls pullBackoff
	paused := false
	for ctx.Err() == nil {
		if w.pausedForResults(ctx, &paused) {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := q.Consumer.Fetch(min(fairBatch, w.cfg.Worker.FetchBatch), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			w.pullFailed(ctx, &pulls, err)
			continue
		}
		var got int64
		for msg := range batch.Messages() {
			got++
			// Kept alive (InProgress) while it waits for a slot.
			w.held.add(msg)
			if w.stopping.Load() || w.slots.Acquire(ctx, 1) != nil {
				// Taken after shutdown began: hand it back at once.
				w.held.remove(msg)
				_ = msg.Nak()
				continue
			}
			w.dispatch(msg, work)
		}
		cancel()
		w.pullEnded(ctx, &pulls, got, batch.Error())
	}
}

// admitted is a call that holds a slot and its bytes of the memory budget.
type admitted struct {
	msg   jetstream.Msg
	bytes int64
}

// dispatch hands msg, which holds a slot, to the pool when the memory
// budget (worker.max_memory) has room for it; else it gives the slot back
// and hands the call back to wait in JetStream, not in the heap.
func (w *Worker) dispatch(msg jetstream.Msg, work chan<- admitted) {
	n, ok := w.memory.tryAdmit(len(msg.Data()))
	if !ok {
		w.slots.Release(1)
		var delivered uint64 = 1
		if meta, err := msg.Metadata(); err == nil {
			delivered = meta.NumDelivered
		}
		w.handBack(msg, handBackBackoff(delivered))
		return
	}
	w.inflight.Add(1)
	work <- admitted{msg: msg, bytes: n}
}

// pullEnded reads how a pull ended: got calls, and the batch's error.
func (w *Worker) pullEnded(ctx context.Context, pulls *pullBackoff, got int64, berr error) {
	if berr != nil && !isFetchEnd(berr) && ctx.Err() == nil {
		// No responders, a consumer without a leader, a leadership
		// change: pulling at once again would spin.
		w.pullFailed(ctx, pulls, berr)
		return
	}
	if got == 0 && berr != nil {
		// An empty pull that expired says nothing of the consumer: a
		// pull sent to a leader that just died expires the same way.
		return
	}
	if failures, down := pulls.succeeded(time.Now()); failures > 0 {
		w.log.Info().Int("failed_pulls", failures).Dur("for", down.Round(time.Millisecond)).
			Msg("pulling calls works again")
	}
}

// pullFailed waits before the next pull, longer after each failure in a
// row, and logs the first failure of a run: the condition, not each try.
func (w *Worker) pullFailed(ctx context.Context, pulls *pullBackoff, err error) {
	if ctx.Err() != nil {
		return
	}
	delay, first := pulls.failed(time.Now())
	if first {
		w.log.Warn().Err(err).Str("consumer", jobs.ConsumerWorkers).
			Msg("pulling calls fails; trying again with backoff until the consumer answers (a NATS node lost, a leader election, NATS down)")
	} else {
		w.log.Debug().Err(err).Dur("retry_in", delay).Msg("pulling calls still fails")
	}
	select {
	case <-ctx.Done():
	case <-time.After(delay):
	}
}

// pullBackoff paces the pull loop while pulls fail: from 100 ms, doubling
// to at most 5 s, with equal jitter so a fleet of workers does not pull in
// step when the consumer's new leader comes up.
type pullBackoff struct {
	failures int
	since    time.Time
}

// failed records a failed pull at now and returns how long to wait before
// the next, and whether it is the first failure since pulls last worked.
func (b *pullBackoff) failed(now time.Time) (delay time.Duration, first bool) {
	if b.failures == 0 {
		b.since = now
	}
	b.failures++
	return pullRetry.backoff(b.failures), b.failures == 1
}

// pullRetry paces failed pulls: from 100 ms, doubling to at most 5 s.
var pullRetry = retryPolicy{base: 100 * time.Millisecond, max: 5 * time.Second}

// succeeded records a pull that worked at now. It returns how many pulls
// had failed in a row before, and for how long; 0 when none had.
func (b *pullBackoff) succeeded(now time.Time) (failures int, down time.Duration) {
	failures, down = b.failures, now.Sub(b.since)
	b.failures = 0
	if failures == 0 {
		down = 0
	}
	return failures, down
}

// safeHandle runs handleDurable and survives a defect in it: the call is
// handed back (it is not lost), the panic's type is logged (its value may
// hold call data), and the pool goroutine lives on.
func (w *Worker) safeHandle(msg jetstream.Msg) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Str("panic_type", fmt.Sprintf("%T", p)).Str("subject", msg.Subject()).
				Msg("handling a call panicked; handed back for redelivery")
			w.handBack(msg, time.Second)
		}
	}()
	w.handleDurable(msg)
}

func isFetchEnd(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat)
}

// handBackBackoff is the least delay of a hand-back at delivery n: 100 ms
// more per delivery up to 30 s, and as much again at most in jitter. With
// worker.max_deliver 1000, a call handed back at every delivery ends after
// about ten hours.
func handBackBackoff(n uint64) time.Duration {
	return jitter(min(time.Duration(n)*100*time.Millisecond, 30*time.Second))
}

// handBack returns msg to JetStream, to be delivered again after delay (at
// once when 0). The call is no longer held: InProgress stops for it.
func (w *Worker) handBack(msg jetstream.Msg, delay time.Duration) {
	w.held.remove(msg)
	// A Nak that NATS loses (a leader election) is as good as one that
	// arrives late: the call comes back after AckWait instead.
	if delay > 0 {
		_ = msg.NakWithDelay(delay)
	} else {
		_ = msg.Nak()
	}
}

// acknowledge ends msg: its call is over and its result stored.
func (w *Worker) acknowledge(ctx context.Context, msg jetstream.Msg) {
	w.held.remove(msg)
	// An ack that NATS loses brings the call back after AckWait; recall
	// then finds its stored result and acknowledges again without calling
	// the partner.
	if err := msg.Ack(); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("ack failed; the redelivery will find the stored result")
	}
}

// handleDurable processes one delivery of a durable call: decode, attempt,
// then retry through NakWithDelay or publish the final result and ack. From
// the moment it is taken until it is acknowledged or handed back, the call
// is held: kept alive with InProgress, also while its result waits for a
// stream that elects a new leader.
func (w *Worker) handleDurable(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Msg("message without JetStream metadata; terminating it")
		_ = msg.Term()
		return
	}
	w.held.add(msg)
	queued := time.Since(meta.Timestamp)
	if fromZones(meta) {
		queued = time.Since(enqueuedAt(msg.Headers(), meta))
	}
	tenant, conn := w.subj.Route(msg.Subject())
	call, derr := jobs.DecodeCall(msg.Data(), conn)
	if call != nil {
		call.Tenant = tenant
	}
	if derr == nil {
		derr = checkNotReplayed(msg.Headers())
	}
	if derr == nil {
		derr = w.checkTenant(call)
	}
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

	// Only the delivery that holds a forwarded call may end it, even by
	// rejecting it (a worker whose tenants or reply prefixes differ).
	if call != nil && !w.claimed(ctx, msg, call, meta) {
		return
	}
	if derr != nil {
		w.reject(ctx, msg, call, derr, meta)
		return
	}
	if call.ReplyTo == "" {
		w.reject(ctx, msg, call, jobs.Errorf(jobs.CodeInvalidCall,
			"durable call has no reply_to, so its result could not be delivered; set reply_to (for example %s)", w.subj.Result(call.ID)), meta)
		return
	}
	if err := w.checkReply(call.ReplyTo, call.Tenant); err != nil {
		w.reject(ctx, msg, call, err, meta)
		return
	}
	if zone, foreign := w.foreignZone(call.Tenant, call.Connection); foreign {
		w.forward(ctx, msg, call, zone, meta, "")
		return
	}

	attemptNo, done := w.recall(ctx, msg, call, meta)
	if done {
		return
	}
	var beforeSend func() error
	if !call.IsIdempotent() {
		// Recorded before the request leaves: if this worker dies now, the
		// redelivery knows the partner may have seen it and does not repeat it.
		beforeSend = func() error {
			return w.state.put(ctx, call.Tenant, call.ID, callState{Attempts: attemptNo - 1, Inflight: true})
		}
	}

	actx, cancel := context.WithCancel(ctx)
	ao := w.attempt(actx, call, attemptNo, queued, attemptOptions{beforeSend: beforeSend})
	cancel()

	last := int(meta.NumDelivered) >= w.maxDeliver
	if ao.handback > 0 && last {
		// JetStream will not deliver it again: end it here.
		log.Warn().Uint64("deliveries", meta.NumDelivered).Msg("connection still saturated at the call's last delivery; the call ends")
		res := jobs.FailedResult(call, jobs.Errorf(jobs.CodeMaxDeliveries,
			"connection %s stayed saturated or rate-limited through %d deliveries of this call (worker.max_deliver), so it was never attempted; send it again later, or raise the connection's max_conns or rate_limit",
			call.Connection, meta.NumDelivered))
		res.Attempt, res.Worker = attemptNo-1, w.Name()
		w.complete(ctx, msg, call, res)
		return
	}
	if ao.handback > 0 {
		// No attempt was made: record that, so the redelivery does not
		// count this delivery as one.
		if err := w.state.put(ctx, call.Tenant, call.ID, callState{Attempts: attemptNo - 1}); err != nil {
			log.Warn().Err(err).Msg("could not record a hand-back")
		}
		// Hand-backs count as deliveries: wait longer after each, so a
		// saturated connection takes hours, not seconds, to use them up.
		delay := max(ao.handback, handBackBackoff(meta.NumDelivered))
		log.Debug().Dur("retry_in", delay).Msg("connection saturated or rate-limited; call handed back")
		w.handBack(msg, delay)
		return
	}
	res := ao.Result
	if w.callCtx.Err() != nil && (res.Error == nil || res.Error.Code == jobs.CodeCanceled || res.Error.Code == jobs.CodeTimeout) {
		// Cut short by shutdown: hand the call back rather than report it.
		// A non-idempotent call keeps its in-flight marker: the partner may
		// have seen it, so the redelivery reports outcome_unknown.
		log.Info().Msg("call interrupted by shutdown; handed back")
		w.handBack(msg, 0)
		return
	}
	attempts := maxAttempts(call, ao.conn)
	if retry, delay := w.retry.decide(call, ao.Outcome, attemptNo, attempts); retry && !last {
		w.callRetried(ctx, call.Connection, res, delay)
		if call.Progress {
			w.publishProgress(ctx, call, res, delay, msg.Headers())
		}
		if err := w.state.put(ctx, call.Tenant, call.ID, callState{Attempts: attemptNo}); err != nil {
			log.Warn().Err(err).Msg("could not record the attempt; the retry may count it twice")
		}
		ev := log.Info().Int("status", res.Status).Dur("retry_in", delay)
		if res.Error != nil {
			ev = ev.Str("code", string(res.Error.Code))
		}
		ev.Msg("attempt failed; retrying")
		w.handBack(msg, delay)
		return
	}
	finalize(res, attempts)
	w.complete(ctx, msg, call, res)
}

// recall reads what earlier deliveries of call did, when it matters: on a
// redelivery, and for every non-idempotent call (its id may have completed
// already). It returns the attempt number to make, or done when the call
// needs nothing more (already completed, its result kept from a delivery
// that could not publish it, or its outcome is unknown and was reported).
func (w *Worker) recall(ctx context.Context, msg jetstream.Msg, call *jobs.Call, meta *jetstream.MsgMetadata) (attempt int, done bool) {
	deliveries := int(meta.NumDelivered)
	// A forwarded call may have had attempts in the zone it came from, or
	// even completed there with an ack that NATS lost.
	forwarded := fromZones(meta)
	if deliveries <= 1 && call.IsIdempotent() && !forwarded {
		return 1, false
	}
	log := zerolog.Ctx(ctx)
	if deliveries > 1 || forwarded {
		// A redelivery may follow an ack that NATS lost (a leader
		// election, a worker that died between storing the result and
		// acking): then the result is stored already.
		enqueued := meta.Timestamp
		if forwarded {
			enqueued = enqueuedAt(msg.Headers(), meta)
		}
		stored, err := w.storedResult(ctx, call, enqueued)
		if err != nil {
			log.Warn().Err(err).Msg("could not look for the call's stored result; handing it back")
			w.handBack(msg, jitter(time.Second))
			return 0, true
		}
		if stored != nil {
			log.Info().Msg("the call's result is stored already; acknowledged without calling the partner again")
			w.settle(ctx, msg, call, stored, true)
			return 0, true
		}
	}
	st, err := w.state.get(ctx, call.Tenant, call.ID)
	if err != nil {
		log.Warn().Err(err).Msg("could not read the call's state; handing it back")
		w.handBack(msg, jitter(time.Second))
		return 0, true
	}
	if st == nil {
		// Nothing recorded: every earlier delivery may have been an attempt
		// (a worker died before it could record anything).
		return deliveries, false
	}
	if st.Done {
		log.Info().Msg("call already completed; acknowledged without calling the partner again")
		w.acknowledge(ctx, msg)
		return 0, true
	}
	if st.Result != nil && st.ResultSeq == meta.Sequence.Stream {
		res, err := jobs.DecodeResult(st.Result)
		if err == nil {
			log.Info().Msg("publishing the result an earlier delivery could not publish, without calling the partner again")
			w.complete(ctx, msg, call, res)
			return 0, true
		}
		log.Warn().Err(err).Msg("the kept result does not decode")
	}
	if st.Inflight {
		res := jobs.FailedResult(call, jobs.Errorf(jobs.CodeOutcomeUnknown,
			"worker %s stopped while this non-idempotent %s may have reached the partner; it is not repeated: check with the partner whether it took effect",
			st.Worker, call.Method))
		res.Attempt, res.Worker = st.Attempts+1, w.Name()
		w.complete(ctx, msg, call, res)
		return 0, true
	}
	return st.Attempts + 1, false
}

// complete publishes the final result of call and, once it is stored,
// finishes the call. A result kept in MTLSRELAY_RESULTS goes through the
// result window: the goroutine is free for the next call while JetStream
// acknowledges it, and the call is acknowledged after that; while no
// stream answers, it is published again (publishJetStream). Any other
// reply subject gets a core publish (see publishResult).
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
	// Until the stream acks it the window holds the result's encoding; the
	// body need not stay alive beside it, which halves what a call holds
	// meanwhile. A path that needs the body again (keeping the result,
	// moving the body, a dead letter that may fail) decodes the encoding.
	full := res
	res = withoutBody(res)
	if res != full && (res.Error != nil || !call.IsIdempotent()) {
		res = full
	}
	w.results.Publish(out, func(err error) {
		if err != nil && res.BodyRef == nil && res.Body == "" && res.BodyBase64 == nil {
			if decoded, derr := jobs.DecodeResult(out.Data); derr == nil {
				res = decoded
			}
		}
		if err == nil && call.IsIdempotent() && res.Error == nil {
			// Nothing left that waits on NATS: finish on the ack's goroutine.
			w.finish(ctx, msg, call, res, nil)
			w.inflight.Done()
			return
		}
		go func() {
			defer w.inflight.Done()
			if err != nil && !neverPublishable(err) {
				zerolog.Ctx(ctx).Warn().Err(err).Str("fault", classifyPublish(err).String()).
					Msg("result not acknowledged by a stream; publishing it again")
				// While results wait for a stream, the pull loop takes no
				// more calls: their results would wait too.
				w.resultsWaiting.Add(1)
				_, err = w.publishJetStream(ctx, out, w.patience)
				w.resultsWaiting.Add(-1)
			}
			w.finish(ctx, msg, call, res, err)
		}()
	})
}

// withoutBody returns res without its inline body (the same res when it
// has none).
func withoutBody(res *jobs.Result) *jobs.Result {
	if res.Body == "" && res.BodyBase64 == nil {
		return res
	}
	slim := *res
	slim.Body, slim.BodyBase64 = "", nil
	return &slim
}

// finish ends a call whose result was published (err nil): see settle. A
// result that can never be published (too large for NATS) is replaced by a
// small one that says so; should even that not fit, the call ends with its
// dead letter alone. When the result could not be published for a reason
// that may pass, the result is kept in the call's state and the call is
// handed back: the redelivery publishes the kept result.
func (w *Worker) finish(ctx context.Context, msg jetstream.Msg, call *jobs.Call, res *jobs.Result, err error) {
	log := zerolog.Ctx(ctx)
	if neverPublishable(err) && (res.Body != "" || res.BodyBase64 != nil) {
		// The body fit the inline bound but its encoding did not (JSON
		// escapes a control character in six bytes): the body goes to the
		// Object Store, and the result names it.
		moved, merr := w.moveBody(ctx, call, res)
		if merr == nil {
			log.Warn().Err(err).Msg("the result is too large for NATS with its body inline; the body went to the Object Store")
			w.complete(ctx, msg, call, moved)
			return
		}
		log.Error().Err(merr).Msg("the result is too large for NATS, and its body could not go to the Object Store")
	}
	switch {
	case err == nil:
		w.settle(ctx, msg, call, res, false)
	case neverPublishable(err) && !withoutResponse(res):
		log.Error().Err(err).Msg("the result is too large for NATS; publishing a result without the response instead")
		data, _ := jobs.EncodeResult(res)
		w.complete(ctx, msg, call, tooLargeResult(res, len(data), w.maxPayload()))
	case neverPublishable(err) && res.Metadata != nil:
		log.Error().Err(err).Msg("the result is too large for NATS even without the response; publishing it without the call's metadata")
		trimmed := *res
		trimmed.Metadata = nil
		w.complete(ctx, msg, call, &trimmed)
	case neverPublishable(err):
		log.Error().Err(err).Msg("no result of this call fits in a NATS message; it ends with its dead letter only")
		w.settle(ctx, msg, call, res, false)
	default:
		log.Error().Err(err).Msg("could not publish the result; the call is handed back and its result kept for the redelivery")
		w.keepResult(ctx, msg, call, res)
		w.handBack(msg, w.retry.backoff(1))
	}
}

// settle ends a call whose final result res is stored (or, for a result
// too large for NATS, can never be): a dead letter for a failure, metrics,
// the call recorded as done, the ack. A dead letter that cannot be stored
// hands the call back instead of acking it, with the result kept: the
// redelivery stores the dead letter without calling the partner again.
// replay marks a call settled again on a redelivery: the delivery that
// stored its result may have counted it already.
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, call *jobs.Call, res *jobs.Result, replay bool) {
	log := zerolog.Ctx(ctx)
	if res.Error != nil {
		if err := w.deadLetter(ctx, msg, call.ID, call.Connection, res.Error); err != nil {
			log.Error().Err(err).Msg("could not store the dead letter; the call is handed back with its result kept")
			w.keepResult(ctx, msg, call, res)
			w.handBack(msg, w.retry.backoff(1))
			return
		}
	}
	if !replay {
		w.metrics.finished(w.connLabel(call.Connection), res)
	}
	if !call.IsIdempotent() {
		sctx, cancel := stateContext(ctx)
		defer cancel()
		if err := w.state.put(sctx, call.Tenant, call.ID, callState{Attempts: res.Attempt, Done: true}); err != nil {
			log.Warn().Err(err).Msg("could not record the call as done; a redelivery finds its stored result instead")
		}
	}
	w.acknowledge(ctx, msg)
	if !replay {
		logResult(*log, res)
	}
}

// keepResult records res in the call's state, tied to this call's stream
// sequence, so that its redelivery publishes it instead of calling the
// partner again (and a call that uses the id again later does not get it).
// A non-idempotent call keeps its in-flight marker beside it. It is best
// effort: a result larger than NATS takes in one message, or a state
// bucket that is down too, leaves the redelivery to call again (an
// idempotent call) or to report outcome_unknown (a non-idempotent one).
func (w *Worker) keepResult(ctx context.Context, msg jetstream.Msg, call *jobs.Call, res *jobs.Result) {
	log := zerolog.Ctx(ctx)
	meta, err := msg.Metadata()
	if err != nil {
		log.Warn().Err(err).Msg("could not keep the unpublished result; the redelivery makes the call again")
		return
	}
	data, err := jobs.EncodeResult(res)
	if err == nil {
		// Shutdown may have canceled ctx: keeping the result is what lets
		// the redelivery do without the partner.
		sctx, cancel := stateContext(ctx)
		defer cancel()
		err = w.state.put(sctx, call.Tenant, call.ID, callState{
			Attempts: res.Attempt, Inflight: !call.IsIdempotent(), Result: data, ResultSeq: meta.Sequence.Stream,
		})
	}
	if err != nil {
		log.Warn().Err(err).Msg("could not keep the unpublished result; the redelivery makes the call again")
	}
}

// stateContext bounds a call-state write that must happen even when ctx
// was canceled by shutdown.
func stateContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), resultTimeout)
}

// reject ends a call that cannot be processed: a result when it has a usable
// reply_to, a dead letter with the raw bytes always, and Term so it is
// never delivered again. When either cannot be stored, the call is handed
// back instead, to be rejected again.
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
	// A result goes only where results may go: a refused reply_to gets
	// the dead letter alone, and nothing is published there.
	if call != nil && call.ReplyTo != "" && w.checkReply(call.ReplyTo, call.Tenant) == nil {
		res := jobs.FailedResult(call, jerr)
		res.Attempt, res.Worker = int(meta.NumDelivered), w.Name()
		if perr := w.publishResult(ctx, call, res, msg.Headers()); perr != nil && !neverPublishable(perr) {
			log.Error().Err(perr).Msg("could not publish the rejection result; the call is handed back")
			w.handBack(msg, w.retry.backoff(1))
			return
		} else if perr != nil {
			log.Error().Err(perr).Msg("the rejection result is too large for NATS; only the dead letter is stored")
		}
	}
	if derr := w.deadLetter(ctx, msg, id, conn, jerr); derr != nil {
		log.Error().Err(derr).Msg("could not store the dead letter of a rejected call; the call is handed back")
		w.handBack(msg, w.retry.backoff(1))
		return
	}
	w.callFinished(ctx, conn, &jobs.Result{ID: id, Error: jerr, Attempt: int(meta.NumDelivered)})
	w.held.remove(msg)
	_ = msg.TermWithReason(string(jerr.Code))
}

// checkTenant refuses a call its tenant may not make, as if its connection
// did not exist: a v1 call (no tenant) while tenants are configured, a
// tenant the config does not name, or a connection outside the tenant's
// list. Without tenants configured, only v1 calls are taken.
// checkNotReplayed refuses a call that is a stored message replayed onto
// a calls subject: a flow may name any reply subject on a JetStream API
// request, the server publishes its answer there in the account's name,
// and a direct get answers with the message itself. One tenant could so
// put a message of its own stream onto another tenant's calls subject.
func checkNotReplayed(h nats.Header) error {
	if k := jobs.Replayed(h); k != "" {
		return jobs.Errorf(jobs.CodeInvalidCall, "the message carries %s: it is a stored message a JetStream server replayed onto a calls subject, not a call a flow published", k)
	}
	return nil
}

func (w *Worker) checkTenant(call *jobs.Call) error {
	if len(w.tenants) == 0 && call.Tenant == "" {
		return nil
	}
	t, ok := w.tenants[call.Tenant]
	if !ok || !t.Allows(call.Connection) {
		return catalog.UnknownConnection(call.Connection)
	}
	return nil
}

// checkReply applies the rule of where results may go (jobs.CheckReply)
// with the worker's reply prefixes and tenants.
func (w *Worker) checkReply(subject, tenant string) *jobs.Error {
	return w.subj.CheckReply(subject, tenant, w.replyPrefixes, w.tenantNames)
}
