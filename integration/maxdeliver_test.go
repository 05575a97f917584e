package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// maxDeliverRelay is a relay whose consumer delivers a call at most three
// times, so the tests see the end of a call that never ends by itself.
func maxDeliverRelay(t *testing.T) (*nats.Conn, jetstream.JetStream, *partner.Server) {
	t.Helper()
	srv := startNATS(t)
	p := startPartner(t)
	startWorker(t, srv.ClientURL(), configYAML(t, `
worker: {concurrency: 4, admin_addr: "off", max_deliver: 3, ack_wait: 3s}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, max_attempts: 3}
  narrow:  {base_url: "PARTNER", profile: p, max_conns: 1, breaker_failures: -1}
`, "PARTNER", p.URL()))
	nc, js := connect(t, srv.ClientURL())
	return nc, js, p
}

// deadLetterOf waits for the dead letter of call id on connection conn.
func deadLetterOf(t *testing.T, js jetstream.JetStream, conn, id string, within time.Duration) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := js.Stream(ctx, jobs.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	var m *jetstream.RawStreamMsg
	checkFor(t, within, 50*time.Millisecond, func() error {
		m, err = s.GetLastMsgForSubject(ctx, "mtlsrelay.dead."+conn)
		if err != nil || m.Header.Get(jobs.HeaderCallID) != id {
			return fmt.Errorf("no dead letter for %s yet (%v)", id, err)
		}
		return nil
	})
	return m
}

// A call whose result can never be stored (MTLSRELAY_RESULTS sealed) ends:
// each delivery keeps the result and hands the call back, JetStream stops
// at max_deliver and says so, and a worker dead-letters the call with
// max_deliveries and removes it from its stream. The partner was called
// once: the later deliveries published the result kept in the call state.
func TestCallEndsWhenItsResultCanNeverBeStored(t *testing.T) {
	_, js, p := maxDeliverRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := js.Stream(ctx, jobs.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rs.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("seal %s: %v", jobs.StreamResults, err)
	}
	id := uniqueID("sealed")
	msg := nats.NewMsg("mtlsrelay.calls.partner")
	msg.Data, _ = json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": "mtlsrelay.results.sealed." + id,
		"headers": map[string][]string{partner.KeyHeader: {id}}})
	msg.Header.Set(jobs.HeaderMsgID, id)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	dead := deadLetterOf(t, js, "partner", id, 90*time.Second)
	if reason := dead.Header.Get(jobs.HeaderDeadReason); !strings.HasPrefix(reason, "max_deliveries: the call was delivered 3 times") {
		t.Errorf("dead letter reason %q, want max_deliveries after 3 deliveries", reason)
	}
	if got := p.KeyCounts()[id]; got != 1 {
		t.Errorf("the partner was called %d times, want once", got)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		cs, err := js.Stream(ctx, jobs.StreamCalls)
		if err != nil {
			return err
		}
		info, err := cs.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d calls still in %s", info.State.Msgs, jobs.StreamCalls)
		}
		return nil
	})
}

// A call that finds its connection saturated at each of its deliveries
// ends at the last one with max_deliveries, rather than being handed back
// without end; it was never attempted.
func TestCallEndsWhenItsConnectionStaysSaturated(t *testing.T) {
	nc, js, p := maxDeliverRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One slow call holds the connection's only slot.
	slowID := uniqueID("slow")
	slow := nats.NewMsg("mtlsrelay.calls.narrow")
	slow.Data, _ = json.Marshal(map[string]any{"id": slowID, "path": "slow", "query": map[string][]string{"ms": {"8000"}}, "reply_to": "mtlsrelay.results.narrow." + slowID})
	slow.Header.Set(jobs.HeaderMsgID, slowID)
	if _, err := js.PublishMsg(ctx, slow); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p.Requests().Routes["/slow"] == 0 {
			return fmt.Errorf("the slow call has not reached the partner")
		}
		return nil
	})
	id := uniqueID("saturated")
	res := callRaw(t, nc, js, "narrow", id, "mtlsrelay.results.narrow."+id, []byte(`{"id":"`+id+`","path":"echo","headers":{"`+partner.KeyHeader+`":["`+id+`"]},"reply_to":"mtlsrelay.results.narrow.`+id+`"}`))
	if res.Error == nil || res.Error.Code != jobs.CodeMaxDeliveries || !strings.Contains(res.Error.Message, "stayed saturated or rate-limited through 3 deliveries") {
		t.Fatalf("result %+v; want max_deliveries after 3 deliveries", res.Error)
	}
	if got := p.KeyCounts()[id]; got != 0 {
		t.Errorf("the saturated call reached the partner %d times, want never", got)
	}
	if reason := deadLetterOf(t, js, "narrow", id, 10*time.Second).Header.Get(jobs.HeaderDeadReason); !strings.HasPrefix(reason, "max_deliveries") {
		t.Errorf("dead letter reason %q", reason)
	}
}

// worker.max_memory admits calls by bytes besides the slots: with a budget
// that holds one call, calls run one at a time, the others waiting in
// JetStream (handed back), and all finish.
func TestMemoryAdmission(t *testing.T) {
	srv := startNATS(t)
	p := startPartner(t)
	startWorker(t, srv.ClientURL(), configYAML(t, `
worker: {concurrency: 8, admin_addr: "off", max_memory: 1}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, breaker_failures: -1}
`, "PARTNER", p.URL()))
	nc, js := connect(t, srv.ClientURL())
	results := make(chan *jobs.Result, 4)
	for range 4 {
		go func() {
			results <- call(t, nc, js, "partner", map[string]any{"path": "slow", "query": map[string][]string{"ms": {"300"}}})
		}()
	}
	for range 4 {
		if r := <-results; !r.OK {
			t.Errorf("call %s: %+v", r.ID, r.Error)
		}
	}
	if got := p.Requests().MaxInFlight; got != 1 {
		t.Errorf("the partner saw %d calls at once; a budget of one call should let one through at a time", got)
	}
}
