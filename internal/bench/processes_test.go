package bench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// The side-by-side mode as `mtlsrelay bench` runs it by default: the NATS
// server, the worker and the partner in processes of their own, and (not
// under -short, which would build Benthos) the peer phases through the real
// Benthos. Each process's CPU is its own: the worker's shows in the relay
// phases and not in the others, Benthos's in the peer phases; the bench
// process then holds the load generator alone. Every process is gone when
// Run returns.
func TestRunSideBySideProcesses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the processes' CPU is read from /proc/<pid>/stat")
	}
	peer := !testing.Short()
	if peer {
		bench.BenthosForTest(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	profile := filepath.Join(t.TempDir(), "worker.pprof")
	rep, err := bench.Run(ctx, bench.Options{
		Concurrency:      8,
		Duration:         time.Second,
		Warmup:           200 * time.Millisecond,
		WorkerCommand:    testWorkerCommand,
		WorkerEnv:        []string{"GOGC=300"},
		WorkerCPUProfile: profile,
		Peer:             peer,
		Dir:              t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	// The worker process ran as deployed (GOMEMLIMIT from the container's
	// limit) with the environment added, and profiled itself.
	if wantLimit := float64(worker.GoMemoryLimit(bench.DeployedMemoryLimit)) / (1 << 20); len(rep.Workers) != 1 || rep.Workers[0].GCPercent != 300 || rep.Workers[0].MemoryLimitMiB != wantLimit {
		t.Errorf("worker processes %+v: want one with GOGC 300 and a %.1f MiB memory limit", rep.Workers, wantLimit)
	}
	if st, err := os.Stat(profile); err != nil || st.Size() == 0 {
		t.Errorf("the worker's CPU profile: %v", err)
	}
	table := out.String()
	s := rep.Setup
	if s.NATS != "process" || !s.WorkerProcesses || s.BenchProcess != "load generator (direct client or flow)" {
		t.Errorf("setup: nats %q, worker processes %v, bench process %q", s.NATS, s.WorkerProcesses, s.BenchProcess)
	}
	phases := []*bench.Phase{rep.Direct, rep.Relay, rep.PacedDirect, rep.PacedRelay, rep.Floor}
	if peer {
		phases = append(phases, rep.Peer, rep.PacedPeer)
	} else if rep.Peer != nil || rep.PacedPeer != nil {
		t.Errorf("peer phases ran without Options.Peer")
	}
	for _, ph := range phases {
		if ph == nil {
			t.Fatalf("a phase is missing: %+v", rep)
		}
		// The partner process's counters arrive: its requests, at least one
		// per call (the floor's responder calls no partner).
		if ph.Name != "floor" {
			checkPhase(t, ph)
			// A call completed in the window may have reached the partner
			// before it opened: a closed loop's calls in flight at most.
			if ph.PartnerRequests < ph.Calls-int64(max(ph.InFlight, 8)) {
				t.Errorf("%s %s: the partner process counted %d requests for %d calls", ph.Name, ph.Loop, ph.PartnerRequests, ph.Calls)
			}
		}
	}
	cpu := func(ph *bench.Phase, name string) (bench.ProcessCPU, bool) {
		for _, p := range ph.Processes {
			if p.Name == name {
				return p, true
			}
		}
		return bench.ProcessCPU{}, false
	}
	pids := map[int]string{}
	for _, ph := range phases {
		for _, p := range ph.Processes {
			if p.PID <= 0 || p.CPUSeconds < 0 || p.Cores < 0 {
				t.Errorf("%s %s: process %+v", ph.Name, ph.Loop, p)
			}
			if calls := ph.Calls + ph.Errors; calls > 0 {
				if want := p.CPUSeconds * 1e6 / float64(calls); p.CPUPerCallUS < want*0.99-1 || p.CPUPerCallUS > want*1.01+1 {
					t.Errorf("%s %s %s: %v µs per call, want %v", ph.Name, ph.Loop, p.Name, p.CPUPerCallUS, want)
				}
			}
			pids[p.PID] = p.Name
		}
		if b, ok := cpu(ph, "bench"); !ok || b.CPUPerCallUS != ph.CPUPerCallUS || b.CPUSeconds <= 0 {
			t.Errorf("%s %s: bench process %+v, phase CPU per call %v", ph.Name, ph.Loop, b, ph.CPUPerCallUS)
		}
		// The direct phases leave the NATS server idle, not gone.
		if n, ok := cpu(ph, "nats-server"); !ok || (ph.Name != "direct" && n.CPUSeconds <= 0) {
			t.Errorf("%s %s: nats-server process %+v", ph.Name, ph.Loop, n)
		}
	}
	for _, ph := range []*bench.Phase{rep.Direct, rep.Relay} {
		if p, ok := cpu(ph, "partner"); !ok || p.CPUSeconds <= 0 {
			t.Errorf("%s: partner process %+v", ph.Name, p)
		}
	}
	// The worker works in the relay's phase; in the direct one it idles.
	relayWorker, ok1 := cpu(rep.Relay, "worker")
	directWorker, ok2 := cpu(rep.Direct, "worker")
	if !ok1 || !ok2 || relayWorker.CPUSeconds <= 0 || directWorker.CPUSeconds >= relayWorker.CPUSeconds/2 {
		t.Errorf("worker CPU: relay phase %+v, direct phase %+v", relayWorker, directWorker)
	}
	// The floor stopped the worker: no figure of it there.
	if w, ok := cpu(rep.Floor, "worker"); ok {
		t.Errorf("floor: a stopped worker's CPU %+v", w)
	}
	c := rep.CPU
	if c == nil || !c.PartnerApart || c.RelayWorker != relayWorker.CPUPerCallUS || c.DirectBench != rep.Direct.CPUPerCallUS ||
		c.WorkerOverDirect != c.RelayWorker/c.DirectBench {
		t.Errorf("CPU summary %+v", c)
	}
	if c != nil && (c.PacedDirectBench != rep.PacedDirect.CPUPerCallUS || c.PacedWorkerOverDirect != c.PacedRelayWorker/c.PacedDirectBench) {
		t.Errorf("paced CPU summary %+v", c)
	}
	for _, want := range []string{"CPU µs/CALL BY PROCESS", "PARTNER", "at one rate for all, paced", "WORKER", "NATS-SERVER", "CPU per call, worker / direct client", "the direct client alone", "NATS server process"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if peer {
		b, ok := cpu(rep.Peer, "benthos")
		w, _ := cpu(rep.Peer, "worker")
		if !ok || b.CPUSeconds <= 0 || w.CPUSeconds >= b.CPUSeconds/2 {
			t.Errorf("peer phase: benthos %+v, idle worker %+v", b, w)
		}
		if _, ok := cpu(rep.Relay, "benthos"); ok {
			t.Error("Benthos ran in the relay's closed loop: it starts after it")
		}
		if c.PeerBenthos != b.CPUPerCallUS || c.WorkerOverBenthos != c.RelayWorker/c.PeerBenthos || c.RelayOverPeer != rep.Relay.Throughput/rep.Peer.Throughput {
			t.Errorf("CPU summary %+v", c)
		}
		pw, _ := cpu(rep.PacedRelay, "worker")
		pb, _ := cpu(rep.PacedPeer, "benthos")
		if c.PacedRelayWorker != pw.CPUPerCallUS || c.PacedPeerBenthos != pb.CPUPerCallUS || c.PacedWorkerOverBenthos != pw.CPUPerCallUS/pb.CPUPerCallUS {
			t.Errorf("paced CPU summary %+v", c)
		}
		if rep.PacedPeer.OfferedRate != rep.PacedRate {
			t.Errorf("peer paced at %v, relay at %v", rep.PacedPeer.OfferedRate, rep.PacedRate)
		}
		for _, want := range []string{"BENTHOS", "throughput relay/peer", "CPU per call, worker / Benthos"} {
			if !strings.Contains(table, want) {
				t.Errorf("table lacks %q:\n%s", want, table)
			}
		}
	}
	// Every process the run started has ended and been waited for.
	for pid, name := range pids {
		if name == "bench" {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %s (pid %d) still there after the run: %v", name, pid, err)
		}
	}
}

func TestRunRejectsTwoNATSServers(t *testing.T) {
	t.Parallel()
	_, err := bench.Run(context.Background(), bench.Options{EmbeddedNATS: true, NATSURL: "nats://127.0.0.1:4222"}, nil)
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("err = %v", err)
	}
	_, err = bench.Run(context.Background(), bench.Options{Peer: true, Inflight: 10}, nil)
	if err == nil || !strings.Contains(err.Error(), "side-by-side") {
		t.Errorf("peer with the memory-bound mode: err = %v", err)
	}
}

// The memory-bound mode with worker processes reports the worker's own
// peak, and --max-rss-mib bounds that, not the bench process's.
func TestMemoryBoundWorkerProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o := bench.Options{
		Inflight:      50,
		ResponseBytes: 65536,
		Duration:      time.Second,
		Warmup:        200 * time.Millisecond,
		WorkerCommand: testWorkerCommand,
		Dir:           t.TempDir(),
	}
	rep, err := bench.Run(ctx, o, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(rep.Workers) != 1 || rep.Workers[0].PeakRSSMiB <= 0 || !strings.Contains(out.String(), "worker process bench-worker-1: peak RSS") {
		t.Fatalf("workers %+v\n%s", rep.Workers, out.String())
	}
	// A bound under the worker's peak fails the run, whatever the bench
	// process's own peak.
	o.MaxRSSMiB, o.Dir = 1, t.TempDir()
	var limit *bench.RSSLimitError
	if _, err := bench.Run(ctx, o, &out); !errors.As(err, &limit) || limit.PeakMiB <= 1 {
		t.Errorf("a 1 MiB bound on the worker: %v", err)
	}
}

// The bench runs its worker processes with the memory limit the
// Kubernetes manifest gives a worker: the two must not drift apart.
func TestDeployedMemoryLimit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("limits:\n              memory: %dMi\n", bench.DeployedMemoryLimit>>20)
	if !strings.Contains(string(b), want) {
		t.Errorf("deploy/k8s/deployment.yaml does not hold %q: update bench.DeployedMemoryLimit with it", want)
	}
	// The worker there sets its Go memory limit itself, as the bench's.
	if strings.Contains(string(b), "name: GOMEMLIMIT") {
		t.Error("deploy/k8s/deployment.yaml sets GOMEMLIMIT: the bench's worker processes would not run as deployed")
	}
}
