package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
)

// Targets of the direct-calls mode (the project's issue 14).
const (
	// DirectIdleAddedP99TargetMS: on an idle worker, a direct call's p99 at
	// most this much above the partner's own p99.
	DirectIdleAddedP99TargetMS = 5
	// DirectLoadedOverIdleTarget: under a durable load of half the peak
	// durable rate, a direct call's p99 at most this many times the idle one.
	// It is judged only at that load (LoadFraction 0.5).
	DirectLoadedOverIdleTarget = 2
)

// DirectCalls is what the direct-calls mode measured (Options.DirectCalls).
// Every phase but the peak is paced; the direct and rpc ones at Rate.
type DirectCalls struct {
	Rate float64 `json:"rate"`
	// IdleDirect is the request made by the direct HTTP client, the
	// partner's own time; IdleRPC the same request as a direct call
	// through the idle worker (core NATS request to <prefix>.rpc.<conn>,
	// client.Client.Direct), one after the other.
	IdleDirect *Phase `json:"idle_direct"`
	IdleRPC    *Phase `json:"idle_rpc"`
	// LoadRate is the durable load's rate: LoadFraction (half unless
	// Options.PacedFraction set it) of Report.Relay's throughput (the
	// peak), unless Options.PacedRate set it. Load is that load, run
	// through both loaded phases (its window spans them, so its partner
	// counters include their calls).
	LoadRate float64 `json:"load_rate"`
	// LoadFraction is the fraction of the peak LoadRate is; 0 when
	// Options.PacedRate set it.
	LoadFraction float64 `json:"load_fraction,omitempty"`
	Load         *Phase  `json:"load"`
	// LoadedDirect and LoadedRPC are IdleDirect and IdleRPC again while
	// the worker serves Load.
	LoadedDirect *Phase `json:"loaded_direct"`
	LoadedRPC    *Phase `json:"loaded_rpc"`
	// The latency a direct call adds to the partner's own: rpc minus
	// direct percentiles, idle and loaded.
	IdleAddedP50MS   float64 `json:"idle_added_p50_ms"`
	IdleAddedP99MS   float64 `json:"idle_added_p99_ms"`
	LoadedAddedP50MS float64 `json:"loaded_added_p50_ms"`
	LoadedAddedP99MS float64 `json:"loaded_added_p99_ms"`
	// LoadedOverIdleP99 is LoadedRPC's p99 over IdleRPC's;
	// DirectLoadedOverIdleP99 the same of the direct client, LoadedDirect's
	// over IdleDirect's: what the load does to a request that does not go
	// through the relay, on the same CPUs.
	LoadedOverIdleP99       float64 `json:"loaded_over_idle_p99"`
	DirectLoadedOverIdleP99 float64 `json:"direct_loaded_over_idle_p99"`
	// IdleMet: IdleAddedP99MS <= DirectIdleAddedP99TargetMS; LoadedMet:
	// LoadedOverIdleP99 <= DirectLoadedOverIdleTarget under the load the
	// target names (half the peak), false at any other.
	IdleMet   bool `json:"idle_met"`
	LoadedMet bool `json:"loaded_met"`
	// Warning is set when a paced phase skipped calls or a call failed:
	// the percentiles then describe a backlog or miss calls.
	Warning string `json:"warning,omitempty"`
}

// loadJudged reports whether the durable load was the one
// DirectLoadedOverIdleTarget is set at: half the peak.
func (dc *DirectCalls) loadJudged() bool { return dc.LoadFraction == 0.5 }

