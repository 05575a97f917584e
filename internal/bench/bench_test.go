package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
)

// These tests check that a short run produces a sane report; they assert
// nothing about speed.

func TestRunSideBySideReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, prof bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		CPUProfile:    &prof,
		Concurrency:   4,
		Workers:       2,
		Duration:      250 * time.Millisecond,
		Warmup:        100 * time.Millisecond,
		BodyBytes:     64,
		ResponseBytes: 128,
		NonIdempotent: true, // the POST takes the worker's call-state path
		JSON:          true,
		Dir:           t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	var decoded bench.Report
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatalf("--json output is not one JSON report: %v\n%s", err, out.String())
	}
	if decoded.Relay == nil || decoded.Relay.Calls != rep.Relay.Calls {
		t.Errorf("JSON output differs from the returned report:\n%s", out.String())
	}
	if rep.Setup.Mode != "side-by-side" || rep.Setup.Protocol != "HTTP/2.0" || rep.Setup.Method != "POST" || rep.Setup.Idempotent || rep.Setup.Workers != 2 || rep.Setup.NATS != "process" {
		t.Errorf("setup = %+v", rep.Setup)
	}
	for _, ph := range []*bench.Phase{rep.Direct, rep.Relay, rep.PacedDirect, rep.PacedRelay} {
		if ph == nil {
			t.Fatalf("a phase is missing: %+v", rep)
		}
		checkPhase(t, ph)
	}
	if rep.Ratio <= 0 || rep.Ratio != rep.Relay.Throughput/rep.Direct.Throughput {
		t.Errorf("ratio = %v, want relay/direct = %v", rep.Ratio, rep.Relay.Throughput/rep.Direct.Throughput)
	}
	if rep.PacedRate != rep.Relay.Throughput/2 || rep.PacedFraction != 0.5 || rep.PacedRelay.OfferedRate != rep.PacedRate || rep.PacedDirect.OfferedRate != rep.PacedRate {
		t.Errorf("paced rate %v, offered %v and %v, want half of %v", rep.PacedRate, rep.PacedDirect.OfferedRate, rep.PacedRelay.OfferedRate, rep.Relay.Throughput)
	}
	if rep.AddedP50MS != rep.PacedRelay.P50MS-rep.PacedDirect.P50MS || rep.AddedP99MS != rep.PacedRelay.P99MS-rep.PacedDirect.P99MS {
		t.Errorf("added latency p50 %v p99 %v is not relay minus direct", rep.AddedP50MS, rep.AddedP99MS)
	}
	if rep.Relay.Stages == nil || rep.Relay.Stages.AttemptP50MS <= 0 || rep.Direct.Stages != nil {
		t.Errorf("stages: relay %+v, direct %+v", rep.Relay.Stages, rep.Direct.Stages)
	}
	if runtime.GOOS == "linux" && rep.PeakRSSMiB <= 0 {
		t.Errorf("peak RSS = %v", rep.PeakRSSMiB)
	}
	// The queue floor runs the flow and JetStream without workers and
	// without the partner: a call that reached the partner would mean a
	// worker still ran.
	if f := rep.Floor; f == nil || f.Calls <= 0 || f.Errors != 0 || f.PartnerRequests != 0 || f.InFlight != 4 {
		t.Errorf("queue floor phase: %+v", f)
	} else if want := f.Throughput / (f.Throughput + rep.Direct.Throughput); rep.RatioBound != want || want >= 1 {
		t.Errorf("ratio bound = %v, want floor/(floor+direct) = %v", rep.RatioBound, want)
	}
	if prof.Len() == 0 {
		t.Error("no CPU profile of the relay's closed loop was written")
	}
}

