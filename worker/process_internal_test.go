package worker

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeExecutor stands in for outbound.Executor: it answers each attempt
// with answer, and counts the attempts.
type fakeExecutor struct {
	mu     sync.Mutex
	calls  int
	lanes  []outbound.Lane
	answer func(call *jobs.Call) outbound.Outcome
}

func (f *fakeExecutor) AttemptOn(_ context.Context, lane outbound.Lane, call *jobs.Call, _ *catalog.Connection, _ *secrets.Material) outbound.Outcome {
	f.mu.Lock()
	f.calls++
	f.lanes = append(f.lanes, lane)
	f.mu.Unlock()
	return f.answer(call)
}

func (f *fakeExecutor) Close() {}

func (f *fakeExecutor) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func okOutcome(call *jobs.Call) outbound.Outcome {
	return outbound.Outcome{Result: &jobs.Result{ID: call.ID, Connection: call.Connection, OK: true, Status: 200}, Sent: true}
}

func failOutcome(code jobs.Code, sent bool) func(*jobs.Call) outbound.Outcome {
	return func(call *jobs.Call) outbound.Outcome {
		return outbound.Outcome{Result: jobs.FailedResult(call, jobs.Errorf(code, "test failure")), Sent: sent}
	}
}

// testWorker is a worker with no NATS connection: enough to drive attempt,
// the part between a delivered call and its outcome.
func testWorker(t *testing.T, exec executor, connections string) *Worker {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	fix := filepath.Join(filepath.Dir(file), "..", "secrets", "testdata")
	cfg, err := ParseConfig([]byte(strings.ReplaceAll(`
worker: {name: unit, concurrency: 4}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
`+connections, "FIX", fix)))
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{
		cfg:      cfg,
		log:      zerolog.Nop(),
		retry:    retryPolicy{base: cfg.Worker.RetryBase.D(), max: cfg.Worker.RetryMax.D()},
		slots:    semaphore.NewWeighted(int64(cfg.Worker.Concurrency)),
		resolver: secrets.NewResolver(secrets.DefaultSources(fix)),
		exec:     exec,

		replyPrefixes: cfg.Worker.ReplyPrefixes,
	}
	w.catalog.store(&catalog.Catalog{Profiles: cfg.Profiles, Connections: cfg.Connections})
	w.initObservability()
	return w
}

func call1(conn string) *jobs.Call {
	return &jobs.Call{ID: "c1", Connection: conn, Method: "GET", Kind: jobs.KindREST}
}

