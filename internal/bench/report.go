package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// writeTable writes rep for a person.
func writeTable(out io.Writer, rep *Report) {
	s := rep.Setup
	body := "no body"
	if s.BodyBytes > 0 {
		body = fmt.Sprintf("%d-byte body", s.BodyBytes)
	}
	if s.ResponseBytes > 0 || s.Route == "/"+RouteBytes {
		body += fmt.Sprintf(", %d-byte response", s.ResponseBytes)
	}
	if s.Method != "GET" && !s.Idempotent {
		body += ", non-idempotent"
	}
	workers := "workers"
	if s.Workers == 1 {
		workers = "worker"
	}
	fmt.Fprintf(out, "\nmtlsrelay bench (%s): %s %s %s (%s), %d %s, %d calls in flight\n",
		s.Mode, s.Protocol, s.Method, s.Route, body, s.Workers, workers, s.Concurrency)
	fmt.Fprintf(out, "machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s, load average %.2f at start, %.2f at end; %gs measured per phase after %gs warm-up; NATS server %s\n\n",
		s.OS, s.Arch, s.NumCPU, s.GOMAXPROCS, s.GoVersion, s.LoadAverage[0], s.LoadAverage[1], s.Seconds, s.WarmupSeconds, s.NATS)

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PATH\tLOOP\tCALLS\tERRORS\tCALLS/S\tP50 MS\tP99 MS\tMAX MS\tCONNS\tFULL HS/1k\tALLOCS/CALL\tKiB/CALL\tCPU µs/CALL\tCORES\tRSS MiB\t")
	for _, ph := range rep.phases() {
		if ph == nil {
			continue
		}
		loop := fmt.Sprintf("closed %d", ph.InFlight)
		if ph.Loop == "paced" {
			loop = fmt.Sprintf("paced %.0f/s", ph.OfferedRate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.1f\t%d\t%.2f\t%.0f\t%.1f\t%.0f\t%.2f\t%.0f\t\n",
			ph.Name, loop, ph.Calls, ph.Errors, ph.Throughput, ph.P50MS, ph.P99MS, ph.MaxMS,
			ph.Connections, ph.FullHandshakesPer1000, ph.AllocsPerCall, ph.BytesPerCall/1024,
			ph.CPUPerCallUS, ph.CPUCores, ph.PeakRSSMiB)
	}
	tw.Flush()
	fmt.Fprintln(out)
	for _, ph := range []*Phase{rep.Relay, rep.PacedRelay} {
		if ph == nil || ph.Stages == nil {
			continue
		}
		st := ph.Stages
		fmt.Fprintf(out, "relay %s stages p50/p99 ms: enqueue %.2f/%.2f, queued %.2f/%.2f, attempt %.2f/%.2f, way back %.2f (p50 rest)\n",
			ph.Loop, st.EnqueueP50MS, st.EnqueueP99MS, st.QueuedP50MS, st.QueuedP99MS, st.AttemptP50MS, st.AttemptP99MS,
			ph.P50MS-st.EnqueueP50MS-st.QueuedP50MS-st.AttemptP50MS)
	}

	if rep.Direct != nil {
		fmt.Fprintf(out, "throughput relay/direct: %.2f (relay %.0f calls/s, direct %.0f calls/s)\n",
			rep.Ratio, rep.Relay.Throughput, rep.Direct.Throughput)
	} else {
		fmt.Fprintf(out, "relay throughput: %.0f calls/s with %d calls in flight\n", rep.Relay.Throughput, rep.Relay.InFlight)
	}
	if rep.Floor != nil {
		fmt.Fprintf(out, "queue floor (JetStream work of a relayed call, no HTTP): %.0f calls/s; with the direct call's cost added, the ratio could reach at most %.2f\n",
			rep.Floor.Throughput, rep.RatioBound)
	}
	if rep.PacedRelay != nil {
		how := "half its peak"
		if rep.PacedRate != rep.Relay.Throughput/2 {
			how = "set by --paced-rate"
		}
		fmt.Fprintf(out, "latency added by the relay at %.0f calls/s (%s): p50 %+.2f ms, p99 %+.2f ms\n",
			rep.PacedRate, how, rep.AddedP50MS, rep.AddedP99MS)
		if rep.PacedWarning != "" {
			fmt.Fprintf(out, "warning: %s\n", rep.PacedWarning)
		}
	}
	limit := ""
	if rep.Setup.MemoryLimitMiB > 0 {
		limit = fmt.Sprintf(", Go memory limit %.0f MiB", rep.Setup.MemoryLimitMiB)
	}
	fmt.Fprintf(out, "peak RSS (VmHWM over the whole run): %.1f MiB%s\n", rep.PeakRSSMiB, limit)
	for _, ph := range rep.phases() {
		if ph != nil && ph.FirstError != "" {
			fmt.Fprintf(out, "first error, %s %s: %s\n", ph.Name, ph.Loop, ph.FirstError)
		}
	}
	if rep.DuplicateResults > 0 {
		fmt.Fprintf(out, "duplicate results (counted once): %d\n", rep.DuplicateResults)
	}
	if s.LoadAverage[0] > float64(s.NumCPU)/2 {
		fmt.Fprintf(out, "warning: load average %.2f before the run on %d CPUs: other processes competed, the figures are noisy\n", s.LoadAverage[0], s.NumCPU)
	}
	nats := "embedded NATS, "
	if s.NATS != natsInProcess {
		nats = ""
	}
	fmt.Fprintf(out, "allocations, RSS and CPU are the whole process's: workers, %spartner and load generator\n", nats)
}

// phases are the report's phases in the order they ran; those that did
// not run are nil.
func (r *Report) phases() []*Phase {
	return []*Phase{r.Direct, r.Relay, r.PacedDirect, r.PacedRelay, r.Floor}
}