func TestRunMemoryBoundOverLimit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from /proc/self/status")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// A 1 MiB bound also sets Go's memory limit to 0.8 MiB: the collector
	// runs all the time, and on a busy machine (CI runs the integration
	// tests beside this package) a 250 ms window once saw no call finish.
	rep, err := bench.Run(ctx, bench.Options{
		Inflight:      32,
		Duration:      2 * time.Second,
		Warmup:        100 * time.Millisecond,
		BodyBytes:     0,
		ResponseBytes: 64 << 10,
		HTTP1:         true,
		MaxRSSMiB:     1,
		Dir:           t.TempDir(),
	}, &out)
	var limit *bench.RSSLimitError
	if !errors.As(err, &limit) {
		t.Fatalf("err = %v, want an *RSSLimitError\n%s", err, out.String())
	}
	if rep == nil || limit.PeakMiB != rep.PeakRSSMiB || limit.LimitMiB != 1 {
		t.Fatalf("limit error %+v, report %+v", limit, rep)
	}
	if rep.Setup.Mode != "memory-bound" || rep.Setup.Protocol != "HTTP/1.1" || rep.Setup.Method != "GET" || rep.Setup.Concurrency != 32 {
		t.Errorf("setup = %+v", rep.Setup)
	}
	if rep.Direct != nil || rep.PacedRelay != nil || rep.Floor != nil {
		t.Errorf("memory-bound mode ran more than the relay: %+v", rep)
	}
	checkPhase(t, rep.Relay)
	if rep.Relay.InFlight != 32 || rep.Relay.BytesPerCall < 64<<10 {
		t.Errorf("relay phase: in flight %d, %v bytes allocated per call of a 64 KiB response", rep.Relay.InFlight, rep.Relay.BytesPerCall)
	}
	for _, s := range []string{"memory-bound", "HTTP/1.1 GET /bytes", "relay throughput", "peak RSS"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel() // no CPU profile, no memory figure: nothing process-wide
	_, err := bench.Run(context.Background(), bench.Options{Route: "soap", BodyBytes: -1}, nil)
	if err == nil || !strings.Contains(err.Error(), "route") || !strings.Contains(err.Error(), "body bytes") {
		t.Fatalf("err = %v, want both problems named", err)
	}
}

// checkPhase checks what holds for any phase that ran: calls succeeded,
// none failed, and the partner's counters add up.
func checkPhase(t *testing.T, ph *bench.Phase) {
	t.Helper()
	name := ph.Name + " " + ph.Loop
	if ph.Calls <= 0 || ph.Throughput <= 0 {
		t.Errorf("%s: %d calls, %v calls/s", name, ph.Calls, ph.Throughput)
	}
	if ph.Errors != 0 {
		t.Errorf("%s: %d errors, first: %s", name, ph.Errors, ph.FirstError)
	}
	if ph.P50MS <= 0 || ph.P50MS > ph.P99MS || ph.P99MS > ph.MaxMS {
		t.Errorf("%s: percentiles p50 %v p99 %v max %v", name, ph.P50MS, ph.P99MS, ph.MaxMS)
	}
	// Every full handshake needs a connection of its own; a connection
	// accepted just before the window may finish its handshake inside it.
	if ph.FullHandshakes < 0 || ph.ResumedHandshakes < 0 || ph.FullHandshakes > ph.Connections+int64(max(ph.InFlight, 1)) {
		t.Errorf("%s: %d full and %d resumed handshakes on %d connections", name, ph.FullHandshakes, ph.ResumedHandshakes, ph.Connections)
	}
	if want := float64(ph.FullHandshakes) * 1000 / float64(ph.Calls+ph.Errors); ph.FullHandshakesPer1000 != want {
		t.Errorf("%s: %v full handshakes per 1000 calls, want %v", name, ph.FullHandshakesPer1000, want)
	}
	if ph.PartnerRequests <= 0 || ph.AllocsPerCall <= 0 || ph.BytesPerCall <= 0 {
		t.Errorf("%s: partner requests %d, allocs/call %v, bytes/call %v", name, ph.PartnerRequests, ph.AllocsPerCall, ph.BytesPerCall)
	}
}

