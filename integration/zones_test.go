package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/internal/testproxy"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/registry"
)

// zoneWorker is a worker process of one zone, reaching partners only
// through its zone's egress proxy.
type zoneWorker struct {
	name string
	logs *syncBuffer
}

// appliedRevision is the registry revision the worker applied last.
var appliedRE = regexp.MustCompile(`"revision":(\d+)[^\n]*"message":"registry applied"`)

func (z *zoneWorker) applied() uint64 {
	var last uint64
	for _, m := range appliedRE.FindAllStringSubmatch(z.logs.String(), -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		last = max(last, n)
	}
	return last
}

// startZoneWorker runs `mtlsrelay serve` with worker.zones and an egress
// proxy of its own, as a DMZ and an internal worker would run.
func startZoneWorker(t *testing.T, natsURL, name, zones, proxyAddr string) *zoneWorker {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), name+".yaml")
	cfg := configYAML(t, `
worker:
  concurrency: 32
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 200ms
  zones: ZONES
  proxy: zone-proxy
  reply_prefixes: [_INBOX_zones]
proxies:
  zone-proxy: {url: "http://PROXY"}
log: {level: debug, format: json}
profiles:
  p: {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
`, "ZONES", zones, "PROXY", proxyAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startWorkerProcess(t, natsURL, cfgPath, name)
	z := &zoneWorker{name: name, logs: p.logs}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(p.logs.String(), "registry applied") {
			return fmt.Errorf("worker %s has not applied the registry:\n%s", name, tail(p.logs.String(), 20))
		}
		return nil
	})
	return z
}

// zonePartner is a partner only some zones reach.
type zonePartner struct {
	*partner.Server
}

