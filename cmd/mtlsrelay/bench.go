package main

import (
	"errors"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

func newBenchCmd() *cobra.Command {
	o := bench.DefaultOptions()
	var cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the relay side by side with direct mTLS calls, on this machine",
		Long: `Starts an embedded NATS server (or uses the one --nats names), a local mTLS
partner and in-process workers, then measures the same call made directly by a Go
HTTP client (the ceiling) and through the relay: throughput with a fixed number of
calls in flight, latency added at half the relay's peak rate, TLS handshakes,
allocations and peak RSS. A last phase, the queue floor, replaces the workers with a
responder that makes no HTTP call: the JetStream work alone, and the ratio it allows.

--inflight N selects the memory-bound mode: only the relay, N calls in flight;
with --max-rss-mib the command exits non-zero when the peak RSS exceeds the bound.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	f.StringVar(&o.NATSURL, "nats", "", "run the relay on this NATS server (JetStream on, holding no mtlsrelay streams; they are created and deleted) instead of one in-process, for example on another machine as in production")
	f.BoolVar(&o.HTTP1, "http1", o.HTTP1, "partner offers HTTP/1.1 only (default: HTTP/2 through ALPN)")
	f.Float64Var(&o.PacedRate, "paced-rate", 0, "rate of the latency phases, calls/s (default: half the relay's measured peak)")
	f.IntVar(&o.Inflight, "inflight", 0, "memory-bound mode: only the relay, with this many calls in flight")
	f.Float64Var(&o.MaxRSSMiB, "max-rss-mib", 0, "exit non-zero when the peak RSS exceeds this many MiB")
	f.DurationVar(&o.CallTimeout, "call-timeout", o.CallTimeout, "deadline of one call on either path")
	f.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the relay's measured closed-loop phase to this file (go tool pprof -tags shows each part's share)")
	f.StringVar(&o.ProfileDir, "profile-dir", "", "write a CPU profile of every measured phase to this folder: direct-closed.pprof, relay-closed.pprof, direct-paced.pprof, relay-paced.pprof, floor-closed.pprof")
	f.StringVar(&memProfile, "memprofile", "", "write an allocation profile of the whole run to this file (with --inflight, the relay alone)")
	return cmd
}

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
