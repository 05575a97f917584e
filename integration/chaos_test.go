package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// floodClient connects to a cluster at url as a flow that publishes total
// calls asynchronously at once: every one of them may await its ack (the
// default window of 4,000 stalls on a busy machine), and the client
// reconnects fast when its node dies.
func floodClient(t *testing.T, url string, total int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*total))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestChaos sends 5,000 calls through a three-node cluster (R3 streams) and
// three worker processes while one worker is SIGKILLed, one is SIGTERMed
// and restarted, and the nats-server process that leads the calls stream
// is SIGKILLed. Every call must get exactly one stored result.
//
// The nodes are processes, not servers in this test's process: an
// in-process server's Shutdown steps its Raft leaders down before it goes,
// so the others took over at once and the window a crashed leader leaves
// (no leader for 10-20 s, publishes unanswered) was never exercised.
func TestChaos(t *testing.T) {
	const total = 5000
	cl := startProcCluster(t, 3)
	natsURL := cl.URL()
	p := startPartner(t)
	nc, js := floodClient(t, natsURL, total)
	cfg := writeConfig(t, `
nats: {replicas: 3}
worker: {concurrency: 32, admin_addr: "off", ack_wait: 3s, retry_base: 100ms, retry_max: 1s, shutdown_grace: 2s}
registry: {disabled: true}
log: {level: info, format: json}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, timeout: 5s, max_attempts: 20, breaker_failures: -1}
`, "PARTNER", p.URL())
	workers := []*workerProcess{
		startWorkerProcess(t, natsURL, cfg, "chaos-a"),
		startWorkerProcess(t, natsURL, cfg, "chaos-b"),
		startWorkerProcess(t, natsURL, cfg, "chaos-c"),
	}

	live, err := nc.SubscribeSync("mtlsrelay.results.chaos.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := live.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for i := range total {
		id := fmt.Sprintf("chaos-%05d", i)
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Header.Set("Nats-Msg-Id", id)
		msg.Data = []byte(fmt.Sprintf(`{"id":%q,"path":"echo","headers":{%q:[%q]},"reply_to":"mtlsrelay.results.chaos.%s"}`, id, partner.KeyHeader, id, id))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing calls timed out")
	}

	seenLive := map[string]int{}
	var events []string
	var mu sync.Mutex
	step := 0
	// Live results can be missed while this client reconnects after the
	// leader's death; the stored results below are what count.
	for len(seenLive) < total && ctx.Err() == nil {
		m, err := live.NextMsg(20 * time.Second)
		if err != nil {
			break
		}
		seenLive[m.Header.Get(jobs.HeaderCallID)]++
		switch {
		case step == 0 && len(seenLive) >= 1000:
			step++
			_ = workers[0].cmd.Process.Signal(syscall.SIGKILL)
			events = append(events, fmt.Sprintf("SIGKILL chaos-a at %d results", len(seenLive)))
		case step == 1 && len(seenLive) >= 2000:
			step++
			_ = workers[1].cmd.Process.Signal(syscall.SIGTERM)
			werr := <-workers[1].done
			workers[1].done <- werr
			events = append(events, fmt.Sprintf("SIGTERM chaos-b at %d results", len(seenLive)))
			mu.Lock()
			workers[1] = startWorkerProcess(t, natsURL, cfg, "chaos-b2")
			mu.Unlock()
		case step == 2 && len(seenLive) >= 3000:
			step++
			leader, err := callsGroup.leader(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			cl.kill(t, leader)
			events = append(events, fmt.Sprintf("SIGKILL %s leader %s at %d results", jobs.StreamCalls, leader, len(seenLive)))
		}
	}

	// Stored results: read the whole results stream, count per call id.
	waitResultsStored(t, js, total, 2*time.Minute, func() string { return "" })
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stored := map[string]int{}
	for id, rs := range readStoredResults(ctx, t, js) {
		for _, r := range rs {
			if !r.OK {
				t.Errorf("call %s failed: %+v", r.ID, r.Error)
			}
		}
		stored[id] = len(rs)
	}
	lost, dupStored, dupLive, partnerTwice := 0, 0, 0, 0
	keys := p.KeyCounts()
	for i := range total {
		id := fmt.Sprintf("chaos-%05d", i)
		switch c := stored[id]; {
		case c == 0:
			lost++
		case c > 1:
			dupStored += c - 1
		}
		if c := seenLive[id]; c > 1 {
			dupLive += c - 1
		}
		if keys[id] > 1 {
			partnerTwice++
		}
	}
	t.Logf("chaos: %s", strings.Join(events, "; "))
	t.Logf("chaos: calls=%d stored_results=%d lost=%d duplicate_stored=%d duplicate_live=%d partner_saw_twice=%d (idempotent GETs)",
		total, len(stored), lost, dupStored, dupLive, partnerTwice)
	t.Logf("chaos: live results seen=%d", len(seenLive))
	if step < 3 {
		t.Errorf("only %d of 3 faults were injected", step)
	}
	if lost != 0 || dupStored != 0 {
		t.Fatalf("lost=%d duplicate stored results=%d; want 0 and 0", lost, dupStored)
	}
}