// attempt turns a delivered call into one outcome: what it cannot run
// never reaches the executor, a panic becomes an internal error, and the
// connection's limits hand calls back or fail them fast.
func TestAttempt(t *testing.T) {
	ctx := context.Background()
	t.Run("ok/reaches-the-executor-once", func(t *testing.T) {
		ex := &fakeExecutor{answer: okOutcome}
		w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
		ao := w.attempt(ctx, call1("a"), 3, 1500*time.Millisecond, attemptOptions{})
		if ex.count() != 1 || ao.Result == nil || !ao.Result.OK || ao.handback != 0 {
			t.Fatalf("executor calls %d, outcome %+v", ex.count(), ao)
		}
		if r := ao.Result; r.Attempt != 3 || r.Worker != "unit" || r.Timing.QueuedMS != 1500 {
			t.Errorf("attempt %d worker %q queued %v; want 3, unit, 1500", r.Attempt, r.Worker, r.Timing.QueuedMS)
		}
	})
	for _, tc := range []struct {
		name, conn, conns string
		code              jobs.Code
	}{
		{"fail/unknown-connection", "nope", `  a: {base_url: "https://partner.example/", profile: p}`, jobs.CodeUnknownConnection},
		{"fail/unknown-profile", "a", `  a: {base_url: "https://partner.example/", profile: missing}`, jobs.CodeUnknownProfile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := &fakeExecutor{answer: okOutcome}
			w := testWorker(t, ex, tc.conns)
			ao := w.attempt(ctx, call1(tc.conn), 1, 0, attemptOptions{})
			if ex.count() != 0 || ao.Result == nil || ao.Result.Error == nil || ao.Result.Error.Code != tc.code {
				t.Fatalf("executor calls %d, outcome %+v; want %s without an attempt", ex.count(), ao.Result, tc.code)
			}
		})
	}
	t.Run("fail/panic-becomes-internal", func(t *testing.T) {
		ex := &fakeExecutor{answer: func(*jobs.Call) outbound.Outcome { panic("secret-in-panic") }}
		w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
		ao := w.attempt(ctx, call1("a"), 1, 0, attemptOptions{})
		if ao.Result == nil || ao.Result.Error == nil || ao.Result.Error.Code != jobs.CodeInternal || strings.Contains(ao.Result.Error.Message, "secret-in-panic") {
			t.Fatalf("outcome %+v; want internal without the panic's value", ao.Result)
		}
	})
	t.Run("handback/marker-not-written", func(t *testing.T) {
		ex := &fakeExecutor{answer: okOutcome}
		w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
		ao := w.attempt(ctx, call1("a"), 1, 0, attemptOptions{beforeSend: func() error { return errors.New("KV down") }})
		if ex.count() != 0 || ao.handback <= 0 {
			t.Fatalf("executor calls %d, handback %s; a call whose in-flight marker is not written must not be sent", ex.count(), ao.handback)
		}
	})
	t.Run("handback/connection-saturated", func(t *testing.T) {
		release := make(chan struct{})
		inside := make(chan struct{})
		ex := &fakeExecutor{answer: func(c *jobs.Call) outbound.Outcome {
			close(inside)
			<-release
			return okOutcome(c)
		}}
		w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p, max_conns: 1}`)
		done := make(chan attemptOutcome)
		go func() { done <- w.attempt(ctx, call1("a"), 1, 0, attemptOptions{}) }()
		<-inside
		ao := w.attempt(ctx, call1("a"), 1, 0, attemptOptions{})
		close(release)
		first := <-done
		if ex.count() != 1 || ao.handback <= 0 || ao.Result != nil || !first.Result.OK {
			t.Fatalf("executor calls %d, second outcome %+v; want the second handed back while max_conns is taken", ex.count(), ao)
		}
	})
	t.Run("fail/circuit-opens-after-failures", func(t *testing.T) {
		ex := &fakeExecutor{answer: failOutcome(jobs.CodeConnectFailed, false)}
		w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p, breaker_failures: 2, breaker_cooldown: 1m}`)
		for range 2 {
			if ao := w.attempt(ctx, call1("a"), 1, 0, attemptOptions{}); ao.Result.Error.Code != jobs.CodeConnectFailed {
				t.Fatalf("outcome %+v", ao.Result)
			}
		}
		ao := w.attempt(ctx, call1("a"), 1, 0, attemptOptions{})
		if ex.count() != 2 || ao.Result.Error == nil || ao.Result.Error.Code != jobs.CodeCircuitOpen || ao.RetryAfter <= 0 {
			t.Fatalf("executor calls %d, third outcome %+v retry after %s; want circuit_open without an attempt", ex.count(), ao.Result, ao.RetryAfter)
		}
	})
}

