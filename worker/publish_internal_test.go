package worker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Every error a result's publish can meet maps to one decision; "no stream
// answered" is never success.
func TestClassifyPublish(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want publishFault
	}{
		{"no-responders", nats.ErrNoResponders, faultNoAnswer},
		{"no-stream-response", jetstream.ErrNoStreamResponse, faultNoAnswer},
		{"ack-timeout", context.DeadlineExceeded, faultNoAnswer},
		{"nats-timeout", nats.ErrTimeout, faultNoAnswer},
		{"reconnecting", nats.ErrConnectionReconnecting, faultNoAnswer},
		{"async-ack-timeout", jetstream.ErrAsyncPublishTimeout, faultNoAnswer},
		{"window-full", pubwindow.ErrFull, faultNoAnswer},
		{"cluster-unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, faultNoAnswer},
		{"wrapped-no-responders", fmt.Errorf("publish: %w", nats.ErrNoResponders), faultNoAnswer},
		{"stream-sealed", &jetstream.APIError{Code: 400, ErrorCode: 10109, Description: "invalid operation on sealed stream"}, faultRefused},
		{"stream-full", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, faultRefused},
		{"insufficient-resources", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, faultRefused},
		{"max-payload", nats.ErrMaxPayload, faultTooLarge},
		{"wrapped-max-payload", fmt.Errorf("publish to x: %w", nats.ErrMaxPayload), faultTooLarge},
		{"max-msg-size", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}, faultTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := classifyPublish(tc.err); got != tc.want {
				t.Errorf("classifyPublish(%v) = %s, want %s", tc.err, got, tc.want)
			}
			if got, want := neverPublishable(tc.err), tc.want == faultTooLarge; got != want {
				t.Errorf("neverPublishable(%v) = %v, want %v", tc.err, got, want)
			}
		})
	}
	if neverPublishable(nil) {
		t.Error("neverPublishable(nil) = true")
	}
}

func TestPublishBackoff(t *testing.T) {
	for try := 1; try <= 12; try++ {
		full := min(100*time.Millisecond<<(try-1), 2*time.Second)
		for range 50 {
			d := publishBackoff(try)
			if d < full/2 || d > full {
				t.Fatalf("publishBackoff(%d) = %s, want within [%s, %s]", try, d, full/2, full)
			}
		}
	}
}

// The pull loop waits longer after each failed pull, at most 5 s, says
// which failure is the first of a run (the one logged), and starts over
// once a pull works.
func TestPullBackoff(t *testing.T) {
	var b pullBackoff
	t0 := time.Unix(1000, 0)
	if n, down := b.succeeded(t0); n != 0 || down != 0 {
		t.Fatalf("succeeded with no failure = %d, %s; want 0, 0", n, down)
	}
	for i := 1; i <= 10; i++ {
		d, first := b.failed(t0.Add(time.Duration(i) * time.Second))
		full := min(100*time.Millisecond<<(i-1), 5*time.Second)
		if d < full/2 || d > full {
			t.Errorf("failure %d: delay %s, want within [%s, %s]", i, d, full/2, full)
		}
		if first != (i == 1) {
			t.Errorf("failure %d: first = %v", i, first)
		}
	}
	n, down := b.succeeded(t0.Add(30 * time.Second))
	if n != 10 || down != 29*time.Second {
		t.Errorf("succeeded after 10 failures = %d, %s; want 10, 29s", n, down)
	}
	if _, first := b.failed(t0.Add(40 * time.Second)); !first {
		t.Error("the first failure after a working pull is not reported as first")
	}
	if d, _ := b.failed(t0.Add(41 * time.Second)); d > 200*time.Millisecond {
		t.Errorf("second failure of a new run waits %s; the backoff did not start over", d)
	}
}

// A result too large for NATS is replaced by one that keeps the call's
// echo and the partner's status, drops the response, and says what to
// change; it is small whatever the response was.
func TestTooLargeResult(t *testing.T) {
	res := &jobs.Result{
		ID: "big-1", Connection: "partner", Metadata: map[string]string{"flow": "f"}, OK: true, Status: 200,
		Headers: map[string][]string{"Content-Type": {"text/plain"}}, Body: strings.Repeat("x", 2_000_000), Attempt: 1, Worker: "w1",
	}
	out := tooLargeResult(res, 2_000_345, 1<<20)
	if out.OK || out.Error == nil || out.Error.Code != jobs.CodeResponseTooLarge || out.Error.Retryable {
		t.Fatalf("result = ok %v, error %+v; want a response_too_large that is not retried", out.OK, out.Error)
	}
	for _, want := range []string{"2000345 bytes", "max_payload 1048576", "HTTP 200", "max_response_bytes"} {
		if !strings.Contains(out.Error.Message, want) {
			t.Errorf("message %q does not say %q", out.Error.Message, want)
		}
	}
	if out.ID != "big-1" || out.Connection != "partner" || out.Metadata["flow"] != "f" || out.Status != 200 || out.Attempt != 1 {
		t.Errorf("the call's echo or the status is lost: %+v", out)
	}
	if !withoutResponse(out) || withoutResponse(res) {
		t.Errorf("withoutResponse: replacement %v (want true), original %v (want false)", withoutResponse(out), withoutResponse(res))
	}
	if !res.OK || len(res.Body) != 2_000_000 {
		t.Error("tooLargeResult changed the original result")
	}
	data, err := jobs.EncodeResult(out)
	if err != nil || len(data) > 4096 {
		t.Errorf("replacement encodes to %d bytes (%v); want a small message", len(data), err)
	}
	if errors.Is(out.Error, nats.ErrMaxPayload) {
		t.Error("the wire error wraps a NATS error")
	}
}

