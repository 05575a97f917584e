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

// What a JetStream publish's failure means for a call. SPEC.md promises
// that a call is acknowledged only once its result is stored, so an error
// is never taken for success: each kind below leads to one decision.
type publishFault int

const (
	// faultNoAnswer: no stream answered in time. No responders, no stream
	// response, a timeout, a connection that is reconnecting, a result
	// window that stays full: this is what a stream says while its Raft
	// group elects a new leader after losing a node, and it passes within
	// seconds. Retried with backoff for as long as resultPatience.
	faultNoAnswer publishFault = iota
	// faultRefused: the stream answered with an error (sealed, full with
	// DiscardNew, an expectation that failed): it will not pass until an
	// operator acts. Retried for refusedPatience, then the call is handed
	// back to JetStream.
	faultRefused
	// faultTooLarge: the message exceeds the server's max_payload or the
	// stream's max_msg_size. It never passes: not retried.
	faultTooLarge
)

func (f publishFault) String() string {
	switch f {
	case faultNoAnswer:
		return "no stream answered"
	case faultRefused:
		return "the stream refused it"
	case faultTooLarge:
		return "too large"
	}
	return fmt.Sprintf("publishFault(%d)", int(f))
}

// jsClusterNotAvailable is nats-server's JSClusterNotAvailErr, "JetStream
// system temporarily unavailable" (server/errors.json).
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// classifyPublish says which kind of failure err, returned by a JetStream
// publish, is.
func classifyPublish(err error) publishFault {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return faultTooLarge
	case errors.As(err, &apiErr):
		switch {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return faultTooLarge
		case apiErr.ErrorCode == jsClusterNotAvailable:
			// The cluster is between meta leaders.
			return faultNoAnswer
		}
		return faultRefused
	}
	// Everything else is the absence of an answer: nats.ErrNoResponders,
	// jetstream.ErrNoStreamResponse, timeouts, reconnects, a full window
	// (pubwindow.ErrFull), jetstream.ErrAsyncPublishTimeout.
	return faultNoAnswer
}

// neverPublishable reports whether err says the message can never be
// published as it is.
func neverPublishable(err error) bool {
	return err != nil && classifyPublish(err) == faultTooLarge
}

const (
	// resultTimeout bounds the wait for JetStream's ack of one publish, and
	// a publish's wait for room in the full result window
	// (internal/pubwindow): at most max(concurrency, 64) results await
	// their acks at once.
	resultTimeout = 5 * time.Second
	// resultPatience is how long a result or a dead letter is published
	// again while no stream answers, before its call is handed back. A
	// stream's Raft group elects a new leader within about 20 s of losing
	// one (nats-server: 10 s to notice a lost quorum, a 4-9 s election),
	// and the client's reconnect adds its own; the call is kept alive
	// with InProgress all the while.
	resultPatience = 90 * time.Second
	// refusedPatience is how long a publish the stream refused is tried
	// again before its call is handed back.
	refusedPatience = 2 * time.Second
)

// publishBackoff is the delay before publish try number try+1: from 100 ms,
// doubling to at most 2 s, with the equal jitter of retryPolicy so the
// results of many calls do not come back at once.
func publishBackoff(try int) time.Duration { return publishRetry.backoff(try) }

var publishRetry = retryPolicy{base: 100 * time.Millisecond, max: 2 * time.Second}

// publishJetStream publishes msg and waits for a stream's ack, with the
// worker's JetStream context: see publishUntilStored. patience 0 makes
// one try.
func (w *Worker) publishJetStream(ctx context.Context, msg *nats.Msg, patience time.Duration) (*jetstream.PubAck, error) {
	return publishUntilStored(ctx, w.pub, msg, publishPolicy{
		noAnswer: patience,
		refused:  min(patience, refusedPatience),
		backoff:  publishBackoff,
		timeout:  resultTimeout,
	})
}

// publisher is the part of jetstream.JetStream that publishes.
type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// resultWindow publishes results without waiting for each ack
// (*pubwindow.Window); done runs once with nil or the publish's error.
type resultWindow interface {
	Publish(msg *nats.Msg, done func(error))
}

// lastMsgReader is the part of jetstream.Stream that reads the last
// message on a subject.
type lastMsgReader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// maxPayload is the largest message the NATS server takes, 0 when unknown.
func (w *Worker) maxPayload() int64 {
	if w.nc == nil {
		return 0
	}
	return w.nc.MaxPayload()
}