// runDirectCalls runs the direct-calls mode: idle direct and rpc phases,
// the durable peak, then direct and rpc again under half that load (or
// Options.PacedFraction of it, or Options.PacedRate).
func runDirectCalls(ctx context.Context, o Options, r *rig, rep *Report, prof *profiles, progress func(string, ...any)) (err error) {
	dc := &DirectCalls{Rate: o.DirectRate}
	rep.DirectCalls = dc
	// The direct calls come from a flow of their own, on its own NATS
	// connection: the durable load's publishes and results do not queue
	// with them on the client's side.
	var nc *nats.Conn
	withPart(partFlow, func() { nc, err = nats.Connect(r.url, nats.Name("mtlsrelay bench rpc flow")) })
	if err != nil {
		return fmt.Errorf("connect the direct calls' flow to NATS: %w", err)
	}
	defer nc.Close()
	cl, err := client.New(nc)
	if err != nil {
		return err
	}
	rpc := newRPCCaller(cl, o, r.relay.runID)
	maxOutstanding := max(10*o.Concurrency, 1000)
	pacedWarmup := min(o.Warmup, time.Second)
	// CPU profiles (Options.ProfileDir): direct-idle.pprof, rpc-idle.pprof,
	// relay-closed.pprof, direct-loaded.pprof and rpc-loaded.pprof; the
	// load has none of its own (one profile at a time), the loaded phases'
	// include it.
	paced := func(name, when string, c caller, rate float64, warmup, d time.Duration) (*Phase, error) {
		var profile io.Writer
		if when != "" {
			profile = prof.writer(name, when)
		}
		return pacedLoop(ctx, r.meter(), name, c, rate, maxOutstanding, warmup, d, profile)
	}

	progress("direct (the partner's own time), paced at %.0f calls/s: %s measured", dc.Rate, o.Duration)
	if dc.IdleDirect, err = paced("direct", "idle", r.direct, dc.Rate, pacedWarmup, o.Duration); err != nil {
		return err
	}
	progress("rpc (direct calls through the idle worker), paced at %.0f calls/s: %s measured", dc.Rate, o.Duration)
	if dc.IdleRPC, err = paced("rpc", "idle", rpc, dc.Rate, pacedWarmup, o.Duration); err != nil {
		return err
	}
	progress("relay (durable calls), %d calls in flight, for the peak: %s warm-up, %s measured", o.Concurrency, o.Warmup, o.Duration)
	if rep.Relay, err = closedLoop(ctx, r.meter(), "relay", r.relay, o.Concurrency, o.Warmup, o.Duration, prof.writer("relay", "closed")); err != nil {
		return err
	}
	for _, ph := range []*Phase{dc.IdleDirect, dc.IdleRPC, rep.Relay} {
		if err := needCalls(ph); err != nil {
			return err
		}
	}
	dc.LoadRate, dc.LoadFraction = o.pacedRate(rep.Relay.Throughput)

	// The load runs from a warm-up before the loaded phases to their end
	// and a little after, to cover their last calls (it cannot be stopped
	// early).
	loadWarmup := max(o.Warmup, 250*time.Millisecond)
	loadFor := 2*(pacedWarmup+o.Duration) + min(2*time.Second, max(o.Duration/5, 250*time.Millisecond))
	type loadOutcome struct {
		ph  *Phase
		err error
	}
	loadDone := make(chan loadOutcome, 1)
	progress("relay load (durable calls) paced at %.0f calls/s from %s before to the end of the two loaded phases", dc.LoadRate, loadWarmup)
	go func() {
		ph, err := paced("relay", "", r.relay, dc.LoadRate, loadWarmup, loadFor)
		loadDone <- loadOutcome{ph, err}
	}()
	if err := sleepCtx(ctx, loadWarmup); err != nil {
		<-loadDone
		return err
	}
	progress("direct under that load, paced at %.0f calls/s: %s measured", dc.Rate, o.Duration)
	dc.LoadedDirect, err = paced("direct", "loaded", r.direct, dc.Rate, pacedWarmup, o.Duration)
	if err == nil {
		progress("rpc under that load, paced at %.0f calls/s: %s measured", dc.Rate, o.Duration)
		dc.LoadedRPC, err = paced("rpc", "loaded", rpc, dc.Rate, pacedWarmup, o.Duration)
	}
	load := <-loadDone
	if err != nil {
		return err
	}
	if load.err != nil {
		return load.err
	}
	dc.Load = load.ph

	for ph, name := range map[*Phase]string{dc.IdleDirect: "direct (idle)", dc.IdleRPC: "rpc (idle)", dc.Load: "relay (load)", dc.LoadedDirect: "direct (loaded)", dc.LoadedRPC: "rpc (loaded)"} {
		ph.Name = name
	}
	for _, ph := range []*Phase{dc.LoadedDirect, dc.LoadedRPC, dc.Load} {
		if err := needCalls(ph); err != nil {
			return err
		}
	}
	dc.IdleAddedP50MS = dc.IdleRPC.P50MS - dc.IdleDirect.P50MS
	dc.IdleAddedP99MS = dc.IdleRPC.P99MS - dc.IdleDirect.P99MS
	dc.LoadedAddedP50MS = dc.LoadedRPC.P50MS - dc.LoadedDirect.P50MS
	dc.LoadedAddedP99MS = dc.LoadedRPC.P99MS - dc.LoadedDirect.P99MS
	if dc.IdleRPC.P99MS > 0 {
		dc.LoadedOverIdleP99 = dc.LoadedRPC.P99MS / dc.IdleRPC.P99MS
	}
	if dc.IdleDirect.P99MS > 0 {
		dc.DirectLoadedOverIdleP99 = dc.LoadedDirect.P99MS / dc.IdleDirect.P99MS
	}
	dc.IdleMet = dc.IdleAddedP99MS <= DirectIdleAddedP99TargetMS
	dc.LoadedMet = dc.loadJudged() && dc.LoadedOverIdleP99 <= DirectLoadedOverIdleTarget
	for _, ph := range dc.Phases() {
		if ph.Skipped > 0 {
			dc.Warning += fmt.Sprintf("%s could not keep up with %.0f calls/s (%d calls skipped); ", ph.Name, ph.OfferedRate, ph.Skipped)
		}
		if ph.Errors > 0 {
			dc.Warning += fmt.Sprintf("%s: %d calls failed; ", ph.Name, ph.Errors)
		}
	}
	if dc.Warning != "" {
		dc.Warning += "the percentiles describe a backlog or miss calls: run again on a quieter machine"
	}
	return nil
}