// scriptedPublisher answers publishes with errs in turn, then with a
// PubAck; it counts the tries.
type scriptedPublisher struct {
	errs  []error
	tries int
}

func (p *scriptedPublisher) PublishMsg(ctx context.Context, _ *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.tries++
	if p.tries <= len(p.errs) {
		return nil, p.errs[p.tries-1]
	}
	return &jetstream.PubAck{Stream: "MTLSRELAY_RESULTS", Sequence: uint64(p.tries)}, nil
}

// forever repeats err n times: more tries than any patience allows here.
func forever(err error) []error {
	out := make([]error, 10000)
	for i := range out {
		out[i] = err
	}
	return out
}

// publishUntilStored succeeds on a PubAck and nothing else: "no responders"
// and "no stream response" (what a stream answers while it elects a
// leader) are tried again until patience ends, then reported; a refusal
// gets the shorter patience; a message too large is tried once.
func TestPublishUntilStored(t *testing.T) {
	pol := publishPolicy{
		noAnswer: 200 * time.Millisecond,
		refused:  20 * time.Millisecond,
		backoff:  func(int) time.Duration { return time.Millisecond },
		timeout:  time.Second,
	}
	sealed := &jetstream.APIError{Code: 400, ErrorCode: 10109, Description: "invalid operation on sealed stream"}
	cases := []struct {
		name      string
		errs      []error
		wantErr   error // nil: stored
		wantTries func(int) bool
	}{
		{"stored-at-once", nil, nil, func(n int) bool { return n == 1 }},
		{"stored-after-an-election", []error{nats.ErrNoResponders, jetstream.ErrNoStreamResponse, context.DeadlineExceeded, nats.ErrNoResponders}, nil, func(n int) bool { return n == 5 }},
		{"no-responders-never-success", forever(nats.ErrNoResponders), nats.ErrNoResponders, func(n int) bool { return n > 20 }},
		{"no-stream-response-never-success", forever(jetstream.ErrNoStreamResponse), jetstream.ErrNoStreamResponse, func(n int) bool { return n > 20 }},
		{"refused-gives-up-sooner", forever(sealed), sealed, func(n int) bool { return n > 1 && n < 40 }},
		{"too-large-tried-once", forever(nats.ErrMaxPayload), nats.ErrMaxPayload, func(n int) bool { return n == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &scriptedPublisher{errs: tc.errs}
			ack, err := publishUntilStored(context.Background(), p, nats.NewMsg("mtlsrelay.results.x"), pol)
			switch {
			case tc.wantErr == nil && (err != nil || ack == nil):
				t.Fatalf("err = %v, ack = %v; want stored", err, ack)
			case tc.wantErr != nil && (err == nil || !errors.Is(err, tc.wantErr)):
				t.Fatalf("err = %v; want one that wraps %v", err, tc.wantErr)
			}
			if !tc.wantTries(p.tries) {
				t.Errorf("%d tries", p.tries)
			}
			if tc.wantErr != nil && neverPublishable(err) != errors.Is(tc.wantErr, nats.ErrMaxPayload) {
				t.Errorf("neverPublishable(%v) = %v", err, neverPublishable(err))
			}
		})
	}
	t.Run("shutdown-ends-the-wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := &scriptedPublisher{errs: forever(nats.ErrNoResponders)}
		slow := pol
		slow.noAnswer, slow.backoff = time.Hour, func(int) time.Duration { return 10 * time.Millisecond }
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := publishUntilStored(ctx, p, nats.NewMsg("mtlsrelay.results.x"), slow)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v; want context.Canceled", err)
		}
	})
}

// Every call id valid by the contract maps to a valid KV key, one to one.
// Before, "a..b" made an invalid key: its call-state writes failed and a
// non-idempotent call with that id was handed back forever.
func TestStateKey(t *testing.T) {
	validKey := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
	seen := map[string]string{}
	// Tenants' calls with one id have states of their own, and none is a
	// v1 call's: "billing.x" (a v1 id) and tenant billing's "x" differ.
	for _, tenant := range []string{"", "billing", "shipping"} {
		for _, id := range []string{"a", "order-42", "a.b", "a..b", ".a", "a.", "...", "a:b", "a.:.b", "x..y:z", "billing.a", "t.billing.a", strings.Repeat("a.", 64)} {
			k := stateKey(tenant, id)
			if !validKey.MatchString(k) || strings.Contains(k, "..") || strings.HasSuffix(k, ".") {
				t.Errorf("stateKey(%q, %q) = %q: not a valid KV key", tenant, id, k)
			}
			if other, ok := seen[k]; ok {
				t.Errorf("stateKey(%q, %q) = stateKey of %s = %q", tenant, id, other, k)
			}
			seen[k] = tenant + "/" + id
		}
	}
	if got := stateKey("", "order.42:a"); got != "c.order.42=3Aa" {
		t.Errorf("stateKey of an id with valid dots changed to %q: earlier workers' keys would be lost", got)
	}
}
