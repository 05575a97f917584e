package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

func newBenchCmd() *cobra.Command {
	o := bench.DefaultOptions()
	var cpuProfile, memProfile string
	var inProcess, workerProcess bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the relay side by side with direct mTLS calls, on this machine",
		Long: `Starts a NATS server as a process of its own (nats-server, built from
mtlsrelay's go.mod into the cache on first use; --embedded-nats runs it in this
process, --nats uses another), a local mTLS partner and a worker in a process of its
own (this command, re-run; --worker-in-process keeps it here), then measures the same
call made directly by a Go HTTP client (the ceiling), through the relay and, with
--peer (on by default), through Benthos v4 (built into the cache on first use, about a
minute): throughput with a fixed number of calls in flight, latency at half the
relay's peak rate (--paced-fraction, --paced-rate), TLS handshakes, allocations, peak
RSS, and each process's own CPU per call (bench process, worker, nats-server,
Benthos). A last phase, the queue floor,
replaces the workers with a responder that makes no HTTP call: the JetStream work
alone, and the ratio it allows.

--inflight N selects the memory-bound mode: only the relay, N calls in flight;
with --max-rss-mib the command exits non-zero when the peak RSS exceeds the bound.

--large-bodies selects the large-bodies mode: only the relay, --concurrency (or
--inflight) calls in flight until --calls are made, each downloading a
--large-body-bytes response (default 100 MB) that the worker streams into the Object
Store and returns as a body_ref. Every body_ref is checked against the partner's
SHA-256, one body in --verify-every is read back and hashed, every object deleted. The
worker runs as a process of its own (this command, re-run), whose peak RSS is
reported and bounded by --max-rss-mib (its GOMEMLIMIT is then 80% of it).

--direct-calls selects the direct-calls mode: direct calls (core NATS requests to
mtlsrelay.rpc.<connection>) at --direct-rate next to the same request made by the
direct client, on the idle worker, then again while the worker serves durable calls at
half its measured peak (or --paced-fraction of it, or --paced-rate).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.LargeBodies && !cmd.Flags().Changed("call-timeout") {
				o.CallTimeout = bench.DefaultLargeCallTimeout
			}
			sideBySide := !o.LargeBodies && !o.DirectCalls && o.Inflight <= 0
			if !sideBySide && !cmd.Flags().Changed("peer") {
				o.Peer = false // on by default in the side-by-side mode only
			}
			if ((o.LargeBodies || sideBySide) && !inProcess) || ((o.DirectCalls || o.Inflight > 0) && workerProcess) {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("the worker process runs this command again: %w", err)
				}
				o.WorkerCommand = func(args []string) *exec.Cmd {
					return exec.Command(exe, append([]string{"bench", workerProcessCmd}, args...)...)
				}
			}
			if o.WorkerCommand != nil && !cmd.Flags().Changed("worker-log") {
				// A deployed worker logs a line per call: so do these.
				o.WorkerLog = os.DevNull
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				o.CPUProfile = f
			}
			_, err := bench.Run(cmd.Context(), o, os.Stdout)
			if memProfile != "" {
				if perr := writeAllocsProfile(memProfile); perr != nil {
					return errors.Join(err, perr)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "calls in flight in the closed-loop phases, for both paths")
	f.IntVar(&o.Workers, "workers", o.Workers, "in-process workers, each on its own NATS connection")
	f.DurationVar(&o.Duration, "duration", o.Duration, "measured part of each phase")
	f.DurationVar(&o.Warmup, "warmup", o.Warmup, "warm-up before each phase, not measured")
	f.StringVar(&o.Route, "route", o.Route, "partner route: bytes (/bytes?n=RESPONSE-BYTES) or echo (/echo)")
	f.IntVar(&o.BodyBytes, "body-bytes", o.BodyBytes, "request body size; 0 sends a GET without body")
	f.IntVar(&o.ResponseBytes, "response-bytes", o.ResponseBytes, "response body size of the bytes route")
	f.BoolVar(&o.NonIdempotent, "non-idempotent", false, "send relay calls without \"idempotent\": true (a POST then records its state in KV)")
	f.BoolVar(&o.SkipFloor, "skip-floor", false, "leave out the last phase, the queue floor: the relay's closed loop with the workers replaced by a responder that makes no HTTP call")
	f.StringVar(&o.NATSURL, "nats", "", "run the relay on this NATS server (JetStream on, holding no mtlsrelay streams; they are created and deleted) instead of one the run starts, for example on another machine as in production")
	f.BoolVar(&o.EmbeddedNATS, "embedded-nats", false, "run the NATS server inside the bench process (its CPU is then the bench process's) instead of as a process of its own")
	f.BoolVar(&o.Peer, "peer", o.Peer, "side-by-side mode: add the peer phases, the same load through Benthos "+bench.BenthosVersion+" (built into the cache on first use); --peer=false leaves them out")
	f.BoolVar(&o.PeerFirst, "peer-first", false, "side-by-side mode: run each peer phase before the relay's instead of after (the later phase may find the machine busier)")
	f.BoolVar(&o.HTTP1, "http1", o.HTTP1, "partner offers HTTP/1.1 only (default: HTTP/2 through ALPN)")
	f.Float64Var(&o.PacedRate, "paced-rate", 0, "rate of the latency phases, calls/s (default: --paced-fraction of the relay's measured peak); with --direct-calls, the durable load's")
	f.Float64Var(&o.PacedFraction, "paced-fraction", 0, "fraction of the relay's measured peak the latency phases run at, unless --paced-rate (default 0.5; 0.25 for a quarter); with --direct-calls, the durable load's")
	f.IntVar(&o.Inflight, "inflight", 0, "memory-bound mode: only the relay, with this many calls in flight")
	f.Float64Var(&o.MaxRSSMiB, "max-rss-mib", 0, "exit non-zero when the peak RSS exceeds this many MiB")
	f.DurationVar(&o.CallTimeout, "call-timeout", o.CallTimeout, "deadline of one call on either path (10m with --large-bodies unless set)")
	f.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the relay's measured closed-loop phase to this file (go tool pprof -tags shows each part's share)")
	f.StringVar(&o.ProfileDir, "profile-dir", "", "write a CPU profile of every measured phase to this folder: direct-closed.pprof, relay-closed.pprof, direct-paced.pprof, relay-paced.pprof, floor-closed.pprof")
	f.StringVar(&memProfile, "memprofile", "", "write an allocation profile of the whole run to this file (with --inflight, the relay alone)")
	f.BoolVar(&o.LargeBodies, "large-bodies", false, "large-bodies mode: only the relay, each call downloading --large-body-bytes by body_ref; the worker's peak RSS")
	f.Int64Var(&o.LargeBodyBytes, "large-body-bytes", bench.DefaultLargeBodyBytes, "response size of the large-bodies mode")
	f.IntVar(&o.Calls, "calls", 0, "calls of the large-bodies mode (default twice the calls in flight)")
	f.IntVar(&o.VerifyEvery, "verify-every", bench.DefaultVerifyEvery, "large-bodies mode: read back and hash the first body and 1 in this many")
	f.BoolVar(&inProcess, "worker-in-process", false, "side-by-side and large-bodies modes: run the workers in this process (their CPU and peak RSS are then the whole process's)")
	f.BoolVar(&workerProcess, "worker-process", false, "direct-calls and memory-bound (--inflight) modes: run the worker in a process of its own (its Go scheduler then serves the worker alone; its peak RSS is reported, and --max-rss-mib bounds it)")
	f.StringVar(&o.WorkerCPUProfile, "worker-cpuprofile", "", "with the worker in a process of its own: it writes a CPU profile of its whole run (from ready until it stops) to this file")
	f.StringVar(&o.WorkerLog, "worker-log", "", "with the worker in a process of its own: it logs as serve does (JSON, info: a line per call) to this file; default /dev/null, \"\" for no logs")
	f.StringArrayVar(&o.WorkerEnv, "worker-env", nil, "with the worker in a process of its own: add KEY=VALUE to its environment (repeatable), for example GOMAXPROCS=1 as a one-CPU container limit sets it")
	f.StringVar(&o.WorkerHeapProfile, "worker-heap-profile", "", "large-bodies mode: the worker process writes a heap profile to this file each time its heap passes its peak by 10%")
	f.BoolVar(&o.DirectCalls, "direct-calls", false, "direct-calls mode: latency of direct calls (mtlsrelay.rpc.<connection>) over the partner's own time, idle and under a durable load of half the peak (--paced-fraction, --paced-rate)")
	f.Float64Var(&o.DirectRate, "direct-rate", bench.DefaultDirectRate, "direct-calls mode: rate of the direct and rpc phases, calls/s")
	cmd.AddCommand(&cobra.Command{
		Use:                workerProcessCmd,
		Short:              "A worker (or, with -partner, the partner) of `mtlsrelay bench` in a process of its own (started by it)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.WorkerProcessMain(cmd.Context(), args, os.Stdin, os.Stdout)
		},
	})
	return cmd
}

// workerProcessCmd is the hidden subcommand of bench that runs a worker
// process (or the partner's, with -partner first).
const workerProcessCmd = "worker-process"

// writeAllocsProfile writes the allocations made since the process started
// (pprof "allocs": go tool pprof -sample_index=alloc_objects).
func writeAllocsProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