// Two zones, a worker in each that reaches only its own zone's partner
// (through a proxy that refuses the others): 1,000 calls per connection
// all run in the right zone; a connection moved from zone default to dmz
// in the registry under load finishes every call exactly once, and none
// starts in the old zone once both workers applied the move (the cut-over
// rule: a call runs in the zone its connection has when a worker takes
// it). Direct calls go to their zone too, and one of a zone without
// workers ends zone_unavailable at once.
func TestZones(t *testing.T) {
	srv := startNATS(t)
	natsURL := srv.ClientURL()
	nc, js := connect(t, natsURL)

	internal := zonePartner{Server: startPartner(t)}
	dmz := zonePartner{Server: startPartner(t)}
	moving := zonePartner{Server: startPartner(t)}
	// Each zone's proxy reaches its own zone's partner and the moving one.
	only := func(ps ...zonePartner) func(string) bool {
		return func(target string) bool {
			for _, p := range ps {
				if target == p.Addr() {
					return true
				}
			}
			return false
		}
	}
	internalProxy := testproxy.Start(t, "", "", nil)
	internalProxy.SetAllow(only(internal, moving))
	dmzProxy := testproxy.Start(t, "", "", nil)
	dmzProxy.SetAllow(only(dmz, moving))

	ctx := context.Background()
	reg, err := registry.Open(ctx, js, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(name, zone string, p zonePartner) uint64 {
		t.Helper()
		if err := reg.PutConnection(ctx, name, catalog.Connection{BaseURL: p.URL() + "/", Profile: "p", Zone: zone, MaxAttempts: 1}); err != nil {
			t.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, jobs.RegistryBucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "connections."+name)
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	put("z-internal", "", internal)
	put("z-dmz", "dmz", dmz)
	put("z-moving", "default", moving)
	put("z-nowhere", "nowhere", internal)

	wInternal := startZoneWorker(t, natsURL, "zone-internal", "[default]", internalProxy.Addr())
	wDMZ := startZoneWorker(t, natsURL, "zone-dmz", "[dmz]", dmzProxy.Addr())

	results := map[string][]jobs.Result{}
	var mu sync.Mutex
	sub, err := nc.Subscribe("mtlsrelay.results.zones.>", func(m *nats.Msg) {
		var r jobs.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("result is not JSON: %s", m.Data)
			return
		}
		mu.Lock()
		results[r.ID] = append(results[r.ID], r)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const perConnection = 1000
	publish := func(conn string, from, to int) []string {
		t.Helper()
		var ids []string
		var futures []jetstream.PubAckFuture
		for i := from; i < to; i++ {
			id := fmt.Sprintf("%s-%d", conn, i)
			ids = append(ids, id)
			data, _ := json.Marshal(map[string]any{"id": id, "path": "echo", "reply_to": "mtlsrelay.results.zones." + id,
				"headers": map[string][]string{partner.KeyHeader: {id}}})
			msg := nats.NewMsg("mtlsrelay.calls." + conn)
			msg.Data = data
			msg.Header.Set(jobs.HeaderMsgID, id)
			f, err := js.PublishMsgAsync(msg)
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("publish not acknowledged in 30s")
			}
		}
		return ids
	}

	var internalIDs, dmzIDs, movingBefore, movingAfter []string
	var wg sync.WaitGroup
	wg.Go(func() { internalIDs = publish("z-internal", 0, perConnection) })
	wg.Go(func() { dmzIDs = publish("z-dmz", 0, perConnection) })
	movingBefore = publish("z-moving", 0, perConnection/2)
	wg.Wait()

	// The move, under load: calls of all three connections are queued or
	// running now.
	rev := put("z-moving", "dmz", moving)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, w := range []*zoneWorker{wInternal, wDMZ} {
			if got := w.applied(); got < rev {
				return fmt.Errorf("worker %s applied registry revision %d, want %d", w.name, got, rev)
			}
		}
		return nil
	})
	cutOver := time.Now()
	movingAfter = publish("z-moving", perConnection/2, perConnection)

	all := append(append(append(append([]string{}, internalIDs...), dmzIDs...), movingBefore...), movingAfter...)
	checkFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for _, id := range all {
			if len(results[id]) == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d calls have no result yet\ninternal worker:\n%s\ndmz worker:\n%s", missing, len(all),
				tail(wInternal.logs.String(), 8), tail(wDMZ.logs.String(), 8))
		}
		return nil
	})
	// Results published twice would show here (the results stream drops a
	// duplicate, but a core subscriber sees every publish).
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	check := func(ids []string, p zonePartner, want func(r jobs.Result) string) {
		t.Helper()
		keys := p.KeyCounts()
		bad := 0
		for _, id := range ids {
			rs := results[id]
			if len(rs) != 1 {
				t.Errorf("call %s: %d results, want exactly 1", id, len(rs))
				continue
			}
			r := rs[0]
			if !r.OK {
				t.Errorf("call %s failed: %+v", id, r.Error)
			}
			if w := want(r); r.Worker != w && bad < 5 {
				bad++
				t.Errorf("call %s ran on %s, want %s (completed %s)", id, r.Worker, w, r.CompletedAt.Format(time.RFC3339Nano))
			}
			if keys[id] != 1 {
				t.Errorf("the partner received call %s %d times, want once", id, keys[id])
			}
		}
	}
	check(internalIDs, internal, func(jobs.Result) string { return "zone-internal" })
	check(dmzIDs, dmz, func(jobs.Result) string { return "zone-dmz" })
	// Calls queued before the move ran in either zone, each once; a call
	// started after both workers applied it ran in zone dmz.
	check(movingBefore, moving, func(r jobs.Result) string {
		started := r.CompletedAt.Add(-time.Duration(r.Timing.TotalMS * float64(time.Millisecond)))
		if started.After(cutOver) {
			return "zone-dmz"
		}
		return r.Worker
	})
	check(movingAfter, moving, func(jobs.Result) string { return "zone-dmz" })
	ranBefore := 0
	for _, id := range movingBefore {
		if rs := results[id]; len(rs) == 1 && rs[0].Worker == "zone-internal" {
			ranBefore++
		}
	}
	t.Logf("of %d calls of z-moving queued before the move, %d ran in zone default and %d in zone dmz",
		len(movingBefore), ranBefore, len(movingBefore)-ranBefore)
	if n := internalProxy.Seen(); countStatus(n, 403) > 0 {
		t.Errorf("the internal worker tried to reach a partner of another zone %d times", countStatus(n, 403))
	}
	if n := dmzProxy.Seen(); countStatus(n, 403) > 0 {
		t.Errorf("the dmz worker tried to reach a partner of another zone %d times", countStatus(n, 403))
	}
	mu.Unlock()

	// Direct calls reply under worker.reply_prefixes, which here lack the
	// default _INBOX: relaying to a zone must not depend on it.
	inbox, err := nats.Connect(natsURL, nats.CustomInboxPrefix("_INBOX_zones"))
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Close()
	nc = inbox
	durable := func(t *testing.T, conn, id, method string, hdr nats.Header) {
		t.Helper()
		msg := nats.NewMsg("mtlsrelay.calls." + conn)
		msg.Data, _ = json.Marshal(map[string]any{"id": id, "method": method, "path": "echo", "reply_to": "mtlsrelay.results.zones." + id,
			"headers": map[string][]string{partner.KeyHeader: {id}}})
		for k, v := range hdr {
			msg.Header[k] = v
		}
		msg.Header.Set(jobs.HeaderMsgID, id)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	waitResult := func(t *testing.T, id string) jobs.Result {
		t.Helper()
		var r jobs.Result
		checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(results[id]) == 0 {
				return fmt.Errorf("no result for %s", id)
			}
			r = results[id][0]
			return nil
		})
		return r
	}
	t.Run("ok/nats-expected-headers-do-not-stop-a-forward", func(t *testing.T) {
		// Valid on the flow's publish, refused by MTLSRELAY_ZONES if copied.
		durable(t, "z-dmz", "expect-stream", "GET", nats.Header{"Nats-Expected-Stream": {jobs.StreamCalls}})
		if r := waitResult(t, "expect-stream"); !r.OK || r.Worker != "zone-dmz" {
			t.Fatalf("call published with Nats-Expected-Stream: ok=%v worker=%s error=%+v", r.OK, r.Worker, r.Error)
		}
	})
	t.Run("ok/forged-forwarding-headers-are-ignored", func(t *testing.T) {
		durable(t, "z-internal", "forged", "GET", nats.Header{jobs.HeaderForwarded: {"8"}, jobs.HeaderEnqueued: {"2001-01-01T00:00:00Z"}})
		if r := waitResult(t, "forged"); !r.OK || r.Worker != "zone-internal" || r.Timing.QueuedMS > 60_000 {
			t.Fatalf("call with forged forwarding headers: ok=%v worker=%s queued=%v error=%+v", r.OK, r.Worker, r.Timing.QueuedMS, r.Error)
		}
	})
	t.Run("ok/second-copy-of-a-forwarded-call-does-not-run", func(t *testing.T) {
		durable(t, "z-dmz", "get-once", "GET", nil)
		if r := waitResult(t, "get-once"); !r.OK || r.Worker != "zone-dmz" {
			t.Fatalf("forwarded GET: %+v", r)
		}
		// A forward stored again past the duplicate window is a second
		// copy with the same origin: find the origin the forward recorded.
		kv, err := js.KeyValue(ctx, "mtlsrelay_call_state")
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeysFiltered(ctx, "f.>")
		if err != nil {
			t.Fatal(err)
		}
		var origins []string
		for k := range keys.Keys() {
			origins = append(origins, strings.TrimPrefix(k, "f."))
		}
		before := len(origins)
		if before == 0 {
			t.Fatal("no forward recorded in mtlsrelay_call_state")
		}
		for _, o := range origins {
			msg := nats.NewMsg("mtlsrelay.zone.dmz.calls.z-dmz")
			// A GET (no call state) and another reply_to, so that neither a
			// completed call's state nor a stored result stops it: only the
			// claim on its origin does.
			msg.Data, _ = json.Marshal(map[string]any{"id": "get-once", "path": "echo", "reply_to": "mtlsrelay.results.zones.get-once-copy",
				"headers": map[string][]string{partner.KeyHeader: {"get-once"}}})
			msg.Header.Set(jobs.HeaderMsgID, "second-copy-"+o)
			msg.Header.Set(jobs.HeaderOrigin, o)
			msg.Header.Set(jobs.HeaderForwarded, "1")
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			s, err := js.Stream(ctx, jobs.StreamZones)
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			if info.State.Msgs > 0 {
				return fmt.Errorf("%d messages in %s: the second copy was not taken", info.State.Msgs, jobs.StreamZones)
			}
			return nil
		})
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		n := len(results["get-once"])
		mu.Unlock()
		if k := dmz.KeyCounts()["get-once"]; k != 1 || n != 1 {
			t.Errorf("the partner received the forwarded GET %d times, with %d results; want once", k, n)
		}
	})

	t.Run("ok/direct-call-runs-in-its-zone", func(t *testing.T) {
		data, _ := json.Marshal(map[string]any{"id": "direct-dmz", "path": "echo"})
		m, err := nc.Request("mtlsrelay.rpc.z-dmz", data, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r jobs.Result
		if err := json.Unmarshal(m.Data, &r); err != nil || !r.OK || r.Worker != "zone-dmz" {
			t.Fatalf("direct call to a dmz connection: ok=%v worker=%s error=%+v (%v)", r.OK, r.Worker, r.Error, err)
		}
	})
	t.Run("fail/zone-without-workers", func(t *testing.T) {
		data, _ := json.Marshal(map[string]any{"id": "direct-nowhere", "path": "echo"})
		start := time.Now()
		m, err := nc.Request("mtlsrelay.rpc.z-nowhere", data, 10*time.Second)
		if err != nil {
			t.Fatalf("direct call to a zone without workers: %v after %s, want zone_unavailable at once", err, time.Since(start))
		}
		var r jobs.Result
		if err := json.Unmarshal(m.Data, &r); err != nil || r.OK || r.Error == nil || r.Error.Code != jobs.CodeZoneUnavailable || !r.Error.Retryable {
			t.Fatalf("direct call to a zone without workers: %s", m.Data)
		}
		// A durable one waits in MTLSRELAY_ZONES for a worker of its zone.
		msg := nats.NewMsg("mtlsrelay.calls.z-nowhere")
		msg.Data, _ = json.Marshal(map[string]any{"id": "durable-nowhere", "path": "echo", "reply_to": "mtlsrelay.results.zones.durable-nowhere"})
		msg.Header.Set(jobs.HeaderMsgID, "durable-nowhere")
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			s, err := js.Stream(ctx, jobs.StreamZones)
			if err != nil {
				return err
			}
			m, err := s.GetLastMsgForSubject(ctx, "mtlsrelay.zone.nowhere.calls.z-nowhere")
			if err != nil {
				return err
			}
			if m.Header.Get(jobs.HeaderForwarded) != "1" {
				return fmt.Errorf("forwarded call has %s %q", jobs.HeaderForwarded, m.Header.Get(jobs.HeaderForwarded))
			}
			return nil
		})
		mu.Lock()
		rs := results["durable-nowhere"]
		mu.Unlock()
		if len(rs) != 0 {
			t.Errorf("a call of a zone without workers ran: %+v", rs)
		}
	})
	t.Run("ok/status-shows-zones", func(t *testing.T) {
		out, stderr, code := runCLI(t, nil, "status", "--nats", natsURL, "--json")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, stderr)
		}
		var fleet struct {
			Workers []struct {
				Worker string
				Zones  []string
			}
			Zones []struct {
				Zone    string
				Pending uint64
			}
		}
		if err := json.Unmarshal([]byte(out), &fleet); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		zonesOf := map[string]string{}
		for _, w := range fleet.Workers {
			zonesOf[w.Worker] = strings.Join(w.Zones, ",")
		}
		if zonesOf["zone-internal"] != "default" || zonesOf["zone-dmz"] != "dmz" {
			t.Errorf("status: worker zones %v", zonesOf)
		}
		seen := map[string]bool{}
		for _, z := range fleet.Zones {
			seen[z.Zone] = true
		}
		if !seen["default"] || !seen["dmz"] {
			t.Errorf("status: zones %+v, want default and dmz", fleet.Zones)
		}
	})
}

func countStatus(cs []testproxy.Connect, status int) int {
	n := 0
	for _, c := range cs {
		if c.Status == status {
			n++
		}
	}
	return n
}