// publishPolicy says how long a publish is tried again, by kind of fault.
type publishPolicy struct {
	// noAnswer is how long to keep trying while no stream answers.
	noAnswer time.Duration
	// refused is how long to keep trying while the stream refuses.
	refused time.Duration
	// backoff is the delay before try number try+1.
	backoff func(try int) time.Duration
	// timeout bounds the wait for one ack.
	timeout time.Duration
}

// publishUntilStored publishes msg and waits for a stream's ack (a
// PubAck): only that is success. It publishes msg again, with the same
// Nats-Msg-Id so that a stored copy is not stored twice, while no stream
// answers and pol.noAnswer lasts, or while the stream refuses it and
// pol.refused lasts. A message too large for NATS is not tried again, and
// its error says so (neverPublishable).
func publishUntilStored(ctx context.Context, js publisher, msg *nats.Msg, pol publishPolicy) (*jetstream.PubAck, error) {
	start := time.Now()
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, pol.timeout)
		ack, err := js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return ack, nil
		}
		fault := classifyPublish(err)
		if fault == faultTooLarge {
			return nil, fmt.Errorf("publish to %s: %w", msg.Subject, err)
		}
		limit := pol.noAnswer
		if fault == faultRefused {
			limit = pol.refused
		}
		delay := pol.backoff(try)
		if time.Since(start)+delay > limit {
			return nil, fmt.Errorf("publish to %s: %s after %d tries in %s: %w",
				msg.Subject, fault, try, time.Since(start).Round(time.Millisecond), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish to %s: %w (last try: %w)", msg.Subject, ctx.Err(), err)
		case <-time.After(delay):
		}
	}
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
	return w.send(ctx, msg, w.patience)
}

// send publishes msg: through JetStream, waiting for a stream's ack with
// the patience publishJetStream takes, when MTLSRELAY_RESULTS keeps its
// subject; else with a core publish (see publishResult).
//
// That is the rule for every reply subject, on purpose: a subject under
// <prefix>.results. is captured by a stream of ours, so "no stream
// answered" means a stream without a leader and never success; any other
// subject (a flow's inbox) is delivered at most once, to whoever listens
// when it is published, as a NATS request's reply is.
func (w *Worker) send(ctx context.Context, msg *nats.Msg, patience time.Duration) error {
	if !w.subj.IsResult(msg.Subject) {
		return w.nc.PublishMsg(msg)
	}
	_, err := w.publishJetStream(ctx, msg, patience)
	return err
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
		out.Header.Set(jobs.HeaderMsgID, jobs.ProgressMsgID(jobs.ResultMsgID(call.Tenant, call.ID), p.Attempt))
		out.Header.Set(jobs.HeaderProgress, strconv.Itoa(p.Attempt))
		err = w.send(ctx, out, 0)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Int("attempt", p.Attempt).Msg("could not publish the progress message; the call is retried all the same")
	}
}

// resultMsg is the message carrying res to the call's reply_to, with
// Nats-Msg-Id set to the call id (<tenant>.<id> for a tenant's call) and
// the trace context of in.
func (w *Worker) resultMsg(ctx context.Context, call *jobs.Call, res *jobs.Result, in nats.Header) (*nats.Msg, error) {
	data, err := jobs.EncodeResult(res)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(call.ReplyTo)
	msg.Data = data
	msg.Header.Set(jobs.HeaderMsgID, jobs.ResultMsgID(call.Tenant, call.ID))
	msg.Header.Set(jobs.HeaderCallID, call.ID)
	w.injectTrace(ctx, msg.Header, in)
	return msg, nil
}

// deadLetter stores the call's raw bytes on <prefix>.dead.<connection>,
// with the reason in headers, and waits for MTLSRELAY_DEAD's ack with the
// patience of a result. Its Nats-Msg-Id is the call id, so a dead letter
// stored again by a redelivery is stored once. One too large for NATS is
// logged and skipped (nil): it never could be stored, and the call ends.
func (w *Worker) deadLetter(ctx context.Context, in jetstream.Msg, id, conn string, reason *jobs.Error) error {
	return w.deadLetterRaw(ctx, in.Data(), in.Subject(), id, conn, reason)
}

