package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestWireContractPlainNATS plays a flow that knows only SPEC.md: plain
// nats.go, raw JSON, no project code on the client side.
func TestWireContractPlainNATS(t *testing.T) {
	env := newRelayEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("ok/durable-call-result-on-reply-subject-and-in-results-stream", func(t *testing.T) {
		sub, err := env.nc.SubscribeSync("mtlsrelay.results.flow-a.>")
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Header.Set("Nats-Msg-Id", "wire-1")
		msg.Data = []byte(`{"id":"wire-1","method":"POST","path":"echo","body":"hi","reply_to":"mtlsrelay.results.flow-a.wire-1","metadata":{"k":"v"}}`)
		ack, err := env.js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Stream != "MTLSRELAY_CALLS" {
			t.Errorf("call stored in %s, want MTLSRELAY_CALLS", ack.Stream)
		}
		// The same id again within the duplicate window is not stored twice.
		ack2, err := env.js.PublishMsg(ctx, msg)
		if err != nil || !ack2.Duplicate {
			t.Errorf("republished call: duplicate=%v err=%v; want a duplicate", ack2 != nil && ack2.Duplicate, err)
		}
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var live map[string]any
		if err := json.Unmarshal(m.Data, &live); err != nil {
			t.Fatal(err)
		}
		if live["id"] != "wire-1" || live["ok"] != true || live["connection"] != "partner" {
			t.Errorf("live result: %v", live)
		}
		if md, _ := live["metadata"].(map[string]any); md["k"] != "v" {
			t.Errorf("metadata not echoed: %v", live["metadata"])
		}
		s, err := env.js.Stream(ctx, "MTLSRELAY_RESULTS")
		if err != nil {
			t.Fatal(err)
		}
		// The stream stores the result as the subscriber receives it, not
		// before: on a busy machine the lookup may come first.
		var stored *jetstream.RawStreamMsg
		checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			stored, err = s.GetLastMsgForSubject(ctx, "mtlsrelay.results.flow-a.wire-1")
			if err != nil {
				return fmt.Errorf("result not kept in MTLSRELAY_RESULTS: %w", err)
			}
			return nil
		})
		if string(stored.Data) != string(m.Data) || stored.Header.Get("Nats-Msg-Id") != "wire-1" {
			t.Errorf("stored result differs from the live one or lacks Nats-Msg-Id")
		}
		if extra, err := sub.NextMsg(300 * time.Millisecond); err == nil {
			t.Errorf("a second result was published: %s", extra.Data)
		}
	})

	t.Run("ok/read-results-later-with-a-consumer", func(t *testing.T) {
		cons, err := env.js.OrderedConsumer(ctx, "MTLSRELAY_RESULTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"mtlsrelay.results.flow-a.>"}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if m.Headers().Get("Mtlsrelay-Call-Id") != "wire-1" {
			t.Errorf("stored result header Mtlsrelay-Call-Id = %q", m.Headers().Get("Mtlsrelay-Call-Id"))
		}
	})

	t.Run("ok/durable-call-result-on-a-core-subject-outside-the-results-stream", func(t *testing.T) {
		// A flow may reply_to any subject it subscribes to, such as its own
		// inbox. No stream acknowledges such a publish; the subscriber gets
		// the result once, at once, and the call is acknowledged.
		reply := env.nc.NewRespInbox()
		sub, err := env.nc.SubscribeSync(reply)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Header.Set("Nats-Msg-Id", "wire-inbox-1")
		msg.Data = []byte(`{"id":"wire-inbox-1","path":"echo","reply_to":"` + reply + `"}`)
		if _, err := env.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(m.Data, &r); err != nil || r["id"] != "wire-inbox-1" || r["ok"] != true {
			t.Fatalf("result on the inbox: %s (%v)", m.Data, err)
		}
		if extra, err := sub.NextMsg(6 * time.Second); err == nil {
			t.Errorf("a second result was published %s after the call: %s", time.Since(start).Round(time.Millisecond), extra.Data)
		}
		waitCallsSettled(ctx, t, env.js, 5*time.Second)
	})

	t.Run("ok/direct-call-over-core-request", func(t *testing.T) {
		reply, err := env.nc.RequestWithContext(ctx, "mtlsrelay.rpc.partner", []byte(`{"id":"wire-rpc-1","path":"echo"}`))
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(reply.Data, &r); err != nil {
			t.Fatal(err)
		}
		if r["id"] != "wire-rpc-1" || r["ok"] != true || r["status"].(float64) != 200 {
			t.Errorf("direct result: %v", r)
		}
	})

	t.Run("fail/direct-call-invalid-json-gets-invalid_call", func(t *testing.T) {
		reply, err := env.nc.RequestWithContext(ctx, "mtlsrelay.rpc.partner", []byte(`{oops`))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Error struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &r); err != nil || r.Error.Code != "invalid_call" {
			t.Errorf("direct invalid call: %s (%v)", reply.Data, err)
		}
	})
}
