package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
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
	if lb := rep.LargeBodies; lb != nil {
		body += ", by body_ref"
		if lb.WorkerProcess {
			workers += " in a process of its own"
			if s.Workers > 1 {
				workers = "workers, each in a process of its own"
			}
		}
	}
	fmt.Fprintf(out, "\nmtlsrelay bench (%s): %s %s %s (%s), %d %s, %d calls in flight\n",
		s.Mode, s.Protocol, s.Method, s.Route, body, s.Workers, workers, s.Concurrency)
	measured := fmt.Sprintf("%gs measured per phase after %gs warm-up", s.Seconds, s.WarmupSeconds)
	if rep.LargeBodies != nil {
		measured = "every call measured, no warm-up"
	}
	fmt.Fprintf(out, "machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s, load average %.2f at start, %.2f at end; %s; NATS server %s\n",
		s.OS, s.Arch, s.NumCPU, s.GOMAXPROCS, s.GoVersion, s.LoadAverage[0], s.LoadAverage[1], measured, s.NATS)
	if s.WorkerLog != "" {
		numbered := ""
		if s.Workers > 1 && s.WorkerLog != os.DevNull {
			numbered = " (a file of each worker's, -N before the extension)"
		}
		fmt.Fprintf(out, "worker processes log as serve does, to %s%s\n", s.WorkerLog, numbered)
	}
	if len(s.WorkerEnv) > 0 {
		fmt.Fprintf(out, "worker processes' environment adds: %s\n", strings.Join(s.WorkerEnv, " "))
	}
	if s.Peer != "" {
		order := "after the relay's"
		if s.PeerFirst {
			order = "before the relay's"
		}
		fmt.Fprintf(out, "peer: %s; each peer phase ran %s\n", s.Peer, order)
	}
	fmt.Fprintln(out)

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
	writeProcessCPU(out, rep)
	for _, ph := range []*Phase{rep.Relay, rep.PacedRelay} {
		if ph == nil || ph.Stages == nil {
			continue
		}
		st := ph.Stages
		fmt.Fprintf(out, "relay %s stages p50/p99 ms: enqueue %.2f/%.2f, queued %.2f/%.2f, attempt %.2f/%.2f, way back %.2f (p50 rest)\n",
			ph.Loop, st.EnqueueP50MS, st.EnqueueP99MS, st.QueuedP50MS, st.QueuedP99MS, st.AttemptP50MS, st.AttemptP99MS,
			ph.P50MS-st.EnqueueP50MS-st.QueuedP50MS-st.AttemptP50MS)
	}

	switch {
	case rep.LargeBodies != nil:
		writeLargeBodies(out, rep)
	case rep.Direct != nil:
		fmt.Fprintf(out, "throughput relay/direct: %.2f (relay %.0f calls/s, direct %.0f calls/s)\n",
			rep.Ratio, rep.Relay.Throughput, rep.Direct.Throughput)
		if rep.Peer != nil && rep.CPU != nil {
			fmt.Fprintf(out, "throughput relay/peer: %.2f (relay %.0f calls/s, peer %.0f calls/s)\n", rep.CPU.RelayOverPeer, rep.Relay.Throughput, rep.Peer.Throughput)
		}
	case rep.DirectCalls != nil:
		writeDirectCalls(out, rep)
	default:
		fmt.Fprintf(out, "relay throughput: %.0f calls/s with %d calls in flight\n", rep.Relay.Throughput, rep.Relay.InFlight)
	}
	if rep.Floor != nil {
		fmt.Fprintf(out, "queue floor (JetStream work of a relayed call, no HTTP): %.0f calls/s; with the direct call's cost added, the ratio could reach at most %.2f\n",
			rep.Floor.Throughput, rep.RatioBound)
	}
	if rep.PacedRelay != nil {
		how := pacedHow(rep.PacedFraction)
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
	if lb := rep.LargeBodies; (lb != nil && lb.WorkerProcess) || len(rep.Workers) > 0 {
		fmt.Fprintf(out, "peak RSS of the bench process, without the worker (VmHWM over the whole run): %.1f MiB%s\n", rep.PeakRSSMiB, limit)
		writeWorkerMemory(out, rep.Workers)
	} else {
		fmt.Fprintf(out, "peak RSS (VmHWM over the whole run): %.1f MiB%s\n", rep.PeakRSSMiB, limit)
	}
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
	if lb := rep.LargeBodies; lb != nil && lb.WorkerProcess {
		fmt.Fprintf(out, "allocations, RSS and CPU in the table are the bench process's (%s); the worker's own are above\n", s.BenchProcess)
		return
	}
	fmt.Fprintf(out, "allocations, RSS and CPU in the first table are the bench process's: %s\n", s.BenchProcess)
}