// decide applies SPEC.md's retry rules: which failures are retried, that a
// non-idempotent call is retried only when the request certainly did not
// reach the partner or it answered 429/503, and that Retry-After counts.
func TestRetryDecide(t *testing.T) {
	p := retryPolicy{base: 100 * time.Millisecond, max: 10 * time.Second}
	yes, no := true, false
	// Normalize sets Idempotent from the method; these are normalized calls.
	get := &jobs.Call{ID: "g", Method: "GET", Idempotent: &yes}
	post := &jobs.Call{ID: "p", Method: "POST", Idempotent: &no}
	errOut := func(code jobs.Code, sent bool) outbound.Outcome { return failOutcome(code, sent)(get) }
	status := func(s int, retryAfter time.Duration) outbound.Outcome {
		return outbound.Outcome{Result: &jobs.Result{Status: s}, Sent: true, RetryAfter: retryAfter}
	}
	cases := []struct {
		name       string
		call       *jobs.Call
		out        outbound.Outcome
		attempt    int
		retry      bool
		minD, maxD time.Duration
	}{
		{"retry/connect-failed", get, errOut(jobs.CodeConnectFailed, false), 1, true, 50 * time.Millisecond, 100 * time.Millisecond},
		{"retry/timeout-backs-off", get, errOut(jobs.CodeTimeout, true), 3, true, 200 * time.Millisecond, 400 * time.Millisecond},
		{"retry/secret-unavailable", get, errOut(jobs.CodeSecretUnavailable, false), 1, true, 0, time.Second},
		{"retry/503", get, status(503, 0), 1, true, 0, time.Second},
		{"retry/429-retry-after", get, status(429, 3*time.Second), 1, true, 3 * time.Second, 3 * time.Second},
		{"retry/retry-after-capped", get, status(503, time.Hour), 1, true, 10 * time.Second, 10 * time.Second},
		{"retry/post-not-sent", post, errOut(jobs.CodeConnectFailed, false), 1, true, 0, time.Second},
		{"retry/post-503", post, status(503, 0), 1, true, 0, time.Second},
		{"stop/last-attempt", get, errOut(jobs.CodeConnectFailed, false), 5, false, 0, 0},
		{"stop/not-retryable", get, errOut(jobs.CodeServerCertUntrusted, false), 1, false, 0, 0},
		{"stop/post-timeout-may-have-reached", post, errOut(jobs.CodeTimeout, true), 1, false, 0, 0},
		{"stop/post-502", post, status(502, 0), 1, false, 0, 0},
		{"stop/200", get, status(200, 0), 1, false, 0, 0},
		{"stop/404", get, status(404, 0), 1, false, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			retry, d := p.decide(tc.call, tc.out, tc.attempt, 5)
			if retry != tc.retry || (retry && (d < tc.minD || d > tc.maxD)) {
				t.Fatalf("decide = %v, %s; want %v within [%s, %s]", retry, d, tc.retry, tc.minD, tc.maxD)
			}
		})
	}
}

// A direct call runs while every durable slot is taken (the durable
// consumer holds its slots through a pull's wait): it has slots of its own
// and is admitted off the subscription's callback. Before, the callback
// waited for a durable slot, and direct calls on an idle worker waited up
// to a pull's expiry (p90 4.4 s).
func TestDirectCallsDoNotWaitForDurableSlots(t *testing.T) {
	ex := &fakeExecutor{answer: okOutcome}
	w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
	w.direct, w.directWaiting = semaphore.NewWeighted(2), semaphore.NewWeighted(4)
	w.callCtx = context.Background()
	if !w.slots.TryAcquire(int64(w.cfg.Worker.Concurrency)) {
		t.Fatal("could not take the durable slots")
	}
	returned := make(chan struct{})
	go func() {
		w.handleDirect(nil, &nats.Msg{Subject: "mtlsrelay.rpc.a", Reply: "_INBOX.test", Data: []byte(`{"id":"d1","path":"x"}`)})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription's callback is blocked while the durable slots are taken")
	}
	w.inflight.Wait()
	if ex.count() != 1 {
		t.Fatalf("the direct call reached the executor %d times, want once", ex.count())
	}
	if ex.lanes[0] != outbound.LaneDirect {
		t.Errorf("the direct call took lane %d, not the direct calls' pools", ex.lanes[0])
	}

	// Past its waiting bound, a direct call is not admitted at all.
	if !w.directWaiting.TryAcquire(4) {
		t.Fatal("could not fill the waiting bound")
	}
	w.handleDirect(nil, &nats.Msg{Subject: "mtlsrelay.rpc.a", Reply: "_INBOX.test", Data: []byte(`{"id":"d2","path":"x"}`)})
	w.inflight.Wait()
	if ex.count() != 1 {
		t.Errorf("a direct call past the waiting bound was made")
	}
}

