package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
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
	waitStoredResult(ctx, t, env.js, reply, id)
	waitCallsSettled(ctx, t, env.js, 10*time.Second)
}

// A result too large for NATS (the server's default max_payload, 1 MB)
// never makes the call loop: a body over worker.inline_body_max goes to the
// Object Store at once, and a body under it whose encoding is still too
// large (JSON escapes U+0001 in six bytes: 200,000 of them make 1.2 MB) is
// moved there when the publish is refused. The result names it with a
// body_ref; the partner is called once.
func TestResultTooLargeForNATS(t *testing.T) {
	nc, js, p := startSmallRelay(t)
	if max := nc.MaxPayload(); max != 1<<20 {
		t.Fatalf("server max_payload = %d, want the default 1 MiB", max)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bodies, err := js.ObjectStore(ctx, jobs.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, reply, query string }{
		{"stored-over-inline-max", "mtlsrelay.results.toolarge.stored", `"n":["2000000"]`},
		{"inbox-over-inline-max", nats.NewInbox(), `"n":["2000000"]`},
		{"stored-escaped-too-large", "mtlsrelay.results.toolarge.escaped", `"n":["200000"],"ctrl":["1"]`},
		{"inbox-escaped-too-large", nats.NewInbox(), `"n":["200000"],"ctrl":["1"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uniqueID(t.Name())
			data := fmt.Appendf(nil, `{"id":%q,"path":"bytes","query":{%s},"headers":{"X-Test-Key":[%q]},"reply_to":%q}`, id, tc.query, id, tc.reply)
			r := callRaw(t, nc, js, "partner", id, tc.reply, data)
			if !r.OK || r.Status != 200 || r.BodyRef == nil || r.Body != "" {
				t.Fatalf("result = ok %v, status %d, error %+v, body_ref %+v, inline body %d bytes; want ok with a body_ref", r.OK, r.Status, r.Error, r.BodyRef, len(r.Body))
			}
			obj, err := bodies.GetBytes(ctx, r.BodyRef.Name)
			if err != nil || int64(len(obj)) != r.BodyRef.Size {
				t.Fatalf("object %s: %d bytes, %v; want %d", r.BodyRef.Name, len(obj), err, r.BodyRef.Size)
			}
			waitCallsSettled(ctx, t, js, 10*time.Second)
			if n := p.KeyCounts()[id]; n != 1 {
				t.Errorf("the partner was called %d times, want 1", n)
			}
		})
	}
}

// startSmallRelay starts a NATS server with its defaults, an mTLS partner
// and a worker with one connection, "partner", to it.
func startSmallRelay(t *testing.T) (*nats.Conn, jetstream.JetStream, *partner.Server) {
	t.Helper()
	srv := startNATS(t)
	p := startPartner(t)
	startWorker(t, srv.ClientURL(), configYAML(t, `
worker: {concurrency: 4, admin_addr: "off"}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p}
`, "PARTNER", p.URL()))
	nc, js := connect(t, srv.ClientURL())
	return nc, js, p
}

// TestResultWaitsForAStream removes MTLSRELAY_RESULTS, so that no stream
// captures results: each publish is answered "no responders", as while a
// stream elects a new leader. The worker must keep its result and its
// call until a stream stores the result, and call the partner once.
// Before, "no responders" counted as success: the call was acknowledged
// and its result lost.
func TestResultWaitsForAStream(t *testing.T) {
	_, js, p := startSmallRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := js.Stream(ctx, jobs.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	cfg := results.CachedInfo().Config
	if err := js.DeleteStream(ctx, jobs.StreamResults); err != nil {
		t.Fatal(err)
	}

	id := uniqueID(t.Name())
	reply := "mtlsrelay.results.nostream." + id
	msg := nats.NewMsg("mtlsrelay.calls.partner")
	msg.Header.Set("Nats-Msg-Id", id)
	msg.Data = fmt.Appendf(nil, `{"id":%q,"path":"echo","headers":{%q:[%q]},"reply_to":%q}`, id, partner.KeyHeader, id, reply)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// The partner answered; its result now meets "no responders". Leave
	// the worker a second of them (a leader election lasts several).
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if p.KeyCounts()[id] == 0 {
			return fmt.Errorf("the partner has not seen call %s yet", id)
		}
		return nil
	})
	time.Sleep(time.Second)
	cons, err := js.Consumer(ctx, jobs.StreamCalls, jobs.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending+int(info.NumPending) != 1 {
		t.Fatalf("call acknowledged although no stream stored its result: %d awaiting ack, %d pending", info.NumAckPending, info.NumPending)
	}

	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitStoredResult(ctx, t, js, reply, id)
	waitCallsSettled(ctx, t, js, 10*time.Second)
	if n := p.KeyCounts()[id]; n != 1 {
		t.Errorf("the partner was called %d times, want once", n)
	}
}

// TestIDsWithDotsFinish sends non-idempotent calls whose ids are valid by
// the contract but, used as they are, not valid KV keys ("a..b", a
// leading or trailing dot): each must end with one result and one call
// to the partner. Before, the call-state write failed and the call was
// handed back forever.
func TestIDsWithDotsFinish(t *testing.T) {
	nc, js, p := startSmallRelay(t)
	base := uniqueID(t.Name())
	for _, id := range []string{base + "-a..b", "." + base, base + "."} {
		reply := "mtlsrelay.results.dots." + strings.ReplaceAll(id, ".", "_")
		data := fmt.Appendf(nil, `{"id":%q,"method":"POST","path":"echo","body":"x","headers":{%q:[%q]},"reply_to":%q}`, id, partner.KeyHeader, id, reply)
		r := callRaw(t, nc, js, "partner", id, reply, data)
		if !r.OK {
			t.Fatalf("call %s: %+v", id, r.Error)
		}
		if n := p.KeyCounts()[id]; n != 1 {
			t.Errorf("call %s reached the partner %d times, want once", id, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitCallsSettled(ctx, t, js, 10*time.Second)
}

// waitStoredResult waits until MTLSRELAY_RESULTS keeps call id's result on
// reply.
func waitStoredResult(ctx context.Context, t *testing.T, js jetstream.JetStream, reply, id string) {
	t.Helper()
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		s, err := js.Stream(ctx, jobs.StreamResults)
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
}
