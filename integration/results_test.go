package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// TestResultNotStoredCallNotAcked seals MTLSRELAY_RESULTS so JetStream
// refuses results: the worker must not acknowledge the call it cannot store
// a result for. Once the stream takes results again, the redelivered call's
// result is stored.
func TestResultNotStoredCallNotAcked(t *testing.T) {
	env := newRelayEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	results, err := env.js.Stream(ctx, jobs.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	cfg := results.CachedInfo().Config
	sealed := cfg
	sealed.Sealed = true
	if _, err := env.js.UpdateStream(ctx, sealed); err != nil {
		t.Fatal(err)
	}

	const id = "sealed-results-1"
	reply := "mtlsrelay.results.sealed." + id
	msg := nats.NewMsg("mtlsrelay.calls.partner")
	msg.Header.Set("Nats-Msg-Id", id)
	msg.Data = []byte(`{"id":"` + id + `","path":"echo","reply_to":"` + reply + `"}`)
	if _, err := env.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	cons, err := env.js.Consumer(ctx, jobs.StreamCalls, jobs.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(env.logs.String(), "could not publish the result") {
			return fmt.Errorf("the worker has not reported the refused result yet")
		}
		return nil
	})
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending+int(info.NumPending) != 1 {
		t.Fatalf("call acknowledged although its result was refused: %d awaiting ack, %d pending", info.NumAckPending, info.NumPending)
	}

	// A sealed stream stays sealed: make it anew, as an operator would.
	if err := env.js.DeleteStream(ctx, jobs.StreamResults); err != nil {
		t.Fatal(err)
	}
	if _, err := env.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		s, err := env.js.Stream(ctx, jobs.StreamResults)
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(ctx, reply)
		if err != nil {
			return fmt.Errorf("no stored result yet: %w", err)
		}
		if m.Header.Get(jobs.HeaderCallID) != id {
			return fmt.Errorf("stored result is for %q", m.Header.Get(jobs.HeaderCallID))
		}
		return nil
	})
	waitCallsSettled(ctx, t, env.js, 10*time.Second)
}