// The breaker opens after threshold failures in a row, stays open for its
// cooldown, then lets one trial call through at a time (half-open): a
// success closes it, a failure opens it for another cooldown.
func TestBreaker(t *testing.T) {
	t.Parallel()
	b := &breaker{threshold: 3, cooldown: time.Minute}
	t0 := time.Unix(1000, 0)
	allowed := func(at time.Time) bool { ok, _ := b.allow(at); return ok }

	b.record(true, t0)
	b.record(true, t0)
	b.record(false, t0) // a success in between starts the count again
	b.record(true, t0)
	b.record(true, t0)
	if !allowed(t0) {
		t.Fatal("open after 2 failures in a row, threshold 3")
	}
	b.record(true, t0)
	if ok, wait := b.allow(t0.Add(time.Second)); ok || wait != 59*time.Second {
		t.Fatalf("after 3 failures: allow = %v, wait %s; want closed for the rest of the cooldown", ok, wait)
	}
	at := t0.Add(time.Minute)
	if !allowed(at) {
		t.Fatal("no trial call after the cooldown")
	}
	if ok, wait := b.allow(at); ok || wait < 15*time.Second || wait > 30*time.Second {
		t.Fatalf("a second call during the trial: allow = %v, wait %s; want held back a quarter to half a cooldown", ok, wait)
	}
	b.record(true, at) // the trial failed
	if allowed(at.Add(time.Second)) {
		t.Fatal("a failed trial did not open the circuit again")
	}
	at = at.Add(time.Minute)
	if !allowed(at) {
		t.Fatal("no second trial after the second cooldown")
	}
	b.record(false, at) // the trial succeeded
	for range 5 {
		if !allowed(at) {
			t.Fatal("a successful trial did not close the circuit")
		}
	}
}

// A direct call whose reply subject results may not go to is dropped
// before it runs: answering would publish there with the worker's
// permissions (a reply of $KV.<bucket>.<key> writes that key).
func TestDirectCallWithForbiddenReplyIsDropped(t *testing.T) {
	ex := &fakeExecutor{answer: okOutcome}
	w := testWorker(t, ex, `  a: {base_url: "https://partner.example/", profile: p}`)
	w.direct, w.directWaiting = semaphore.NewWeighted(2), semaphore.NewWeighted(4)
	w.callCtx = context.Background()
	for _, reply := range []string{"$KV.mtlsrelay_registry.connections.victim", "$JS.API.STREAM.DELETE.MTLSRELAY_CALLS", "mtlsrelay.calls.a", "other.app.subject"} {
		w.handleDirect(nil, &nats.Msg{Subject: "mtlsrelay.rpc.a", Reply: reply, Data: []byte(`{"id":"d1","path":"x"}`)})
	}
	w.inflight.Wait()
	if ex.count() != 0 {
		t.Fatalf("the executor ran %d times for calls with forbidden reply subjects", ex.count())
	}
	if got := promtest.ToFloat64(w.metrics.directRefused); got != 4 {
		t.Errorf("mtlsrelay_direct_calls_refused_total = %v, want 4", got)
	}
}

// A flow that asks for a shorter timeout than its connection's cannot open
// the connection's circuit for everyone with the timeouts it causes.
func TestShortenedTimeoutsDoNotOpenTheBreaker(t *testing.T) {
	conn := &catalog.Connection{Timeout: catalog.Duration(30 * time.Second)}
	timeout := &jobs.Result{Error: jobs.Errorf(jobs.CodeTimeout, "t")}
	if !shortenedTimeout(&jobs.Call{TimeoutMS: 1}, conn, timeout) {
		t.Error("a 1 ms timeout on a 30 s connection counted against the partner")
	}
	if shortenedTimeout(&jobs.Call{}, conn, timeout) || shortenedTimeout(&jobs.Call{TimeoutMS: 30000}, conn, timeout) {
		t.Error("a timeout at the connection's own deadline did not count")
	}
	if shortenedTimeout(&jobs.Call{TimeoutMS: 1}, conn, &jobs.Result{Status: 503}) {
		t.Error("a 503 did not count")
	}
}