// Every measured phase writes a CPU profile to ProfileDir, and its samples
// carry the part of the process that did the work, so `go tool pprof -tags`
// splits it (see BENCHMARKS.md).
func TestRunProfilesLabelParts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if _, err := bench.Run(ctx, bench.Options{
		Concurrency: 16,
		Duration:    time.Second,
		Warmup:      100 * time.Millisecond,
		Dir:         t.TempDir(),
		ProfileDir:  dir,
		// The NATS server's samples are in the profile when it is in-process.
		EmbeddedNATS: true,
	}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for profile, parts := range map[string][]string{
		"relay-closed.pprof":  {"worker", "flow", "partner", "nats-server"},
		"relay-paced.pprof":   {"worker", "flow", "partner", "nats-server"},
		"direct-closed.pprof": {"direct-client", "partner"},
		"direct-paced.pprof":  {"direct-client", "partner"},
		// The floor's responder stands in for the worker.
		"floor-closed.pprof": {"worker", "flow", "nats-server"},
	} {
		out, err := exec.Command("go", "tool", "pprof", "-tags", filepath.Join(dir, profile)).CombinedOutput()
		if err != nil {
			t.Errorf("go tool pprof -tags %s: %v\n%s", profile, err, out)
			continue
		}
		// The "part:" block lists each value with its share: "1.2s (40%): worker".
		_, block, found := strings.Cut(string(out), "part:")
		if !found {
			t.Errorf("%s: no part label:\n%s", profile, out)
			continue
		}
		block, _, _ = strings.Cut(block, "\n\n")
		for _, part := range parts {
			if !strings.Contains(block+"\n", "): "+part+"\n") {
				t.Errorf("%s: no samples labelled part=%s:\n%s", profile, part, block)
			}
		}
	}
}

func TestRunRefusesTwoProfileDestinations(t *testing.T) {
	t.Parallel() // no CPU profile, no memory figure: nothing process-wide
	_, err := bench.Run(context.Background(), bench.Options{CPUProfile: io.Discard, ProfileDir: t.TempDir()}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("Run with CPUProfile and ProfileDir: %v, want a refusal", err)
	}
}

// With NATSURL the run uses that server instead of its own, and leaves it
// as it found it; a server that already holds mtlsrelay's streams is
// refused, not emptied.
func TestRunExternalNATS(t *testing.T) {
	t.Parallel() // no CPU profile, no memory figure: nothing process-wide
	ns, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "bench-external"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		NATSURL:     ns.ClientURL(),
		Concurrency: 4,
		Duration:    250 * time.Millisecond,
		Warmup:      100 * time.Millisecond,
		Dir:         t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, ph := range []*bench.Phase{rep.Relay, rep.PacedRelay, rep.Floor} {
		if ph == nil || ph.Calls <= 0 || ph.Errors != 0 {
			t.Errorf("relay phase on the external server: %+v", ph)
		}
	}
	if want := ns.ClientURL() + " (external)"; rep.Setup.NATS != want || !strings.Contains(out.String(), "NATS server "+want) {
		t.Errorf("setup.nats = %q, want %q; table:\n%s", rep.Setup.NATS, want, out.String())
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for name := range js.StreamNames(ctx).Name() {
		t.Errorf("stream %s left on the external server after the run", name)
	}

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MTLSRELAY_RESULTS", Subjects: []string{"mtlsrelay.results.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err = bench.Run(ctx, bench.Options{NATSURL: ns.ClientURL(), Duration: 100 * time.Millisecond, Dir: t.TempDir()}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "MTLSRELAY_RESULTS") {
		t.Errorf("run on a server holding MTLSRELAY_RESULTS: %v, want a refusal naming the stream", err)
	}
	if _, err := js.Stream(ctx, "MTLSRELAY_RESULTS"); err != nil {
		t.Errorf("the refused run touched the server's stream: %v", err)
	}
}