// writeLargeBodies writes the large-bodies mode's figures.
func writeLargeBodies(out io.Writer, rep *Report) {
	lb, ph := rep.LargeBodies, rep.Relay
	fmt.Fprintf(out, "bodies: %d of %d bytes by body_ref in %.1f s, %.1f MB/s; each body_ref checked against the partner's size and SHA-256 (%.12s...)\n",
		ph.Calls, lb.BodyBytes, ph.Seconds, lb.MBPerSecond, lb.SHA256)
	fmt.Fprintf(out, "read back from the bucket and hashed: %d bodies (the first and 1 in %d), %d mismatched or unreadable\n",
		lb.Verified, lb.VerifyEvery, lb.VerifyFailures)
	if lb.FirstVerifyErr != "" {
		fmt.Fprintf(out, "first read-back failure: %s\n", lb.FirstVerifyErr)
	}
	fmt.Fprintf(out, "objects deleted once their result was in: %d (%d failed); bucket at most %.0f MB, %.1f MB at the end\n",
		lb.Deleted, lb.DeleteErrors, lb.BucketPeakMB, lb.BucketEndMB)
	if lb.FirstDeleteErr != "" {
		fmt.Fprintf(out, "first delete failure: %s\n", lb.FirstDeleteErr)
	}
	writeWorkerMemory(out, lb.Workers)
	where := "worker process"
	if !lb.WorkerProcess {
		where = "bench process, worker included (VmHWM)"
	}
	verdict := ""
	if lb.LimitMiB > 0 {
		verdict = fmt.Sprintf(": within the bound of %.0f MiB", lb.LimitMiB)
		if lb.WorkerPeakRSSMiB > lb.LimitMiB {
			verdict = fmt.Sprintf(": OVER the bound of %.0f MiB", lb.LimitMiB)
		}
	}
	fmt.Fprintf(out, "peak RSS of the %s with %d calls of %d bytes in flight: %.1f MiB%s\n",
		where, lb.InFlight, lb.BodyBytes, lb.WorkerPeakRSSMiB, verdict)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// loadedVerdict is the direct-calls mode's verdict on its loaded target,
// which is set at half the peak: at another load it is not judged.
func loadedVerdict(dc *DirectCalls) string {
	if !dc.loadJudged() {
		return "not judged (the target is set at half the peak)"
	}
	return met(dc.LoadedMet)
}

// writeDirectCalls writes the direct-calls mode's figures.
func writeDirectCalls(out io.Writer, rep *Report) {
	dc := rep.DirectCalls
	for _, ph := range []*Phase{dc.IdleRPC, dc.LoadedRPC} {
		if st := ph.Stages; st != nil {
			fmt.Fprintf(out, "%s: the worker's attempt p50/p99 %.2f/%.2f ms; the rest (NATS both ways, the worker's and client's own work) %.2f ms at p50\n",
				ph.Name, st.AttemptP50MS, st.AttemptP99MS, ph.P50MS-st.AttemptP50MS)
		}
	}
	fmt.Fprintf(out, "relay durable peak: %.0f calls/s with %d calls in flight\n", rep.Relay.Throughput, rep.Relay.InFlight)
	fmt.Fprintf(out, "direct calls at %.0f calls/s on the idle worker, over the partner's own time: p50 %+.2f ms, p99 %+.2f ms (rpc p99 %.2f ms, direct %.2f ms); target p99 at most %+d ms: %s\n",
		dc.Rate, dc.IdleAddedP50MS, dc.IdleAddedP99MS, dc.IdleRPC.P99MS, dc.IdleDirect.P99MS, DirectIdleAddedP99TargetMS, met(dc.IdleMet))
	how := pacedHow(dc.LoadFraction)
	fmt.Fprintf(out, "with a durable load of %.0f calls/s (%s): rpc p99 %.2f ms, %.2f x the idle p99; target at most %d x: %s\n",
		dc.LoadRate, how, dc.LoadedRPC.P99MS, dc.LoadedOverIdleP99, DirectLoadedOverIdleTarget, loadedVerdict(dc))
	fmt.Fprintf(out, "under that load, over the partner's own time then: p50 %+.2f ms, p99 %+.2f ms; the partner's own p99 (direct client) went from %.2f to %.2f ms, %.2f x\n",
		dc.LoadedAddedP50MS, dc.LoadedAddedP99MS, dc.IdleDirect.P99MS, dc.LoadedDirect.P99MS, dc.DirectLoadedOverIdleP99)
	fmt.Fprintln(out, "the loaded phases' allocations and CPU per call include the load's; their CORES are the whole process's")
	if dc.Warning != "" {
		fmt.Fprintf(out, "warning: %s\n", dc.Warning)
	}
}

// phases are the report's phases in the order they ran; those that did
// not run are nil.
func (r *Report) phases() []*Phase {
	if dc := r.DirectCalls; dc != nil {
		return []*Phase{dc.IdleDirect, dc.IdleRPC, r.Relay, dc.Load, dc.LoadedDirect, dc.LoadedRPC}
	}
	return []*Phase{r.Direct, r.Relay, r.Peer, r.PacedDirect, r.PacedRelay, r.PacedPeer, r.Floor}
}

// writeProcessCPU writes each phase's CPU per call by process, and the
// closed loops' ratios, when processes other than the bench's ran.
func writeProcessCPU(out io.Writer, rep *Report) {
	cols := []string{processBench, processPartner, "worker", processNATS, processBenthos}
	seen := map[string]bool{processBench: true}
	others := false
	for _, ph := range rep.phases() {
		if ph == nil {
			continue
		}
		for _, p := range ph.Processes {
			if p.Name != processBench {
				seen[procColumn(p.Name)] = true
				others = true
			}
		}
	}
	if !others {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "CPU µs/CALL BY PROCESS\tLOOP\tCALLS/S\t")
	for _, c := range cols {
		if seen[c] {
			fmt.Fprintf(tw, "%s\t", strings.ToUpper(c))
		}
	}
	fmt.Fprint(tw, "TOTAL\tCORES\t\n")
	for _, ph := range rep.phases() {
		if ph == nil {
			continue
		}
		loop := "closed"
		if ph.Loop == "paced" {
			loop = fmt.Sprintf("paced %.0f/s", ph.OfferedRate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t", ph.Name, loop, ph.Throughput)
		var total, cores float64
		for _, c := range cols {
			if !seen[c] {
				continue
			}
			v, ok := 0.0, false
			for _, p := range ph.Processes {
				if procColumn(p.Name) == c {
					v += p.CPUPerCallUS
					cores += p.Cores
					ok = true
				}
			}
			total += v
			if ok {
				fmt.Fprintf(tw, "%.0f\t", v)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintf(tw, "%.0f\t%.2f\t\n", total, cores)
	}
	tw.Flush()
	fmt.Fprintf(out, "bench process: %s; idle processes still count in a phase (an idle worker or Benthos polls a little)\n", rep.Setup.BenchProcess)
	if c := rep.CPU; c != nil {
		if c.WorkerOverDirect > 0 {
			what := "the bench process's in the direct phase: the direct client alone"
			if !c.PartnerApart {
				what = "the bench process's in the direct phase, the partner's share included"
			}
			fmt.Fprintf(out, "CPU per call, worker / direct client: %.2f (%.0f µs / %.0f µs, %s)\n", c.WorkerOverDirect, c.RelayWorker, c.DirectBench, what)
		}
		if c.WorkerOverBenthos > 0 {
			fmt.Fprintf(out, "CPU per call, worker / Benthos: %.2f (%.0f µs / %.0f µs)\n", c.WorkerOverBenthos, c.RelayWorker, c.PeerBenthos)
		}
		if c.PacedWorkerOverDirect > 0 {
			fmt.Fprintf(out, "at one rate for all, paced %.0f/s: worker / direct client %.2f (%.0f µs / %.0f µs, the pacing's own work in the latter)",
				rep.PacedRate, c.PacedWorkerOverDirect, c.PacedRelayWorker, c.PacedDirectBench)
			if c.PacedWorkerOverBenthos > 0 {
				fmt.Fprintf(out, ", worker / Benthos %.2f (%.0f µs / %.0f µs)", c.PacedWorkerOverBenthos, c.PacedRelayWorker, c.PacedPeerBenthos)
			}
			fmt.Fprintln(out)
		}
	}
	fmt.Fprintln(out)
}

// procColumn is the column of a process: the workers share one.
func procColumn(name string) string {
	if strings.HasPrefix(name, "worker") {
		return "worker"
	}
	return name
}

// writeWorkerMemory writes the worker processes' memory figures.
func writeWorkerMemory(out io.Writer, ws []WorkerMemory) {
	for _, w := range ws {
		limit := "no Go memory limit"
		if w.MemoryLimitMiB > 0 {
			limit = fmt.Sprintf("Go memory limit %.0f MiB", w.MemoryLimitMiB)
		}
		fmt.Fprintf(out, "worker process %s: peak RSS %.1f MiB (VmHWM %.1f, largest VmRSS sampled %.1f, ru_maxrss %.1f); Go heap peak %.1f MiB, heap goal peak %.1f MiB, runtime-mapped peak %.1f MiB, %d collections, %s, GOGC %d; %.1f s of CPU\n",
			w.Name, w.PeakRSSMiB, w.VmHWMMiB, w.SampledRSSMiB, w.MaxRSSMiB, w.HeapPeakMiB, w.HeapGoalPeakMiB, w.RuntimeTotalPeakMiB, w.GCCycles, limit, w.GCPercent, w.CPUSeconds)
		if w.ExitError != "" {
			fmt.Fprintf(out, "worker process %s ended: %s\n", w.Name, w.ExitError)
		}
	}
}
