package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

const overloadConfig = `
worker: {concurrency: 32, admin_addr: "off", retry_base: 20ms, retry_max: 300ms, ack_wait: 5s}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
  capped:  {base_url: "SLOWP", profile: p, max_conns: 2, max_attempts: 50}
  fast:    {base_url: "FASTP", profile: p}
  limited: {base_url: "FASTP", profile: p, rate_limit: 5, max_attempts: 50}
  failing: {base_url: "FASTP", profile: p, breaker_failures: 2, breaker_cooldown: 1s, max_attempts: 3}
  posting: {base_url: "FASTP", profile: p, breaker_failures: -1}
`

// publishCalls publishes calls (without waiting) and returns their ids and
// a subscription on their results.
func publishCalls(t *testing.T, nc *nats.Conn, js jetstream.JetStream, conn string, n int, call map[string]any) ([]string, *nats.Subscription) {
	t.Helper()
	prefix := uniqueID(t.Name() + "-" + conn)
	sub, err := nc.SubscribeSync("mtlsrelay.results." + prefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		c := map[string]any{"id": id, "reply_to": "mtlsrelay.results." + prefix + "." + id}
		for k, v := range call {
			c[k] = v
		}
		data, _ := json.Marshal(c)
		msg := nats.NewMsg("mtlsrelay.calls." + conn)
		msg.Data = data
		msg.Header.Set("Nats-Msg-Id", id)
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids, sub
}

// collect reads n results from sub.
func collect(t *testing.T, sub *nats.Subscription, n int) []*jobs.Result {
	t.Helper()
	var out []*jobs.Result
	for len(out) < n {
		m, err := sub.NextMsg(60 * time.Second)
		if err != nil {
			t.Fatalf("%d of %d results: %v", len(out), n, err)
		}
		r, err := jobs.DecodeResult(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestOverloadProtection(t *testing.T) {
	srv := startNATS(t)
	slow := startPartner(t)
	fast := startPartner(t)
	cfg := configYAML(t, overloadConfig, "SLOWP", slow.URL(), "FASTP", fast.URL())
	startWorker(t, srv.ClientURL(), cfg)
	nc, js := connect(t, srv.ClientURL())

	t.Run("ok/max-conns-caps-a-partner-and-spares-the-others", func(t *testing.T) {
		_, slowSub := publishCalls(t, nc, js, "capped", 10, map[string]any{"path": "slow?ms=300"})
		// While the capped partner is busy, another connection's call goes through.
		r := call(t, nc, js, "fast", map[string]any{"path": "echo"})
		if !r.OK {
			t.Fatalf("fast call: %+v", r.Error)
		}
		if done, _, _ := slowSub.Pending(); done >= 10 {
			t.Errorf("the fast call waited for all capped calls")
		}
		for _, r := range collect(t, slowSub, 10) {
			if !r.OK {
				t.Errorf("capped call %s: %+v", r.ID, r.Error)
			}
		}
		if m := slow.Requests().MaxInFlight; m > 2 {
			t.Errorf("capped partner saw %d calls at once, want at most max_conns=2", m)
		}
	})

	t.Run("ok/rate-limit-spreads-calls", func(t *testing.T) {
		_, sub := publishCalls(t, nc, js, "limited", 10, map[string]any{"path": "echo"})
		res := collect(t, sub, 10)
		var times []time.Time
		for _, r := range res {
			if !r.OK {
				t.Fatalf("limited call: %+v", r.Error)
			}
			times = append(times, r.CompletedAt)
		}
		sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
		// 5 calls/s with a burst of 5: ten calls cannot all finish within 800 ms.
		if span := times[9].Sub(times[0]); span < 800*time.Millisecond {
			t.Errorf("10 calls at rate_limit 5/s completed within %v", span)
		}
	})

	t.Run("fail/circuit-breaker-fast-fails-a-dead-partner", func(t *testing.T) {
		before := fast.Requests().Routes["/status/{code}"]
		_, sub := publishCalls(t, nc, js, "failing", 6, map[string]any{"path": "status/503"})
		open := 0
		for _, r := range collect(t, sub, 6) {
			if r.Error == nil {
				t.Fatalf("503 call succeeded: %+v", r)
			}
			if r.Error.Code == jobs.CodeCircuitOpen {
				open++
				if !r.Error.Retryable {
					t.Errorf("circuit_open must be retryable")
				}
			}
		}
		seen := fast.Requests().Routes["/status/{code}"] - before
		if open == 0 || seen >= 18 {
			t.Errorf("breaker: %d results circuit_open, partner saw %d of 18 possible attempts", open, seen)
		}
	})

	t.Run("ok/non-idempotent-call-id-not-repeated", func(t *testing.T) {
		before := fast.Requests().Routes["/echo"]
		id := uniqueID("post-once")
		body := []byte(`{"id":"` + id + `","method":"POST","path":"echo","body":"pay 10","reply_to":"mtlsrelay.results.once.` + id + `"}`)
		first := callRaw(t, nc, js, "posting", id, "mtlsrelay.results.once."+id, body)
		if !first.OK {
			t.Fatalf("first POST: %+v", first.Error)
		}
		// The same call again, past JetStream's duplicate detection (another
		// Nats-Msg-Id): the worker must not call the partner a second time.
		msg := nats.NewMsg("mtlsrelay.calls.posting")
		msg.Data = body
		msg.Header.Set("Nats-Msg-Id", id+"-again")
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			info, err := js.Stream(context.Background(), jobs.StreamCalls)
			if err != nil {
				return err
			}
			i, err := info.Info(context.Background())
			if err != nil {
				return err
			}
			if i.State.Msgs != 0 {
				return fmt.Errorf("repeated call not consumed yet")
			}
			return nil
		})
		if n := fast.Requests().Routes["/echo"] - before; n != 1 {
			t.Errorf("partner saw the non-idempotent call %d times, want 1", n)
		}
	})
}
