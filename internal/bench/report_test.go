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
		Ratio: 0.25, PacedRate: 1500, PacedFraction: 0.25, AddedP50MS: 1.25, AddedP99MS: 7.5, PeakRSSMiB: 95.5,
	}
	rep.Relay.Throughput = 6000 // a quarter of it is PacedRate
	rep.PacedWarning = "relay could not keep up with 1500 calls/s (7 calls skipped); the added latency measures a backlog"
	rep.PacedRelay.Stages = &Stages{EnqueueP50MS: 0.5, QueuedP50MS: 0.25, AttemptP50MS: 0.5}
	rep.Relay.FirstError = "enqueue: nats: timeout"
	var out bytes.Buffer
	writeTable(&out, rep)
	for _, s := range []string{
		"HTTP/2.0 POST /bytes (256-byte body, 256-byte response), 1 worker, 64 calls in flight",
		"closed 64", "paced 1500/s", "throughput relay/direct: 0.25", "p50 +1.25 ms, p99 +7.50 ms",
		"at 1500 calls/s (a quarter of the peak)",
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

func TestWriteTableLargeBodies(t *testing.T) {
	rep := &Report{
		Setup: Setup{Mode: "large-bodies", Protocol: "HTTP/2.0", Method: "GET", Route: "/bytes", ResponseBytes: 100_000_000, Concurrency: 64, Workers: 1, NumCPU: 2, NATS: "nats://127.0.0.1:4333 (external)"},
		Relay: &Phase{Name: "relay", Loop: "closed", InFlight: 64, Calls: 128, Seconds: 80, Throughput: 1.6, P50MS: 40000, P99MS: 52000, MaxMS: 52100},
		LargeBodies: &LargeBodies{BodyBytes: 100_000_000, InFlight: 64, MBPerSecond: 160, SHA256: "0123456789abcdef0123", Verified: 17, VerifyEvery: 8,
			Deleted: 128, BucketPeakMB: 6500, WorkerProcess: true, WorkerPeakRSSMiB: 600.5, LimitMiB: 512,
			Workers: []WorkerMemory{{Name: "bench-worker-1", PeakRSSMiB: 600.5, VmHWMMiB: 600.5, SampledRSSMiB: 598, MaxRSSMiB: 600.4, HeapPeakMiB: 400, GCCycles: 90, MemoryLimitMiB: 409.6, CPUSeconds: 70}}},
		PeakRSSMiB: 300,
	}
	var out bytes.Buffer
	writeTable(&out, rep)
	for _, s := range []string{
		"(large-bodies): HTTP/2.0 GET /bytes (no body, 100000000-byte response, by body_ref), 1 worker in a process of its own, 64 calls in flight",
		"every call measured, no warm-up", "NATS server nats://127.0.0.1:4333 (external)",
		"bodies: 128 of 100000000 bytes by body_ref in 80.0 s, 160.0 MB/s", "17 bodies (the first and 1 in 8)",
		"deleted once their result was in: 128 (0 failed); bucket at most 6500 MB",
		"worker process bench-worker-1: peak RSS 600.5 MiB (VmHWM 600.5, largest VmRSS sampled 598.0, ru_maxrss 600.4)", "Go memory limit 410 MiB",
		"peak RSS of the worker process with 64 calls of 100000000 bytes in flight: 600.5 MiB: OVER the bound of 512 MiB",
		"peak RSS of the bench process, without the worker", "the worker's own are above",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestWriteTableDirectCalls(t *testing.T) {
	paced := func(name string, p50, p99 float64) *Phase {
		return &Phase{Name: name, Loop: "paced", OfferedRate: 200, Calls: 2000, Throughput: 200, P50MS: p50, P99MS: p99, MaxMS: p99 + 1}
	}
	dc := &DirectCalls{Rate: 200, IdleDirect: paced("direct (idle)", 1, 3), IdleRPC: paced("rpc (idle)", 1.5, 4),
		LoadRate: 2500, LoadFraction: 0.5, Load: paced("relay (load)", 2, 40), LoadedDirect: paced("direct (loaded)", 1, 12), LoadedRPC: paced("rpc (loaded)", 1.5, 24),
		IdleAddedP50MS: 0.5, IdleAddedP99MS: 1, LoadedAddedP50MS: 0.5, LoadedAddedP99MS: 12, LoadedOverIdleP99: 6, DirectLoadedOverIdleP99: 4, IdleMet: true}
	dc.Load.OfferedRate = 2500
	dc.IdleRPC.Stages = &Stages{AttemptP50MS: 0.25, AttemptP99MS: 1.5}
	rep := &Report{
		Setup:       Setup{Mode: "direct-calls", Protocol: "HTTP/2.0", Method: "POST", Idempotent: true, Route: "/bytes", BodyBytes: 256, ResponseBytes: 256, Concurrency: 64, Workers: 1, NumCPU: 2},
		Relay:       &Phase{Name: "relay", Loop: "closed", InFlight: 64, Calls: 50000, Throughput: 5000, P50MS: 10, P99MS: 30},
		DirectCalls: dc,
	}
	var out bytes.Buffer
	writeTable(&out, rep)
	for _, s := range []string{
		"(direct-calls)", "direct (idle)", "rpc (loaded)", "paced 2500/s",
		"rpc (idle): the worker's attempt p50/p99 0.25/1.50 ms; the rest (NATS both ways, the worker's and client's own work) 1.25 ms at p50",
		"relay durable peak: 5000 calls/s with 64 calls in flight",
		"direct calls at 200 calls/s on the idle worker, over the partner's own time: p50 +0.50 ms, p99 +1.00 ms (rpc p99 4.00 ms, direct 3.00 ms); target p99 at most +5 ms: met",
		"with a durable load of 2500 calls/s (half the peak): rpc p99 24.00 ms, 6.00 x the idle p99; target at most 2 x: NOT met",
		"the partner's own p99 (direct client) went from 3.00 to 12.00 ms, 4.00 x",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

// Under another load than half the peak the loaded target is not judged:
// it names half the peak.
func TestWriteTableDirectCallsOtherLoad(t *testing.T) {
	paced := func(name string, p99 float64) *Phase {
		return &Phase{Name: name, Loop: "paced", OfferedRate: 200, Calls: 2000, Throughput: 200, P50MS: 1, P99MS: p99, MaxMS: p99 + 1}
	}
	dc := &DirectCalls{Rate: 200, IdleDirect: paced("direct (idle)", 3), IdleRPC: paced("rpc (idle)", 4),
		LoadRate: 1250, LoadFraction: 0.25, Load: paced("relay (load)", 40), LoadedDirect: paced("direct (loaded)", 4), LoadedRPC: paced("rpc (loaded)", 5),
		LoadedOverIdleP99: 1.25, IdleMet: true}
	rep := &Report{
		Setup:       Setup{Mode: "direct-calls", Protocol: "HTTP/2.0", Method: "GET", Route: "/bytes", Concurrency: 64, Workers: 1, NumCPU: 2},
		Relay:       &Phase{Name: "relay", Loop: "closed", InFlight: 64, Calls: 50000, Throughput: 5000, P50MS: 10, P99MS: 30},
		DirectCalls: dc,
	}
	var out bytes.Buffer
	writeTable(&out, rep)
	want := "with a durable load of 1250 calls/s (a quarter of the peak): rpc p99 5.00 ms, 1.25 x the idle p99; target at most 2 x: not judged (the target is set at half the peak)"
	if !strings.Contains(out.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, out.String())
	}
}

// The CPU-by-process table shows a column per process that ran, "-" where
// one did not run in a phase, and says what the direct figure includes.
func TestWriteTableProcessCPU(t *testing.T) {
	ph := func(name string, procs ...ProcessCPU) *Phase {
		return &Phase{Name: name, Loop: "closed", InFlight: 64, Calls: 1000, Throughput: 100, Processes: procs}
	}
	rep := &Report{
		Setup:  Setup{Mode: "side-by-side", BenchProcess: "partner, load generator (direct client or flow)", NATS: "process"},
		Direct: ph("direct", ProcessCPU{Name: "bench", CPUPerCallUS: 90, Cores: 0.9}, ProcessCPU{Name: "nats-server", CPUPerCallUS: 1}),
		Relay: ph("relay", ProcessCPU{Name: "bench", CPUPerCallUS: 80, Cores: 0.5}, ProcessCPU{Name: "worker-1", CPUPerCallUS: 100, Cores: 0.5},
			ProcessCPU{Name: "worker-2", CPUPerCallUS: 110, Cores: 0.5}, ProcessCPU{Name: "nats-server", CPUPerCallUS: 120, Cores: 0.25}),
	}
	rep.Ratio = 1
	rep.CPU = cpuSummary(rep)
	if rep.CPU.RelayWorker != 210 || rep.CPU.PartnerApart || rep.CPU.WorkerOverDirect != 210.0/90 {
		t.Errorf("summary %+v", rep.CPU)
	}
	var out bytes.Buffer
	writeTable(&out, rep)
	for _, s := range []string{
		"CPU µs/CALL BY PROCESS", "WORKER", "NATS-SERVER",
		// relay: bench 80, workers 100+110, nats 120; total 410, cores 1.75
		"210", "410", "1.75",
		"CPU per call, worker / direct client: 2.33 (210 µs / 90 µs, the bench process's in the direct phase, the partner's share included)",
		"bench process: partner, load generator",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
	// No Benthos, no partner process: no column for them.
	if strings.Contains(out.String(), "BENTHOS") || strings.Contains(out.String(), "PARTNER") {
		t.Errorf("a column for a process that never ran:\n%s", out.String())
	}
}
