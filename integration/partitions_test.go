package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// With nats.partitions: 3 on a real 3-node cluster whose servers map
// mtlsrelay.calls.* over 3 partitions (as docs/SCALING.md says to
// configure them), calls spread over 3 streams led by 3 different
// servers, and exactly-once holds: every call reaches the partner once and
// has one result, and a call published twice is stored once, because all
// publishes of one call reach the same partition and its duplicate window.
func TestPartitionsCluster(t *testing.T) {
	const parts = 3
	src, dst := jobs.Subjects{}.PartitionMapping(parts)
	c := startProcClusterWith(t, 3, fmt.Sprintf("mappings: { %q: %q }", src, dst))
	p := startPartner(t)

	var conns strings.Builder
	const nConns = 30
	for i := range nConns {
		fmt.Fprintf(&conns, "  c%02d: {base_url: \"%s/\", profile: p}\n", i, p.URL())
	}
	cfg := configYAML(t, `
nats: {replicas: 3, partitions: 3}
worker: {concurrency: 32, admin_addr: "off", retry_base: 20ms, retry_max: 200ms}
log: {level: info, format: json}
registry: {disabled: true}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
connections:
`+conns.String())
	startWorker(t, c.URL(), cfg)
	startWorker(t, c.URL(), cfg)
	nc, js := connect(t, c.URL())
	ctx := context.Background()

	// Leaders on three different servers: partition i on node i+1.
	for i := range parts {
		placeLeader(t, nc, js, jobs.PartitionStream(i), fmt.Sprintf("n%d", i+1))
	}
	leaders := map[string]string{}
	for i := range parts {
		s, err := js.Stream(ctx, jobs.PartitionStream(i))
		if err != nil {
			t.Fatal(err)
		}
		leaders[s.CachedInfo().Cluster.Leader] = jobs.PartitionStream(i)
	}
	if len(leaders) != parts {
		t.Fatalf("partition leaders %v: want %d different servers", leaders, parts)
	}

	results := map[string]int{}
	var mu sync.Mutex
	sub, err := nc.Subscribe("mtlsrelay.results.parts.>", func(m *nats.Msg) {
		var r jobs.Result
		if err := json.Unmarshal(m.Data, &r); err != nil || !r.OK {
			t.Errorf("result %s", m.Data)
			return
		}
		mu.Lock()
		results[r.ID]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const perConn = 50
	var ids []string
	publish := func(batch [][2]string) (dupAcks int) {
		t.Helper()
		var futures []jetstream.PubAckFuture
		for _, b := range batch {
			msg := nats.NewMsg(b[0])
			msg.Data = []byte(b[1])
			var call struct{ ID string }
			_ = json.Unmarshal(msg.Data, &call)
			msg.Header.Set(jobs.HeaderMsgID, call.ID)
			f, err := js.PublishMsgAsync(msg)
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					dupAcks++
				}
				if !strings.HasPrefix(ack.Stream, jobs.StreamCalls+"_PART") {
					t.Fatalf("a call was stored in %s, not in a partition: is the servers' mapping in place?", ack.Stream)
				}
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-time.After(60 * time.Second):
				t.Fatal("publish not acknowledged")
			}
		}
		return dupAcks
	}
	var first, second [][2]string
	for i := range nConns * perConn {
		conn := fmt.Sprintf("c%02d", i%nConns)
		id := fmt.Sprintf("part-%d", i)
		ids = append(ids, id)
		data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": "mtlsrelay.results.parts." + id,
			"headers": map[string][]string{partner.KeyHeader: {id}}})
		first = append(first, [2]string{"mtlsrelay.calls." + conn, string(data)})
		if i%10 == 0 {
			// A flow that publishes again after a lost PubAck.
			second = append(second, [2]string{"mtlsrelay.calls." + conn, string(data)})
		}
	}
	if n := publish(first); n != 0 {
		t.Errorf("%d first publishes acknowledged as duplicates", n)
	}
	if n := publish(second); n != len(second) {
		t.Errorf("%d of %d calls published again were acknowledged as duplicates; each must be stored once", n, len(second))
	}
	checkFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(results) < len(ids) {
			return fmt.Errorf("%d of %d results", len(results), len(ids))
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	keys := p.KeyCounts()
	for _, id := range ids {
		if results[id] != 1 || keys[id] != 1 {
			t.Errorf("call %s: %d results and %d partner requests, want 1 and 1", id, results[id], keys[id])
		}
	}
	stored := uint64(0)
	for i := range parts {
		s, err := js.Stream(ctx, jobs.PartitionStream(i))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (leader %s): %d calls", info.Config.Name, info.Cluster.Leader, info.State.LastSeq)
		if info.State.LastSeq == 0 {
			t.Errorf("%s got no calls: they did not spread", info.Config.Name)
		}
		stored += info.State.LastSeq
	}
	if stored != uint64(len(ids)) {
		t.Errorf("the partitions stored %d calls, want %d (one per call, duplicates dropped)", stored, len(ids))
	}
}

// placeLeader makes server the leader of stream, by a leader stepdown with
// a preferred server (nats-server 2.11+).
func placeLeader(t *testing.T, nc *nats.Conn, js jetstream.JetStream, stream, server string) {
	t.Helper()
	ctx := context.Background()
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster != nil && info.Cluster.Leader == server {
			return nil
		}
		body, _ := json.Marshal(map[string]any{"placement": map[string]any{"preferred": server}})
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, body, 5*time.Second); err != nil {
			return err
		}
		return fmt.Errorf("%s led by %s, asked for %s", stream, info.Cluster.Leader, server)
	})
}