// Phases are the mode's paced phases in the order they ran: IdleDirect,
// IdleRPC, Load, LoadedDirect, LoadedRPC.
func (dc *DirectCalls) Phases() []*Phase {
	return []*Phase{dc.IdleDirect, dc.IdleRPC, dc.Load, dc.LoadedDirect, dc.LoadedRPC}
}

// rpcCaller makes the bench's request as a direct call: a core NATS
// request to <prefix>.rpc.<connection> that a worker answers with the
// result, as client.Client.Direct makes it (encode, request, decode).
type rpcCaller struct {
	client     *client.Client
	runID      string
	shape      requestShape
	headers    map[string][]string
	idempotent *bool
	timeout    time.Duration
	seq        atomic.Uint64
}

func newRPCCaller(c *client.Client, o Options, runID string) *rpcCaller {
	r := &rpcCaller{client: c, runID: runID, shape: shapeOf(o), timeout: o.CallTimeout}
	if r.shape.body != nil {
		r.headers = map[string][]string{"Content-Type": {"application/octet-stream"}}
	}
	if !o.NonIdempotent {
		yes := true
		r.idempotent = &yes
	}
	return r
}

// call returns the worker's attempt time (the result's total_ms) as the
// stage "attempt"; the rest is NATS both ways and the worker's own work.
func (r *rpcCaller) call(ctx context.Context) (stages, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	res, err := r.client.Direct(ctx, &jobs.Call{
		ID:         "bench-rpc-" + r.runID + "-" + strconv.FormatUint(r.seq.Add(1), 10),
		Connection: benchConnection,
		Method:     r.shape.method,
		Path:       r.shape.path,
		Query:      r.shape.query,
		Headers:    r.headers,
		Body:       string(r.shape.body),
		Idempotent: r.idempotent,
	})
	if err != nil {
		return stages{}, fmt.Errorf("direct call: %w", err)
	}
	st := stages{attempt: fromMillis(res.Timing.TotalMS)}
	switch {
	case res.Error != nil:
		return st, fmt.Errorf("%w: %s: %s", errBadResponse, res.Error.Code, res.Error.Message)
	case !res.OK || res.Status != http.StatusOK:
		return st, fmt.Errorf("%w: status %d", errBadResponse, res.Status)
	case r.shape.wantLen >= 0 && len(res.ResponseBody()) != r.shape.wantLen:
		return st, fmt.Errorf("%w: %d body bytes, want %d", errBadResponse, len(res.ResponseBody()), r.shape.wantLen)
	}
	return st, nil
}
