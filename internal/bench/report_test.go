package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteTableShowsEveryFigure(t *testing.T) {
	phase := func(name, loop string) *Phase {
		return &Phase{Name: name, Loop: loop, InFlight: 64, OfferedRate: 1500, Calls: 30000, Throughput: 3000,
			P50MS: 1.5, P99MS: 9.25, MaxMS: 20, Connections: 1, FullHandshakesPer1000: 0.03,
			AllocsPerCall: 500, BytesPerCall: 61440, CPUPerCallUS: 300, CPUCores: 1.9, PeakRSSMiB: 90}
	}
	rep := &Report{
		Setup:  Setup{Mode: "side-by-side", Protocol: "HTTP/2.0", Method: "POST", Idempotent: true, Route: "/bytes", BodyBytes: 256, ResponseBytes: 256, Concurrency: 64, Workers: 1, Seconds: 10, WarmupSeconds: 2, NumCPU: 2, LoadAverage: [2]float64{3.5, 1}},
		Direct: phase("direct", "closed"), Relay: phase("relay", "closed"),
		PacedDirect: phase("direct", "paced"), PacedRelay: phase("relay", "paced"),
		Ratio: 0.25, PacedRate: 1500, AddedP50MS: 1.25, AddedP99MS: 7.5, PeakRSSMiB: 95.5,
	}
	rep.PacedWarning = "relay could not keep up with 1500 calls/s (7 calls skipped); the added latency measures a backlog"
	rep.PacedRelay.Stages = &Stages{EnqueueP50MS: 0.5, QueuedP50MS: 0.25, AttemptP50MS: 0.5}
	rep.Relay.FirstError = "enqueue: nats: timeout"
	var out bytes.Buffer
	writeTable(&out, rep)
	for _, s := range []string{
		"HTTP/2.0 POST /bytes (256-byte body, 256-byte response), 1 worker, 64 calls in flight",
		"closed 64", "paced 1500/s", "throughput relay/direct: 0.25", "p50 +1.25 ms, p99 +7.50 ms",
		"60.0", "relay paced stages p50/p99 ms: enqueue 0.50", "way back 0.25",
		"warning: relay could not keep up with 1500 calls/s (7 calls skipped)",
		"peak RSS (VmHWM over the whole run): 95.5 MiB", "first error, relay closed: enqueue: nats: timeout",
		"load average 3.50 at start", "load average 3.50 before the run on 2 CPUs", "figures are noisy",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}
