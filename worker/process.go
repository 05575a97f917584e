package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// executor makes one attempt of a call over mutual TLS: the worker's only
// way to the executor. *outbound.Executor is the real one; unit tests fake
// it.
type executor interface {
	// AttemptOn makes one attempt of call on conn with the profile's
	// material, on lane's connection pools, and classifies its outcome;
	// it never returns a nil Result.
	AttemptOn(ctx context.Context, lane outbound.Lane, call *jobs.Call, conn *catalog.Connection, mat *secrets.Material) outbound.Outcome
	// Close closes idle pooled connections.
	Close()
}

var _ executor = (*outbound.Executor)(nil)

// attemptOutcome is what one try at a call produced.
type attemptOutcome struct {
	outbound.Outcome
	// conn is the call's connection, nil when it is unknown.
	conn *catalog.Connection
	// handback > 0 means no attempt was made (the connection is saturated
	// or rate-limited, or a marker could not be written): hand the call
	// back for this long.
	handback time.Duration
}

// attemptOptions tune one try at a call.
type attemptOptions struct {
	// block waits for the connection's limits instead of handing back.
	block bool
	// beforeSend runs once the call is admitted, right before the request:
	// durable non-idempotent calls record that a request is in flight.
	beforeSend func() error
	// lane is the executor's pools the attempt uses: direct calls have
	// their own.
	lane outbound.Lane
}

// attempt makes attempt number n of call: it resolves the connection, the
// profile's TLS material and the connection's limits, then lets the
// executor make the request. It never panics into its caller: a panic
// becomes an internal error result.
func (w *Worker) attempt(ctx context.Context, call *jobs.Call, n int, queued time.Duration, o attemptOptions) (ao attemptOutcome) {
	ctx, span := w.startAttemptSpan(ctx, call, n)
	defer func() { w.endAttemptSpan(span, &ao) }()
	log := zerolog.Ctx(ctx)
	defer func() {
		if p := recover(); p != nil {
			// The panic value may hold call data: log its type only.
			log.Error().Str("panic_type", fmt.Sprintf("%T", p)).Msg("attempt panicked; reporting internal error")
			ao = attemptOutcome{Outcome: outbound.Outcome{Result: jobs.FailedResult(call, jobs.Errorf(jobs.CodeInternal, "mtlsrelay failed while making this call; see the worker log"))}, conn: ao.conn}
		}
		if ao.Result != nil {
			ao.Result.Attempt = n
			ao.Result.Worker = w.Name()
			ao.Result.Timing.QueuedMS = jobs.Millis(queued)
		}
	}()
	fail := func(err error) attemptOutcome {
		return attemptOutcome{Outcome: outbound.Outcome{Result: jobs.FailedResult(call, err)}, conn: ao.conn}
	}
	conn, prof, err := w.catalog.load().Lookup(call.Connection)
	if err != nil {
		return fail(err)
	}
	ao.conn = conn
	if err := conn.CheckCall(call, call.Connection); err != nil {
		return fail(err)
	}
	mat, err := w.resolver.Resolve(ctx, conn.Profile, *prof)
	if err != nil {
		return fail(err)
	}
	lim := w.limits.get(call.Connection, conn)
	adm := lim.admit(ctx, time.Now(), o.block)
	switch {
	case adm.breakerWait > 0:
		failures, cooldown := conn.Breaker()
		res := fail(jobs.Errorf(jobs.CodeCircuitOpen,
			"connection %s failed %d times in a row, so this worker stops calling it for %s; check that the partner is up",
			call.Connection, failures, cooldown))
		res.RetryAfter = adm.breakerWait
		return res
	case adm.release == nil:
		return attemptOutcome{conn: conn, handback: adm.handback}
	}
	defer adm.release()
	if o.beforeSend != nil {
		if err := o.beforeSend(); err != nil {
			log.Warn().Err(err).Msg("could not record the call as in flight; handing it back")
			return attemptOutcome{conn: conn, handback: jitter(time.Second)}
		}
	}
	out := w.exec.AttemptOn(ctx, o.lane, call, conn, mat)
	w.metrics.observeAttempt(call.Connection, queued, out.Result)
	if !shortenedTimeout(call, conn, out.Result) {
		lim.record(out.Result, time.Now())
	}
	return attemptOutcome{Outcome: out, conn: conn}
}

// maxAttempts returns how many attempts call may have on conn (nil when
// the connection is unknown).
func maxAttempts(call *jobs.Call, conn *catalog.Connection) int {
	if conn != nil {
		return conn.Attempts(call)
	}
	if call.MaxAttempts > 0 {
		return call.MaxAttempts
	}
	return catalog.DefaultMaxAttempts
}
