package integration

import (
	"bufio"
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

var (
	callsGroup   = raftGroup{stream: jobs.StreamCalls}
	workersGroup = raftGroup{stream: jobs.StreamCalls, consumer: jobs.ConsumerWorkers}
	resultsGroup = raftGroup{stream: jobs.StreamResults}
)

// TestLeaderLoss kills, with SIGKILL, the nats-server process that leads a
// stream while a worker publishes results, and keeps it down: the leader of
// MTLSRELAY_CALLS (and of its consumer workers), of MTLSRELAY_RESULTS, or
// of all of them at once. The two nodes left keep quorum and elect new
// leaders; meanwhile publishes get no answer or "no responders", pulls and
// acks go nowhere. Every one of 5,000 calls must still end with exactly one
// stored result, and the workers must not spin on their pull loops.
func TestLeaderLoss(t *testing.T) {
	cases := []struct {
		name string
		// victim leads these groups; the others are led elsewhere.
		victimLeads []raftGroup
	}{
		{"calls-leader", []raftGroup{callsGroup, workersGroup}},
		{"results-leader", []raftGroup{resultsGroup}},
		{"both-leaders", []raftGroup{callsGroup, workersGroup, resultsGroup}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { testLeaderLoss(t, tc.victimLeads) })
	}
}

func testLeaderLoss(t *testing.T, victimLeads []raftGroup) {
	const (
		total  = 5000
		killAt = 1000
		victim = "n1"
		other  = "n2"
	)
	cl := startProcCluster(t, 3)
	p := startPartner(t)
	cfg := writeConfig(t, `
nats: {replicas: 3}
worker: {concurrency: 32, admin_addr: "off", ack_wait: 10s, retry_base: 100ms, retry_max: 1s}
registry: {disabled: true}
log: {level: info, format: json}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "env:MTLSRELAY_TEST_PASSWORD", truststore: "file:FIX/ca.pem"}
connections:
  partner: {base_url: "PARTNER", profile: p, timeout: 10s, max_attempts: 5, breaker_failures: -1}
`, "PARTNER", p.URL())
	// Two workers, 64 calls in flight between them: one connected to the
	// node that dies (it loses its connection too, and reconnects to the
	// servers it learned of), one to a node that lives (it only sees the
	// election).
	workers := []*workerProcess{
		startWorkerProcess(t, cl.node(victim).url, cfg, "on-victim"),
		startWorkerProcess(t, cl.node(other).url, cfg, "on-other"),
	}
	logs := func() string { return workers[0].logs.String() + workers[1].logs.String() }

	nc, js := floodClient(t, cl.URL(), total)
	// Place the leaders: the victim leads exactly the groups of the case.
	for _, g := range []raftGroup{callsGroup, workersGroup, resultsGroup} {
		lead := other
		for _, v := range victimLeads {
			if v == g {
				lead = victim
			}
		}
		g.moveLeader(t, nc, js, lead)
	}

	live, err := nc.SubscribeSync("mtlsrelay.results.leaderloss.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := live.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	for i := range total {
		id := fmt.Sprintf("ll-%05d", i)
		msg := nats.NewMsg("mtlsrelay.calls.partner")
		msg.Header.Set("Nats-Msg-Id", id)
		msg.Data = fmt.Appendf(nil, `{"id":%q,"path":"slow","query":{"ms":["20"]},"headers":{%q:[%q]},"reply_to":"mtlsrelay.results.leaderloss.%s"}`,
			id, partner.KeyHeader, id, id)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publishing calls timed out")
	}

	// Kill the victim once results flow, while the worker publishes more.
	seen := map[string]bool{}
	for len(seen) < killAt {
		m, err := live.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("%d live results before the kill: %v\n%s", len(seen), err, logs())
		}
		seen[m.Header.Get(jobs.HeaderCallID)] = true
	}
	cl.kill(t, victim)
	killed := time.Now()
	t.Logf("killed %s (leader of %v) at %d live results", victim, victimLeads, len(seen))

	waitResultsStored(t, js, total, 3*time.Minute, func() string {
		return fmt.Sprintf("%s after the kill; worker log:\n%s", time.Since(killed).Round(time.Second), tail(logs(), 40))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	waitCallsSettled(ctx, t, js, time.Minute)
	t.Logf("every result stored %s after the kill", time.Since(killed).Round(100*time.Millisecond))

	stored := readStoredResults(ctx, t, js)
	lost, dup, failed := 0, 0, 0
	for i := range total {
		id := fmt.Sprintf("ll-%05d", i)
		switch n := len(stored[id]); {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
		for _, r := range stored[id] {
			if !r.OK {
				failed++
				if failed <= 5 {
					t.Errorf("call %s failed: %+v", id, r.Error)
				}
			}
		}
	}
	twice := 0
	for _, n := range p.KeyCounts() {
		if n > 1 {
			twice++
		}
	}
	pullLines := countLines(logs(), "pull", "fetch")
	t.Logf("calls=%d stored=%d lost=%d duplicate_stored=%d failed=%d partner_saw_twice=%d pull_log_lines=%d result_publish_retries=%d stored_found_on_redelivery=%d",
		total, len(stored), lost, dup, failed, twice, pullLines,
		countLines(logs(), "result not acknowledged"), countLines(logs(), "result is stored already"))
	if lost != 0 || dup != 0 {
		t.Errorf("lost=%d duplicate stored results=%d; want 0 and 0", lost, dup)
	}
	// A pull loop that retries without backoff logs thousands of lines a
	// second while the consumer has no leader; one line per change of state
	// is what an operator can read.
	if pullLines > 20 {
		t.Errorf("the worker logged %d lines about pulling calls; want a few (one per change of state):\n%s",
			pullLines, tail(logs(), 20))
	}
}

// waitResultsStored waits until MTLSRELAY_RESULTS holds at least total
// messages; detail says more when it does not within the time given.
func waitResultsStored(t *testing.T, js jetstream.JetStream, total uint64, within time.Duration, detail func() string) {
	t.Helper()
	checkFor(t, within, 250*time.Millisecond, func() error {
		// Each look has its own deadline: a request that went to a node
		// just killed is never answered.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, jobs.StreamResults)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs < total {
			return fmt.Errorf("%d of %d results stored %s", info.State.Msgs, total, detail())
		}
		return nil
	})
}

// readStoredResults reads all of MTLSRELAY_RESULTS, keyed by call id.
func readStoredResults(ctx context.Context, t *testing.T, js jetstream.JetStream) map[string][]jobs.Result {
	t.Helper()
	// Each request has its own deadline and is tried again: a cluster that
	// just lost a node may not answer one (a request that reached the node
	// before it died, an API call while a leader moves).
	var cons jetstream.Consumer
	var want uint64
	checkFor(t, time.Minute, 250*time.Millisecond, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := js.Stream(rctx, jobs.StreamResults)
		if err != nil {
			return err
		}
		info, err := s.Info(rctx)
		if err != nil {
			return err
		}
		c, err := js.OrderedConsumer(rctx, jobs.StreamResults, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		cons, want = c, info.State.Msgs
		return nil
	})
	stored := map[string][]jobs.Result{}
	var read uint64
	// A cluster that just lost a node may answer a fetch with "no
	// responders" while a consumer moves; the ordered consumer resumes
	// after the last message it handed over.
	deadline := time.Now().Add(time.Minute)
	for read < want {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("read %d of %d stored results: %v", read, want, err)
			}
			time.Sleep(250 * time.Millisecond)
			continue
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r jobs.Result
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatal(err)
			}
			stored[r.ID] = append(stored[r.ID], r)
		}
		read += uint64(n)
		if n == 0 && time.Now().After(deadline) {
			t.Fatalf("read %d of %d stored results: %v", read, want, batch.Error())
		}
	}
	return stored
}

// countLines counts the lines of logs that contain any of words, ignoring
// case.
func countLines(logs string, words ...string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.ToLower(sc.Text())
		for _, w := range words {
			if strings.Contains(line, w) {
				n++
				break
			}
		}
	}
	return n
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