// deadLetterRaw is deadLetter for a call's raw bytes, published on subject.
func (w *Worker) deadLetterRaw(ctx context.Context, data []byte, subject, id, conn string, reason *jobs.Error) error {
	msg := nats.NewMsg(w.subj.Dead(conn))
	msg.Data = data
	// A tenant's dead letters have ids of their own, as its results do.
	tenant, _ := w.subj.Route(subject)
	msg.Header.Set(jobs.HeaderMsgID, jobs.ResultMsgID(tenant, id))
	msg.Header.Set(jobs.HeaderCallID, id)
	msg.Header.Set(jobs.HeaderDeadReason, string(reason.Code)+": "+reason.Message)
	msg.Header.Set("Mtlsrelay-Original-Subject", subject)
	ack, err := w.publishJetStream(ctx, msg, w.patience)
	if neverPublishable(err) {
		// It never will be: the call ends without one, rather than never.
		zerolog.Ctx(ctx).Error().Err(err).Msg("the dead letter is too large for NATS; the call ends without one")
		return nil
	}
	if err != nil {
		return err
	}
	if !ack.Duplicate {
		// A dead letter stored again by a redelivery is counted once.
		w.metrics.deadLettered(w.connLabel(conn), reason.Code)
	}
	return nil
}

// storedResult returns the final result of call that MTLSRELAY_RESULTS
// already keeps on its reply_to, or nil when there is none: a reply_to
// outside the stream, no message on it, the last one another call's, a
// progress message, or one stored well before the call was enqueued (an
// id used again after the duplicate window). An error means it cannot
// tell.
func (w *Worker) storedResult(ctx context.Context, call *jobs.Call, enqueued time.Time) (*jobs.Result, error) {
	if !w.subj.IsResult(call.ReplyTo) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resultTimeout)
	defer cancel()
	s, err := w.resultsStream(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, call.ReplyTo)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last message on %s: %w", call.ReplyTo, err)
	}
	// The two times come from two servers' clocks (the leaders of the
	// calls and the results streams): a minute's leeway keeps a small skew
	// from hiding a genuine result, and a call id used again is at least
	// the duplicate window (2 min) younger than its earlier result.
	if m.Header.Get(jobs.HeaderCallID) != call.ID || m.Header.Get(jobs.HeaderProgress) != "" || m.Time.Before(enqueued.Add(-time.Minute)) {
		return nil, nil
	}
	res, err := jobs.DecodeResult(m.Data)
	if err != nil {
		return nil, fmt.Errorf("the stored result on %s does not decode: %w", call.ReplyTo, err)
	}
	return res, nil
}

// resultsStream returns MTLSRELAY_RESULTS, looked up once.
func (w *Worker) resultsStream(ctx context.Context) (lastMsgReader, error) {
	w.resultsMu.Lock()
	defer w.resultsMu.Unlock()
	if w.resultsS == nil {
		s, err := w.js.Stream(ctx, jobs.StreamResults)
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", jobs.StreamResults, err)
		}
		w.resultsS = s
	}
	return w.resultsS, nil
}

// tooLargeResult is what a flow gets instead of res when res is larger
// than NATS takes in one message: the partner's status and the call's
// echo, no headers or body, and a response_too_large error that says
// what to change.
func tooLargeResult(res *jobs.Result, size int, maxPayload int64) *jobs.Result {
	out := *res
	out.Headers, out.Body, out.BodyBase64, out.SOAPFault = nil, "", nil, nil
	out.OK = false
	out.Error = jobs.Errorf(jobs.CodeResponseTooLarge,
		"the result of this call is %d bytes, more than the NATS server takes in one message (max_payload %d bytes); the partner answered HTTP %d: lower the connection's max_response_bytes below that, or raise the server's max_payload",
		size, maxPayload, res.Status)
	return &out
}

// withoutResponse reports whether res carries no response headers or body:
// there is nothing left to trim.
func withoutResponse(res *jobs.Result) bool {
	return res.Headers == nil && res.Body == "" && res.BodyBase64 == nil && res.SOAPFault == nil
}

func logResult(log zerolog.Logger, res *jobs.Result) {
	ev := log.Info()
	if res.Error != nil {
		ev = log.Warn().Str("code", string(res.Error.Code)).Str("error", res.Error.Message)
	}
	ev.Bool("ok", res.OK).Int("status", res.Status).Float64("total_ms", res.Timing.TotalMS).Msg("call completed")
}
