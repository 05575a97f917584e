package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
	"github.com/mtlsrelay/mtlsrelay/internal/partner"
)

// The large-bodies mode at a small size: every body arrives by body_ref,
// is checked, read back when sampled and deleted; the worker runs as a
// process of its own (this test binary, see TestMain) and its peak RSS,
// not the bench's, is what MaxRSSMiB bounds.
func TestRunLargeBodiesWorkerProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	heap := filepath.Join(t.TempDir(), "worker-heap.pprof")
	var out bytes.Buffer
	const size = 2_000_000
	rep, err := bench.Run(ctx, bench.Options{
		LargeBodies:       true,
		LargeBodyBytes:    size,
		Inflight:          4,
		Calls:             8,
		VerifyEvery:       3,
		WorkerCommand:     testWorkerCommand,
		WorkerHeapProfile: heap,
		MaxRSSMiB:         8, // a worker process takes more: the run must say so
		Dir:               t.TempDir(),
	}, &out)
	if runtime.GOOS == "linux" {
		var limit *bench.RSSLimitError
		if !errors.As(err, &limit) {
			t.Fatalf("err = %v, want an *RSSLimitError for the worker's peak\n%s", err, out.String())
		}
		if rep.LargeBodies == nil || limit.PeakMiB != rep.LargeBodies.WorkerPeakRSSMiB || limit.LimitMiB != 8 {
			t.Fatalf("limit error %+v, report %+v", limit, rep.LargeBodies)
		}
	} else if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if rep.Setup.Mode != "large-bodies" || rep.Setup.Method != "GET" || rep.Setup.ResponseBytes != size || rep.Setup.Concurrency != 4 {
		t.Errorf("setup = %+v", rep.Setup)
	}
	if rep.Direct != nil || rep.PacedRelay != nil || rep.Floor != nil || rep.DirectCalls != nil {
		t.Errorf("the large-bodies mode ran more than the relay: %+v", rep)
	}
	ph, lb := rep.Relay, rep.LargeBodies
	if ph == nil || ph.Calls != 8 || ph.Errors != 0 || ph.PartnerRequests != 8 || ph.InFlight != 4 {
		t.Fatalf("relay phase %+v", ph)
	}
	// The first body and the 3rd and 6th after it are read back.
	if lb.SHA256 != partner.PatternSHA256(size) || lb.Verified != 3 || lb.VerifyFailures != 0 || lb.Deleted != 8 || lb.DeleteErrors != 0 {
		t.Errorf("bodies: %+v", lb)
	}
	if lb.MBPerSecond <= 0 || lb.BucketEndMB > 0.1 {
		t.Errorf("%v MB/s, %v MB left in the bucket", lb.MBPerSecond, lb.BucketEndMB)
	}
	if !lb.WorkerProcess || len(lb.Workers) != 1 {
		t.Fatalf("workers %+v", lb.Workers)
	}
	w := lb.Workers[0]
	if w.PID == os.Getpid() || w.ExitError != "" || w.GCCycles == 0 || w.HeapPeakMiB <= 0 || w.CPUSeconds <= 0 {
		t.Errorf("worker process %+v", w)
	}
	if w.MemoryLimitMiB < 6.3 || w.MemoryLimitMiB > 6.5 {
		t.Errorf("worker's Go memory limit %v MiB, want 80%% of 8", w.MemoryLimitMiB)
	}
	if runtime.GOOS == "linux" {
		if w.PeakRSSMiB <= 0 || w.VmHWMMiB <= 0 || w.MaxRSSMiB <= 0 || w.PeakRSSMiB != lb.WorkerPeakRSSMiB {
			t.Errorf("worker process memory %+v, peak %v", w, lb.WorkerPeakRSSMiB)
		}
		if _, err := os.Stat(heap); err != nil {
			t.Errorf("no heap profile of the worker: %v", err)
		}
	}
	for _, s := range []string{"large-bodies", "by body_ref", "in a process of its own", "read back from the bucket and hashed: 3 bodies",
		"objects deleted once their result was in: 8 (0 failed)", "worker process bench-worker-1: peak RSS", "OVER the bound of 8 MiB"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

// Without WorkerCommand the worker runs in the bench process, and the
// report says the peak is the whole process's.
func TestRunLargeBodiesInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		LargeBodies:    true,
		LargeBodyBytes: 1 << 20,
		Concurrency:    2,
		VerifyEvery:    1,
		HTTP1:          true,
		JSON:           true,
		Dir:            t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	var decoded bench.Report
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil || decoded.LargeBodies == nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	lb := rep.LargeBodies
	// Calls default to twice the calls in flight; VerifyEvery 1 reads all.
	if rep.Relay.Calls != 4 || rep.Relay.Errors != 0 || lb.Verified != 4 || lb.Deleted != 4 || lb.WorkerProcess || len(lb.Workers) != 0 {
		t.Errorf("relay %+v, bodies %+v", rep.Relay, lb)
	}
	if runtime.GOOS == "linux" && lb.WorkerPeakRSSMiB <= 0 {
		t.Errorf("peak RSS %v", lb.WorkerPeakRSSMiB)
	}
}

func TestRunDirectCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		DirectCalls: true,
		DirectRate:  100,
		Concurrency: 4,
		Duration:    300 * time.Millisecond,
		Warmup:      100 * time.Millisecond,
		Dir:         t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	dc := rep.DirectCalls
	if rep.Setup.Mode != "direct-calls" || dc == nil || rep.Relay == nil || rep.Relay.InFlight != 4 {
		t.Fatalf("report %+v", rep)
	}
	for _, ph := range dc.Phases() {
		if ph == nil || ph.Calls <= 0 || ph.Errors != 0 || ph.Loop != "paced" {
			t.Fatalf("phase %+v", ph)
		}
	}
	if dc.IdleRPC.OfferedRate != 100 || dc.LoadedRPC.OfferedRate != 100 || dc.LoadRate != rep.Relay.Throughput/2 || dc.LoadFraction != 0.5 || dc.Load.OfferedRate != dc.LoadRate {
		t.Errorf("rates: rpc %v/%v, load %v of peak %v", dc.IdleRPC.OfferedRate, dc.LoadedRPC.OfferedRate, dc.LoadRate, rep.Relay.Throughput)
	}
	// The rpc phases reached the partner through the worker: they carry
	// its attempt times; the direct client's do not.
	if dc.IdleRPC.Stages == nil || dc.IdleRPC.Stages.AttemptP50MS <= 0 || dc.IdleDirect.Stages != nil {
		t.Errorf("stages: rpc %+v, direct %+v", dc.IdleRPC.Stages, dc.IdleDirect.Stages)
	}
	if dc.IdleAddedP99MS != dc.IdleRPC.P99MS-dc.IdleDirect.P99MS || dc.LoadedOverIdleP99 != dc.LoadedRPC.P99MS/dc.IdleRPC.P99MS ||
		dc.IdleMet != (dc.IdleAddedP99MS <= bench.DirectIdleAddedP99TargetMS) || dc.LoadedMet != (dc.LoadedOverIdleP99 <= bench.DirectLoadedOverIdleTarget) {
		t.Errorf("derived figures %+v", dc)
	}
	for _, s := range []string{"rpc (idle)", "rpc (loaded)", "relay (load)", "direct (loaded)", "on the idle worker, over the partner's own time", "x the idle p99"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestRunRejectsBadModes(t *testing.T) {
	t.Parallel() // refused before anything starts
	for _, tc := range []struct {
		o    bench.Options
		want string
	}{
		{bench.Options{LargeBodies: true, DirectCalls: true}, "not both"},
		{bench.Options{LargeBodies: true, LargeBodyBytes: 1000}, "large body bytes"},
		{bench.Options{LargeBodies: true, Route: bench.RouteEcho}, "calls /bytes"},
		{bench.Options{LargeBodies: true, Inflight: 8, Calls: 4}, "cannot keep 8 in flight"},
		{bench.Options{DirectCalls: true, Inflight: 8}, "--concurrency"},
		{bench.Options{WorkerHeapProfile: "heap.pprof"}, "worker processes"},
		{bench.Options{PacedFraction: 1.5}, "paced fraction"},
		{bench.Options{PacedFraction: -0.5}, "paced fraction"},
		{bench.Options{PacedFraction: 0.25, PacedRate: 100}, "not both"},
	} {
		if _, err := bench.Run(context.Background(), tc.o, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.o, err, tc.want)
		}
	}
}
