package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// consume pulls durable calls while slots are free, until ctx ends.
func (w *Worker) consume(ctx context.Context, cons jetstream.Consumer) {
	batchMax := int64(w.cfg.Worker.FetchBatch)
	errDelay := 100 * time.Millisecond
	for ctx.Err() == nil {
		// Wait for one free slot, then take every other free one (up to the
		// batch size): the pull asks for as many calls as can start now.
		if err := w.slots.Acquire(ctx, 1); err != nil {
			return
		}
		n := int64(1)
		for n < batchMax && w.slots.TryAcquire(1) {
			n++
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
			go func() {
				defer w.inflight.Done()
				defer w.slots.Release(1)
				w.handleDurable(msg)
			}()
		}
		cancel()
		w.slots.Release(n - got)
		if err := batch.Error(); err != nil && !isFetchEnd(err) && ctx.Err() == nil {
			w.log.Warn().Err(err).Msg("pull request ended with an error")
		}
	}
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
	attemptNo := int(meta.NumDelivered)
	queued := time.Since(meta.Timestamp)
	call, derr := jobs.DecodeCall(msg.Data(), w.subj.ConnectionOf(msg.Subject()))
	log := w.log.With().Uint64("stream_seq", meta.Sequence.Stream).Int("attempt", attemptNo).Logger()
	if call != nil {
		log = log.With().Str("call_id", call.ID).Str("connection", call.Connection).Logger()
	}
	ctx := log.WithContext(w.callCtx)

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

	stopKeepAlive := w.keepAlive(msg)
	actx, cancel := context.WithCancel(ctx)
	out, conn := w.attempt(actx, call, attemptNo, queued)
	cancel()
	stopKeepAlive()

	res := out.Result
	if w.callCtx.Err() != nil && (res.Error == nil || res.Error.Code == jobs.CodeCanceled || res.Error.Code == jobs.CodeTimeout) {
		// Cut short by shutdown: hand the call back rather than report it.
		log.Info().Msg("call interrupted by shutdown; handed back")
		_ = msg.Nak()
		return
	}
	maxAttempts := DefaultMaxAttempts
	if conn != nil {
		maxAttempts = conn.Attempts(call)
	} else if call.MaxAttempts > 0 {
		maxAttempts = call.MaxAttempts
	}
	if retry, delay := w.retry.decide(call, out, attemptNo, maxAttempts); retry {
		ev := log.Info().Int("status", res.Status).Dur("retry_in", delay)
		if res.Error != nil {
			ev = ev.Str("code", string(res.Error.Code))
		}
		ev.Msg("attempt failed; retrying")
		_ = msg.NakWithDelay(delay)
		return
	}
	finalize(res, maxAttempts)
	if err := w.publishResult(ctx, call, res, msg.Headers()); err != nil {
		log.Error().Err(err).Msg("could not publish the result; the call will be redelivered")
		_ = msg.NakWithDelay(w.retry.backoff(1))
		return
	}
	if res.Error != nil {
		w.deadLetter(ctx, msg, call.ID, call.Connection, res.Error)
	}
	if err := msg.Ack(); err != nil {
		log.Warn().Err(err).Msg("ack failed; a redelivery will be de-duplicated by call id")
	}
	logResult(log, res)
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

// keepAlive tells JetStream the call is still being worked on every third of
// AckWait, so a long call is not redelivered to another worker.
func (w *Worker) keepAlive(msg jetstream.Msg) (stop func()) {
	every := w.streams.ConsumerConfig().AckWait / 3
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// publishResult publishes res to the call's reply_to with Nats-Msg-Id set to
// the call id. It waits for JetStream's ack when a stream keeps the subject;
// a subject no stream keeps is delivered to its core subscribers by the same
// publish.
func (w *Worker) publishResult(ctx context.Context, call *jobs.Call, res *jobs.Result, in nats.Header) error {
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(call.ReplyTo)
	msg.Data = data
	msg.Header.Set(jobs.HeaderMsgID, call.ID)
	msg.Header.Set(jobs.HeaderCallID, call.ID)
	if tp := in.Get(jobs.HeaderTraceparent); tp != "" {
		msg.Header.Set(jobs.HeaderTraceparent, tp)
	}
	var lastErr error
	for i := range 5 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := w.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		lastErr = err
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
