// Package bench measures the relay side by side with its ceiling, in one
// process on one machine: an embedded NATS server, a partner demanding a
// client certificate (internal/partner), and N workers (worker.New + Run).
//
// The ceiling ("direct") is the same request made by a Go http.Client with
// the worker's TLS settings: the same profile's client certificate,
// truststore and session cache, HTTP/2 when the partner offers it, the same
// keep-alive pool size. The relay is the same request enqueued with
// client.Client.Enqueue, executed by the workers, its result read from a core
// subscription on its reply subject (kept in MTLSRELAY_RESULTS).
//
// A run measures, for each path:
//
//   - throughput in a closed loop: a fixed number of calls in flight, each
//     completion starting the next;
//   - latency in an open loop paced at half the relay's measured peak
//     (Options.PacedFraction, Options.PacedRate),
//     latency counted from when a call was due, so the added latency is
//     the relay's percentile minus the direct one at the same load;
//   - full TLS handshakes and new connections per 1,000 calls, from the
//     partner's counters;
//   - allocations and bytes allocated per call and the peak resident set;
//   - last, the queue floor: the relay's closed loop with the workers
//     replaced by a responder that does their JetStream work and no HTTP
//     exchange, and the ratio bound it implies (Report.RatioBound).
//
// The NATS server runs as a process of its own (nats-server, built from
// mtlsrelay's go.mod into the cache, see NATSServerTool) unless
// Options.EmbeddedNATS keeps it in the bench process or Options.NATSURL
// names one elsewhere. With Options.WorkerCommand the workers and the
// partner run as processes of their own too, and every phase reports each
// process's own CPU per call (Phase.Processes, Report.CPU): the bench
// process then holds the load generator alone (the direct client, or the
// flow). Options.Peer adds the peer phases: the same load through Benthos
// v4 (peer.go), with Benthos's CPU per call next to the worker's.
// Allocation counts and RSS are the bench process's.
//
// Two more modes answer the project's issue 14: the large-bodies mode
// (Options.LargeBodies: 100 MB responses by body_ref, the worker in a
// process of its own so that its peak RSS is its own, see largebodies.go
// and workerproc.go) and the direct-calls mode (Options.DirectCalls: direct
// calls' latency over the partner's own time, idle and under a durable
// load, see directcalls.go).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// Routes of the partner a run can call.
const (
	// RouteBytes is /bytes?n=<ResponseBytes>: a body of a known size.
	RouteBytes = "bytes"
	// RouteEcho is /echo: a JSON description of the request.
	RouteEcho = "echo"
)

// Options configure a run. DefaultOptions returns the defaults of
// `mtlsrelay bench`; zero values of fields marked so mean those defaults.
type Options struct {
	// Concurrency is the number of calls in flight in the closed-loop
	// phases, for both paths. Zero means 64.
	Concurrency int
	// Workers is the number of in-process workers, each on its own NATS
	// connection and each allowed Concurrency calls in flight. Zero means 1.
	Workers int
	// Duration is the measured part of each phase. Zero means 10s.
	Duration time.Duration
	// Warmup precedes each phase's measured part: connections are made,
	// keystores decoded and pools filled there. Zero means no warm-up;
	// DefaultOptions sets 2s.
	Warmup time.Duration
	// Route is RouteBytes or RouteEcho. Empty means RouteBytes.
	Route string
	// BodyBytes is the size of the request body. Zero sends a GET without a
	// body; more sends a POST. DefaultOptions sets 256.
	BodyBytes int
	// ResponseBytes is the size of /bytes responses. DefaultOptions sets 256.
	ResponseBytes int
	// NonIdempotent sends relay calls without "idempotent": true, so a
	// POST takes the worker's non-idempotent path: its state is read and
	// written in the call-state KV bucket around the attempt. By default
	// calls say "idempotent": true, the plain path.
	NonIdempotent bool
	// HTTP1 makes the partner offer HTTP/1.1 only; by default it offers
	// HTTP/2 through ALPN and both clients take it.
	HTTP1 bool
	// Inflight, when positive, selects the memory-bound mode: only the
	// relay runs, in a closed loop with this many calls in flight, and the
	// report's point is peak RSS. Concurrency is then ignored.
	Inflight int
	// PacedRate, when positive, replaces PacedFraction of the relay's
	// measured peak as the rate of the paced phases: on a shared machine,
	// half the peak may be more than the CPU left over can sustain.
	PacedRate float64
	// PacedFraction, when positive and PacedRate is not, replaces one half
	// as the fraction of the relay's measured peak the paced phases (and
	// the direct-calls mode's durable load) run at: 0.25 for a quarter.
	PacedFraction float64
	// MaxRSSMiB, when positive, makes Run return an *RSSLimitError (after
	// writing the report) when the process's peak RSS exceeded it. Unless
	// the environment sets GOMEMLIMIT, the run also sets Go's memory limit
	// to 80% of it, as a deployed worker's GOMEMLIMIT follows its
	// container's memory limit (deploy/k8s): the collector then works
	// harder rather than let garbage push the process over its budget.
	MaxRSSMiB float64
	// SkipFloor leaves out the last phase, the queue floor: the relay's
	// closed loop again with the workers replaced by a responder that does
	// their JetStream work but no HTTP exchange (see floorResponder).
	SkipFloor bool
	// CallTimeout bounds one call on either path. Zero means 30s.
	CallTimeout time.Duration
	// JSON writes the report as one JSON object instead of a table.
	JSON bool
	// CPUProfile, when set, receives a CPU profile (pprof format) of the
	// relay's measured closed-loop phase. Samples carry the label "part"
	// (see withPart).
	CPUProfile io.Writer
	// ProfileDir, when set, receives a CPU profile of every measured phase:
	// direct-closed.pprof, relay-closed.pprof, direct-paced.pprof,
	// relay-paced.pprof and floor-closed.pprof (unless SkipFloor). It
	// cannot be combined with CPUProfile.
	ProfileDir string
	// NATSURL, when set, runs the relay on that NATS server (JetStream
	// enabled) instead of one started in-process: the server can then run
	// on another machine, as in production, and its CPU is not the
	// relay's. The server must hold none of mtlsrelay's streams and
	// buckets: the run creates them and deletes them at the end.
	NATSURL string
	// EmbeddedNATS runs the NATS server inside the bench process, as
	// before issue 16; by default (and unless NATSURL names one) it runs
	// as a process of its own (nats-server, built from mtlsrelay's go.mod
	// into the cache, see NATSServerTool), so that the bench process's CPU
	// is not the server's and the server's is reported on its own.
	EmbeddedNATS bool
	// Peer adds the peer phases to the side-by-side mode: the same load
	// through Benthos v4 (BenthosTool, built into the cache on first use),
	// a closed loop after the relay's and a paced one after the relay's,
	// with Benthos's own CPU per call. See peer.go.
	Peer bool
	// PeerFirst runs each peer phase before the relay's instead of after.
	PeerFirst bool
	// Dir holds the keystore and JetStream's files. Empty means a
	// temporary folder removed at the end.
	Dir string

	// LargeBodies selects the large-bodies mode: only the relay, with
	// Inflight (or Concurrency) calls in flight until Calls have been made,
	// each a GET of /bytes?n=LargeBodyBytes&pattern=1, a body the worker
	// streams into the Object Store bucket mtlsrelay_bodies, its result
	// carrying a body_ref. Every body_ref is checked against the pattern's
	// size and SHA-256, one body in VerifyEvery is read back from the
	// bucket and hashed, and each object is deleted once its result is in.
	// The report's point is the worker's peak RSS: with WorkerCommand the
	// workers run as processes of their own and theirs is measured;
	// without, the bench process's. MaxRSSMiB then bounds the worker's.
	LargeBodies bool
	// LargeBodyBytes is the size of each response of the large-bodies
	// mode. Zero means 100,000,000 (100 MB).
	LargeBodyBytes int64
	// Calls is how many calls the large-bodies mode makes. Zero means
	// twice the calls in flight.
	Calls int
	// VerifyEvery: the large-bodies mode reads back and hashes the first
	// body and one in VerifyEvery after it. Zero means 8; 1 reads all.
	VerifyEvery int
	// WorkerCommand, when set, runs the workers as processes of their own
	// (in every mode but the memory-bound one), and in the side-by-side
	// mode the partner too: it returns the command that runs
	// WorkerProcessMain with args (`mtlsrelay bench` runs itself as
	// `mtlsrelay bench worker-process`; a partner process gets -partner
	// first). Its Stderr, when nil, is the
	// bench's, where GODEBUG=gctrace=1 (inherited) writes.
	WorkerCommand func(args []string) *exec.Cmd
	// WorkerHeapProfile, with WorkerCommand, is where a worker process
	// writes a heap profile (pprof) each time its heap passes its previous
	// peak by 10%: the last one written shows the heap near its peak.
	// Several workers write <name>-<n><ext>.
	WorkerHeapProfile string
	// WorkerCPUProfile, with WorkerCommand, is where each worker process
	// writes a CPU profile (pprof) of its whole run, from its ready line
	// until it stops: the worker's own time, without the load generator,
	// the partner or the NATS server. Several workers write
	// <name>-<n><ext>.
	WorkerCPUProfile string
	// WorkerLog, with WorkerCommand, is a file the worker processes log
	// to as serve does (JSON lines, info unless the config says
	// otherwise: a line per call); empty, they log nothing.
	WorkerLog string
	// WorkerEnv, with WorkerCommand, is added to the worker processes'
	// environment (KEY=VALUE each), for example GOMAXPROCS=1 as a
	// container's CPU limit of one sets it (Go 1.25 and later), or GOGC.
	WorkerEnv []string

	// DirectCalls selects the direct-calls mode: the latency of direct
	// calls (core NATS requests to <prefix>.rpc.<connection>, as
	// client.Client.Direct makes them) next to the same request made by
	// the direct HTTP client (the partner's own time), both paced at
	// DirectRate, first with the worker idle, then while it also serves a
	// paced durable load at half its peak durable rate (measured in the
	// run; PacedFraction of it, or PacedRate).
	DirectCalls bool
	// DirectRate is the rate of the direct-calls mode's measured phases.
	// Zero means 200 calls/s.
	DirectRate float64
}

// Defaults of the large-bodies and direct-calls modes.
const (
	DefaultLargeBodyBytes = 100_000_000
	DefaultVerifyEvery    = 8
	DefaultDirectRate     = 200
	// DefaultLargeCallTimeout is the call timeout `mtlsrelay bench
	// --large-bodies` uses unless --call-timeout says otherwise.
	DefaultLargeCallTimeout = 10 * time.Minute
)

func (o Options) largeBodyBytes() int64 {
	if o.LargeBodyBytes > 0 {
		return o.LargeBodyBytes
	}
	return DefaultLargeBodyBytes
}

// workerProcesses reports whether the workers run as processes of their
// own: with WorkerCommand, in every mode but the memory-bound one (whose
// point is the bench process's peak RSS, workers included).
func (o Options) workerProcesses() bool {
	return o.WorkerCommand != nil
}

// DefaultOptions returns the options of `mtlsrelay bench` without flags.
func DefaultOptions() Options {
	return Options{
		Concurrency:   64,
		Workers:       1,
		Duration:      10 * time.Second,
		Warmup:        2 * time.Second,
		Route:         RouteBytes,
		BodyBytes:     256,
		ResponseBytes: 256,
		CallTimeout:   30 * time.Second,
		Peer:          true,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.Workers <= 0 {
		o.Workers = d.Workers
	}
	if o.Duration <= 0 {
		o.Duration = d.Duration
	}
	if o.Route == "" {
		o.Route = d.Route
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = d.CallTimeout
	}
	if o.LargeBodies {
		o.LargeBodyBytes = o.largeBodyBytes()
		if o.Calls <= 0 {
			o.Calls = 2 * o.inflight()
		}
		if o.VerifyEvery <= 0 {
			o.VerifyEvery = DefaultVerifyEvery
		}
	}
	if o.DirectCalls && o.DirectRate <= 0 {
		o.DirectRate = DefaultDirectRate
	}
	return o
}

// pacedRate is the rate of the paced phases, and the fraction of peak it
// is (0 when Options.PacedRate sets it).
func (o Options) pacedRate(peak float64) (rate, fraction float64) {
	if o.PacedRate > 0 {
		return o.PacedRate, 0
	}
	fraction = 0.5
	if o.PacedFraction > 0 {
		fraction = o.PacedFraction
	}
	return peak * fraction, fraction
}

// pacedHow says how a paced rate was chosen, for the report.
func pacedHow(fraction float64) string {
	switch fraction {
	case 0:
		return "set by --paced-rate"
	case 0.5:
		return "half the peak"
	case 0.25:
		return "a quarter of the peak"
	}
	return fmt.Sprintf("%.0f%% of the peak", 100*fraction)
}

func (o Options) validate() error {
	var errs []error
	if o.PacedFraction < 0 || o.PacedFraction > 1 {
		errs = append(errs, fmt.Errorf("the paced fraction of the peak must be over 0 and at most 1 (0 for the default, one half), not %v", o.PacedFraction))
	}
	if o.PacedFraction > 0 && o.PacedRate > 0 {
		errs = append(errs, errors.New("a paced rate or a paced fraction of the peak: not both"))
	}
	if o.Route != RouteBytes && o.Route != RouteEcho {
		errs = append(errs, fmt.Errorf("route must be %q or %q, not %q", RouteBytes, RouteEcho, o.Route))
	}
	if o.BodyBytes < 0 || o.BodyBytes > 4<<20 {
		errs = append(errs, fmt.Errorf("body bytes must be from 0 to 4 MiB, not %d", o.BodyBytes))
	}
	if o.ResponseBytes < 0 || o.ResponseBytes > 4<<20 {
		errs = append(errs, fmt.Errorf("response bytes must be from 0 to 4 MiB (the worker's limit is 5 MiB), not %d", o.ResponseBytes))
	}
	if o.Workers > 64 {
		errs = append(errs, fmt.Errorf("at most 64 workers in one process, not %d", o.Workers))
	}
	if o.CPUProfile != nil && o.ProfileDir != "" {
		errs = append(errs, errors.New("a CPU profile of the relay's closed loop, or a folder of profiles of every phase: not both"))
	}
	if o.inflight() > 100000 {
		errs = append(errs, fmt.Errorf("at most 100000 calls in flight, not %d", o.inflight()))
	}
	if o.LargeBodies && o.DirectCalls {
		errs = append(errs, errors.New("the large-bodies mode or the direct-calls mode: not both"))
	}
	if o.DirectCalls && o.Inflight > 0 {
		errs = append(errs, errors.New("the direct-calls mode takes --concurrency for its peak phase, not --inflight (the memory-bound mode)"))
	}
	if o.LargeBodies {
		if o.Route != RouteBytes {
			errs = append(errs, fmt.Errorf("the large-bodies mode calls /bytes, not route %q", o.Route))
		}
		// Smaller bodies would come back inline, not by body_ref.
		if o.LargeBodyBytes <= worker.DefaultInlineBodyMax || o.LargeBodyBytes > catalog.MaxResponseBytesLimit {
			errs = append(errs, fmt.Errorf("large body bytes must be over %d (the worker's inline_body_max) and at most 1 GiB, not %d", worker.DefaultInlineBodyMax, o.LargeBodyBytes))
		}
		if o.Calls < o.inflight() {
			errs = append(errs, fmt.Errorf("%d calls cannot keep %d in flight", o.Calls, o.inflight()))
		}
	}
	if o.PeerFirst && !o.Peer {
		errs = append(errs, errors.New("the peer phases first needs the peer phases (side-by-side mode with Peer)"))
	}
	if (o.WorkerCPUProfile != "" || len(o.WorkerEnv) > 0 || o.WorkerLog != "") && !o.workerProcesses() {
		errs = append(errs, errors.New("a worker CPU profile, log or environment needs worker processes (WorkerCommand)"))
	}
	for _, kv := range o.WorkerEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("worker environment %q: want KEY=VALUE", kv))
		}
	}
	if o.WorkerHeapProfile != "" && !o.workerProcesses() {
		errs = append(errs, errors.New("a worker heap profile needs the large-bodies mode with worker processes (WorkerCommand)"))
	}
	if o.EmbeddedNATS && o.NATSURL != "" {
		errs = append(errs, errors.New("the embedded NATS server or the one --nats names: not both"))
	}
	if o.Peer && (o.LargeBodies || o.DirectCalls || o.Inflight > 0) {
		errs = append(errs, errors.New("the peer phases (Benthos) belong to the side-by-side mode only: not with --large-bodies, --direct-calls or --inflight"))
	}
	if o.DirectCalls && o.DirectRate > 100000 {
		errs = append(errs, fmt.Errorf("a direct rate of at most 100000 calls/s, not %.0f", o.DirectRate))
	}
	return errors.Join(errs...)
}

// partnerProcess reports whether the partner runs as a process of its own:
// in the side-by-side and direct-calls modes with worker processes, so
// that the bench process holds the load generator alone.
func (o Options) partnerProcess() bool {
	return o.WorkerCommand != nil && !o.LargeBodies && o.Inflight <= 0
}

// inflight is the number of calls in flight of the closed loops.
func (o Options) inflight() int {
	if o.Inflight > 0 {
		return o.Inflight
	}
	return o.Concurrency
}

// Report is what a run measured. Its JSON form is the output of
// `mtlsrelay bench --json`.
type Report struct {
	Setup Setup `json:"setup"`
	// Direct and Relay are the closed-loop phases (Direct is nil in the
	// memory-bound mode).
	Direct *Phase `json:"direct,omitempty"`
	Relay  *Phase `json:"relay"`
	// Ratio is Relay.Throughput / Direct.Throughput.
	Ratio float64 `json:"ratio,omitempty"`
	// Peer is the peer's closed loop (Options.Peer): the same load through
	// Benthos, after Relay; PacedPeer its paced loop at PacedRate.
	Peer      *Phase `json:"peer,omitempty"`
	PacedPeer *Phase `json:"paced_peer,omitempty"`
	// CPU is the CPU per call of each process, closed loops, side by side,
	// and the ratios between them (side-by-side mode).
	CPU *CPUSummary `json:"cpu,omitempty"`
	// Floor is the queue floor's closed loop: the flow and the NATS server
	// as in Relay, the workers replaced by a responder that publishes a
	// canned result without calling the partner. Nil with SkipFloor and in
	// the memory-bound mode.
	Floor *Phase `json:"floor,omitempty"`
	// RatioBound is Floor.Throughput / (Floor.Throughput +
	// Direct.Throughput): the ratio the relay would reach if a relayed call
	// cost the queue floor's work plus the direct call's, with nothing of
	// the worker's own. Both are CPU-bound on the same CPUs, so time per
	// call adds up; the relay cannot do better than this.
	RatioBound float64 `json:"ratio_bound,omitempty"`
	// PacedRate is the rate of the paced phases: PacedFraction of the
	// relay's closed-loop throughput unless Options.PacedRate set it.
	PacedRate float64 `json:"paced_rate,omitempty"`
	// PacedFraction is the fraction of the peak PacedRate is (0.5 unless
	// Options.PacedFraction set it); 0 when Options.PacedRate set the rate.
	PacedFraction float64 `json:"paced_fraction,omitempty"`
	PacedDirect   *Phase  `json:"paced_direct,omitempty"`
	PacedRelay    *Phase  `json:"paced_relay,omitempty"`
	// AddedP50MS and AddedP99MS are the relay's paced percentiles minus the
	// direct ones: the latency the relay adds at PacedRate.
	AddedP50MS float64 `json:"added_p50_ms,omitempty"`
	AddedP99MS float64 `json:"added_p99_ms,omitempty"`
	// PacedWarning is set when a paced phase skipped calls: that path could
	// not sustain PacedRate (on a busy machine, usually), so its
	// percentiles, and the added latency, describe a backlog.
	PacedWarning string `json:"paced_warning,omitempty"`
	// Workers are the worker processes' memory figures in the memory-bound
	// mode with worker processes (the large-bodies mode has its own);
	// MaxRSSMiB then bounds the largest of their peaks.
	Workers []WorkerMemory `json:"workers,omitempty"`
	// PeakRSSMiB is the process's VmHWM at the end of the run: the largest
	// resident set since the process started (it cannot be reset).
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// DuplicateResults counts results that arrived for a call already
	// completed (redeliveries); they are not counted twice.
	DuplicateResults int64 `json:"duplicate_results"`
	// LargeBodies is what the large-bodies mode measured besides Relay,
	// its calls as the bench process saw them.
	LargeBodies *LargeBodies `json:"large_bodies,omitempty"`
	// DirectCalls is what the direct-calls mode measured; Relay is its
	// durable peak phase.
	DirectCalls *DirectCalls `json:"direct_calls,omitempty"`
}

// Setup records what was measured and where.
type Setup struct {
	Mode          string  `json:"mode"` // "side-by-side", "memory-bound", "large-bodies" or "direct-calls"
	Protocol      string  `json:"protocol"`
	Method        string  `json:"method"`
	Idempotent    bool    `json:"idempotent"`
	Route         string  `json:"route"`
	BodyBytes     int     `json:"body_bytes"`
	ResponseBytes int     `json:"response_bytes,omitempty"`
	Concurrency   int     `json:"concurrency"`
	Workers       int     `json:"workers"`
	Seconds       float64 `json:"seconds"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	GoVersion     string  `json:"go_version"`
	OS            string  `json:"os"`
	Arch          string  `json:"arch"`
	NumCPU        int     `json:"num_cpu"`
	GOMAXPROCS    int     `json:"gomaxprocs"`
	// WorkerEnv is what the run added to the worker processes'
	// environment (Options.WorkerEnv).
	WorkerEnv []string `json:"worker_env,omitempty"`
	// WorkerLog is where the worker processes logged, empty for nowhere.
	WorkerLog string `json:"worker_log,omitempty"`
	// NATS is "process" (a nats-server process the run started),
	// "in-process" (Options.EmbeddedNATS), or the URL of the external
	// server the run used (Options.NATSURL), without credentials.
	NATS string `json:"nats"`
	// BenchProcess says what runs in the bench process, whose CPU is
	// Phase.CPUPerCallUS: always the partner and the load generator (the
	// direct client, the flow); the NATS server when embedded; the workers
	// unless they run as processes of their own.
	BenchProcess string `json:"bench_process"`
	// WorkerProcesses: the workers run as processes of their own.
	WorkerProcesses bool `json:"worker_processes"`
	// Peer describes the peer phases' Benthos, empty without them.
	Peer string `json:"peer,omitempty"`
	// PeerFirst: the peer phases ran before the relay's.
	PeerFirst bool `json:"peer_first,omitempty"`
	// LoadAverage is the machine's 1-minute load average at the start and
	// at the end of the run (Linux). The start shows what else ran: above
	// NumCPU/2, other processes competed for the CPUs and the figures are
	// noisy. The end includes the run's own load.
	LoadAverage [2]float64 `json:"load_average"`
	// MemoryLimitMiB is Go's memory limit during the run (GOMEMLIMIT, or
	// the one MaxRSSMiB sets), absent when there is none.
	MemoryLimitMiB float64 `json:"memory_limit_mib,omitempty"`
}

// Phase is one measured phase of one path.
type Phase struct {
	Name string `json:"name"`
	// Loop is "closed" (fixed calls in flight) or "paced" (fixed rate).
	Loop string `json:"loop"`
	// InFlight is the closed loop's calls in flight.
	InFlight int `json:"in_flight,omitempty"`
	// OfferedRate is the paced loop's rate, calls per second.
	OfferedRate float64 `json:"offered_rate,omitempty"`
	Seconds     float64 `json:"seconds"`
	// Calls counts the successful calls measured; Errors the others.
	Calls  int64 `json:"calls"`
	Errors int64 `json:"errors"`
	// FirstError describes the first failed call, if any.
	FirstError string `json:"first_error,omitempty"`
	// Skipped counts paced calls not started because too many were
	// outstanding: the path could not keep up with the rate.
	Skipped int64 `json:"skipped,omitempty"`
	// Throughput is successful calls per second.
	Throughput float64 `json:"throughput"`
	// Latency percentiles of successful calls, in milliseconds.
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// From the partner: new TCP connections, TLS handshakes that were full
	// (not resumed) or resumed, requests served.
	Connections           int64   `json:"connections"`
	FullHandshakes        int64   `json:"full_handshakes"`
	ResumedHandshakes     int64   `json:"resumed_handshakes"`
	FullHandshakesPer1000 float64 `json:"full_handshakes_per_1000"`
	PartnerRequests       int64   `json:"partner_requests"`
	// Allocations and bytes allocated per call by the whole process
	// (runtime.MemStats Mallocs and TotalAlloc deltas / calls).
	AllocsPerCall float64 `json:"allocs_per_call"`
	BytesPerCall  float64 `json:"bytes_per_call"`
	// PeakRSSMiB is the largest VmRSS sampled (every 50 ms) in the phase.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// CPUCores is the bench process's CPU time (user + system) in the
	// phase divided by its duration: near NumCPU means CPU-bound.
	// CPUPerCallUS is that CPU time per call, in microseconds. Zero where
	// unavailable. The bench process holds the partner and the load
	// generator (the flow, or the direct client), and whatever of the
	// workers and the NATS server runs in it (Processes says).
	CPUCores     float64 `json:"cpu_cores"`
	CPUPerCallUS float64 `json:"cpu_per_call_us"`
	// Processes is the CPU of each process of the run in the phase: the
	// bench's own first (getrusage), then the others that run, read from
	// /proc/<pid>/stat at the window's ends (Linux): the worker processes,
	// the NATS server's, Benthos's.
	Processes []ProcessCPU `json:"processes,omitempty"`
	// Stages splits the relay's latency; nil for the direct path.
	Stages *Stages `json:"stages,omitempty"`
}

// Names of the processes in Phase.Processes.
const (
	processBench   = "bench"
	processNATS    = "nats-server"
	processPartner = "partner"
	processBenthos = "benthos"
)

// ProcessCPU is one process's CPU in a phase.
type ProcessCPU struct {
	// Name is "bench" (this process), "worker" ("worker-<n>" with several),
	// "nats-server" or "benthos".
	Name string `json:"name"`
	// Includes says what the process runs (for the bench process, see
	// Setup.BenchProcess).
	Includes string `json:"includes,omitempty"`
	PID      int    `json:"pid"`
	// CPUSeconds is its CPU time, user and system, in the phase's window;
	// Cores that over the window's duration; CPUPerCallUS that per call of
	// the phase, in microseconds.
	CPUSeconds   float64 `json:"cpu_seconds"`
	Cores        float64 `json:"cores"`
	CPUPerCallUS float64 `json:"cpu_per_call_us"`
}

// CPUSummary sets the closed loops' CPU per call (µs) of each process
// side by side (zero where that process did not run) and their ratios.
type CPUSummary struct {
	// PartnerApart: the partner ran as a process of its own, so the bench
	// process's figures are the load generator's alone.
	PartnerApart bool `json:"partner_apart"`
	// DirectBench is the bench process's in the direct phase: the direct
	// client (and the partner unless PartnerApart; and, idle, the embedded
	// NATS server or in-process workers, when so). DirectPartner is the
	// partner process's.
	DirectBench   float64 `json:"direct_bench_us"`
	DirectPartner float64 `json:"direct_partner_us,omitempty"`
	// RelayBench is the bench process's in the relay phase: the flow and
	// the partner (and the embedded server or in-process workers).
	RelayBench float64 `json:"relay_bench_us"`
	// RelayWorker is the worker processes' (summed) in the relay phase,
	// RelayNATS the NATS server process's.
	RelayWorker  float64 `json:"relay_worker_us,omitempty"`
	RelayNATS    float64 `json:"relay_nats_us,omitempty"`
	RelayPartner float64 `json:"relay_partner_us,omitempty"`
	// PeerBench, PeerBenthos and PeerNATS are the same in the peer phase.
	PeerBench   float64 `json:"peer_bench_us,omitempty"`
	PeerBenthos float64 `json:"peer_benthos_us,omitempty"`
	PeerNATS    float64 `json:"peer_nats_us,omitempty"`
	// WorkerOverDirect is RelayWorker / DirectBench: the worker's CPU per
	// call over the direct client's (without PartnerApart the partner's
	// share is in the latter, and the ratio understates the worker's cost).
	WorkerOverDirect float64 `json:"worker_over_direct,omitempty"`
	// WorkerOverBenthos is RelayWorker / PeerBenthos.
	WorkerOverBenthos float64 `json:"worker_over_benthos,omitempty"`
	// RelayOverPeer is the relay's closed-loop throughput over the peer's.
	RelayOverPeer float64 `json:"relay_over_peer,omitempty"`
	// The same at one rate for every path, the paced loops' (PacedRate):
	// a closed loop's CPU per call falls as its rate rises (more work per
	// wake-up), and the direct client's closed loop runs several times as
	// fast as the relay's. The bench process's paced figure includes the
	// pacing's own work (a timer and a goroutine per call).
	PacedDirectBench       float64 `json:"paced_direct_bench_us,omitempty"`
	PacedRelayWorker       float64 `json:"paced_relay_worker_us,omitempty"`
	PacedPeerBenthos       float64 `json:"paced_peer_benthos_us,omitempty"`
	PacedWorkerOverDirect  float64 `json:"paced_worker_over_direct,omitempty"`
	PacedWorkerOverBenthos float64 `json:"paced_worker_over_benthos,omitempty"`
}

// Stages splits the latency of relay calls, p50 and p99 of each stage in
// milliseconds: Enqueue is the publish until JetStream's ack; Queued is the
// result's queued_ms (stored until a worker started the attempt); Attempt
// its total_ms (the HTTP exchange). The rest of a call's latency is the
// result's way back: publish to MTLSRELAY_RESULTS, delivery, decoding.
type Stages struct {
	EnqueueP50MS float64 `json:"enqueue_p50_ms"`
	EnqueueP99MS float64 `json:"enqueue_p99_ms"`
	QueuedP50MS  float64 `json:"queued_p50_ms"`
	QueuedP99MS  float64 `json:"queued_p99_ms"`
	AttemptP50MS float64 `json:"attempt_p50_ms"`
	AttemptP99MS float64 `json:"attempt_p99_ms"`
}

// RSSLimitError is returned when Options.MaxRSSMiB was exceeded.
type RSSLimitError struct {
	PeakMiB, LimitMiB float64
}

func (e *RSSLimitError) Error() string {
	return fmt.Sprintf("peak RSS %.1f MiB exceeds the limit of %.0f MiB", e.PeakMiB, e.LimitMiB)
}

// Run starts the rig, measures, writes the report to out (a table, or
// JSON with Options.JSON) and returns it. Progress lines go to out too,
// in table mode. A run whose relay or direct path completed no call is an
// error; calls that failed are counted in the report. With an error the
// report may be nil, or hold the phases measured before it.
func Run(ctx context.Context, o Options, out io.Writer) (*Report, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	progress := func(format string, args ...any) {
		if !o.JSON {
			fmt.Fprintf(out, format+"\n", args...)
		}
	}
	// Worker processes get their memory limit in their environment.
	if o.MaxRSSMiB > 0 && os.Getenv("GOMEMLIMIT") == "" && !o.workerProcesses() {
		prev := debug.SetMemoryLimit(int64(o.MaxRSSMiB * 0.8 * (1 << 20)))
		defer debug.SetMemoryLimit(prev)
	}
	prof := &profiles{relayClosed: o.CPUProfile, dir: o.ProfileDir}
	defer prof.close()
	loadStart := loadAverage()
	r, err := startRig(ctx, o, progress)
	if err != nil {
		return nil, err
	}
	defer r.close()
	proto, err := r.protocol(ctx)
	if err != nil {
		return nil, err
	}
	shape := shapeOf(o)
	rep := &Report{Setup: Setup{
		Mode: "side-by-side", Protocol: proto, Method: shape.method, Idempotent: !o.NonIdempotent || shape.method == "GET", Route: "/" + shape.path,
		BodyBytes: len(shape.body), Concurrency: o.inflight(), Workers: o.Workers,
		Seconds: o.Duration.Seconds(), WarmupSeconds: o.Warmup.Seconds(),
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), NATS: r.natsName(),
		LoadAverage: [2]float64{loadStart}, BenchProcess: r.benchProcess(), WorkerProcesses: len(r.procs) > 0,
		WorkerEnv: o.WorkerEnv, WorkerLog: o.WorkerLog,
	}}
	if o.Peer {
		rep.Setup.Peer = fmt.Sprintf("Benthos %s, %d pipeline threads, output max_in_flight %d, input max_ack_pending %d", BenthosVersion, peerThreads(o), peerThreads(o), peerThreads(o))
		rep.Setup.PeerFirst = o.PeerFirst
	}
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		rep.Setup.MemoryLimitMiB = mib(limit)
	}
	if o.Route == RouteBytes {
		rep.Setup.ResponseBytes = max(o.ResponseBytes, shape.wantLen)
	}

	switch {
	case o.LargeBodies:
		rep.Setup.Mode = "large-bodies"
		if err := runLargeBodies(ctx, o, r, rep, prof, progress); err != nil {
			return rep, err
		}
	case o.DirectCalls:
		rep.Setup.Mode = "direct-calls"
		if err := runDirectCalls(ctx, o, r, rep, prof, progress); err != nil {
			return rep, err
		}
	case o.Inflight > 0:
		rep.Setup.Mode = "memory-bound"
		progress("relay, %d calls in flight: %s warm-up, %s measured", o.Inflight, o.Warmup, o.Duration)
		if rep.Relay, err = closedLoop(ctx, r.meter(), "relay", r.relay, o.Inflight, o.Warmup, o.Duration, prof.writer("relay", "closed")); err != nil {
			return nil, err
		}
		// The workers' peak, when they are processes of their own: they
		// end here, for getrusage.
		for _, p := range r.procs {
			p.stop()
			rep.Workers = append(rep.Workers, p.memory())
		}
		if err := needCalls(rep.Relay); err != nil {
			return rep, err
		}
	default:
		progress("direct, %d calls in flight: %s warm-up, %s measured", o.Concurrency, o.Warmup, o.Duration)
		if rep.Direct, err = closedLoop(ctx, r.meter(), "direct", r.direct, o.Concurrency, o.Warmup, o.Duration, prof.writer("direct", "closed")); err != nil {
			return nil, err
		}
		relayClosed := func() (err error) {
			progress("relay, %d calls in flight: %s warm-up, %s measured", o.Concurrency, o.Warmup, o.Duration)
			rep.Relay, err = closedLoop(ctx, r.meter(), "relay", r.relay, o.Concurrency, o.Warmup, o.Duration, prof.writer("relay", "closed"))
			if err == nil {
				err = errors.Join(needCalls(rep.Direct), needCalls(rep.Relay))
			}
			return err
		}
		peerClosed := func() (err error) {
			if err := r.startPeer(ctx, progress); err != nil {
				return err
			}
			progress("peer (Benthos %s), %d calls in flight: %s warm-up, %s measured", BenthosVersion, o.Concurrency, o.Warmup, o.Duration)
			if rep.Peer, err = closedLoop(ctx, r.meter(), "peer", r.peer, o.Concurrency, o.Warmup, o.Duration, prof.writer("peer", "closed")); err != nil {
				return err
			}
			return needCalls(rep.Peer)
		}
		if err := inOrder(o, relayClosed, peerClosed); err != nil {
			return rep, err
		}
		rep.Ratio = rep.Relay.Throughput / rep.Direct.Throughput
		rep.PacedRate, rep.PacedFraction = o.pacedRate(rep.Relay.Throughput)
		maxOutstanding := max(10*o.Concurrency, 1000)
		// A short warm-up at the paced rate lets the pools settle to it.
		pacedWarmup := min(o.Warmup, time.Second)
		progress("direct, paced at %.0f calls/s: %s measured", rep.PacedRate, o.Duration)
		if rep.PacedDirect, err = pacedLoop(ctx, r.meter(), "direct", r.direct, rep.PacedRate, maxOutstanding, pacedWarmup, o.Duration, prof.writer("direct", "paced")); err != nil {
			return nil, err
		}
		relayPaced := func() (err error) {
			progress("relay, paced at %.0f calls/s: %s measured", rep.PacedRate, o.Duration)
			rep.PacedRelay, err = pacedLoop(ctx, r.meter(), "relay", r.relay, rep.PacedRate, maxOutstanding, pacedWarmup, o.Duration, prof.writer("relay", "paced"))
			return err
		}
		peerPaced := func() (err error) {
			progress("peer, paced at %.0f calls/s: %s measured", rep.PacedRate, o.Duration)
			rep.PacedPeer, err = pacedLoop(ctx, r.meter(), "peer", r.peer, rep.PacedRate, maxOutstanding, pacedWarmup, o.Duration, prof.writer("peer", "paced"))
			return err
		}
		if err := inOrder(o, relayPaced, peerPaced); err != nil {
			return nil, err
		}
		rep.AddedP50MS = rep.PacedRelay.P50MS - rep.PacedDirect.P50MS
		rep.AddedP99MS = rep.PacedRelay.P99MS - rep.PacedDirect.P99MS
		rep.CPU = cpuSummary(rep)
		for _, ph := range []*Phase{rep.PacedDirect, rep.PacedRelay, rep.PacedPeer} {
			if ph != nil && ph.Skipped > 0 {
				rep.PacedWarning += fmt.Sprintf("%s could not keep up with %.0f calls/s (%d calls skipped); ", ph.Name, rep.PacedRate, ph.Skipped)
			}
		}
		if rep.PacedWarning != "" {
			rep.PacedWarning += "the added latency measures a backlog, not the relay: run again on a quieter machine"
		}
		if !o.SkipFloor {
			progress("queue floor (workers replaced by a responder that makes no HTTP call), %d calls in flight: %s warm-up, %s measured", o.Concurrency, o.Warmup, o.Duration)
			if err := r.startFloor(ctx); err != nil {
				return nil, err
			}
			if rep.Floor, err = closedLoop(ctx, r.meter(), "floor", r.relay, o.Concurrency, o.Warmup, o.Duration, prof.writer("floor", "closed")); err != nil {
				return nil, err
			}
			if err := needCalls(rep.Floor); err != nil {
				return rep, err
			}
			// The responder's results carry no timings: no stages to show.
			rep.Floor.Stages = nil
			rep.RatioBound = rep.Floor.Throughput / (rep.Floor.Throughput + rep.Direct.Throughput)
		}
		// The worker processes' own figures (collections, GOGC, memory
		// limit): they end here, if the floor did not end them.
		for _, p := range r.procs {
			p.stop()
			rep.Workers = append(rep.Workers, p.memory())
		}
	}
	if _, hwm, ok := procStatus(); ok {
		rep.PeakRSSMiB = mib(hwm)
	}
	if pp, ok := r.partner.(*partnerProc); ok && pp.err != nil {
		return rep, pp.err
	}
	rep.DuplicateResults = r.relay.duplicates.Load()
	if r.peer != nil {
		rep.DuplicateResults += r.peer.duplicates.Load()
	}
	rep.Setup.LoadAverage[1] = loadAverage()

	if err := prof.close(); err != nil {
		return rep, fmt.Errorf("CPU profiles: %w", err)
	}
	if o.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return rep, err
		}
	} else {
		writeTable(out, rep)
	}
	peak := rep.PeakRSSMiB
	if lb := rep.LargeBodies; lb != nil {
		peak = lb.WorkerPeakRSSMiB
	}
	if len(rep.Workers) > 0 {
		peak = 0
		for _, w := range rep.Workers {
			peak = max(peak, w.PeakRSSMiB)
		}
	}
	if o.MaxRSSMiB > 0 && peak > o.MaxRSSMiB {
		return rep, &RSSLimitError{PeakMiB: peak, LimitMiB: o.MaxRSSMiB}
	}
	return rep, nil
}

// needCalls fails a phase in which no call succeeded: its figures would be
// meaningless.
func needCalls(ph *Phase) error {
	if ph.Calls > 0 {
		return nil
	}
	return fmt.Errorf("%s: no call succeeded in %.1fs (%d failed; first: %s)", ph.Name, ph.Seconds, ph.Errors, ph.FirstError)
}

// inOrder runs a relay phase and, with Options.Peer, the peer's: the
// relay's first unless Options.PeerFirst. The phase after another on the
// same machine may find it busier (the NATS server's and the kernel's
// work left over): runs in both orders tell that apart from the paths.
func inOrder(o Options, relay, peer func() error) error {
	phases := []func() error{relay}
	switch {
	case o.Peer && o.PeerFirst:
		phases = []func() error{peer, relay}
	case o.Peer:
		phases = append(phases, peer)
	}
	for _, run := range phases {
		if err := run(); err != nil {
			return err
		}
	}
	return nil
}

// profiles hands each measured phase the writer for its CPU profile: the
// relay's closed loop to Options.CPUProfile, or every phase to a file in
// Options.ProfileDir.
type profiles struct {
	relayClosed io.Writer
	dir         string
	files       []*os.File
	err         error
}

// writer returns where the phase's profile goes, nil for none.
func (p *profiles) writer(path, loop string) io.Writer {
	if p.dir == "" {
		if path == "relay" && loop == "closed" && p.relayClosed != nil {
			return p.relayClosed
		}
		return nil
	}
	f, err := os.Create(filepath.Join(p.dir, path+"-"+loop+".pprof"))
	if err != nil {
		p.err = errors.Join(p.err, err)
		return nil
	}
	p.files = append(p.files, f)
	return f
}

// close closes the profile files and reports the first failure to make or
// write one.
func (p *profiles) close() error {
	for _, f := range p.files {
		p.err = errors.Join(p.err, f.Close())
	}
	p.files = nil
	return p.err
}

// cpuSummary sets the closed loops' CPU per call side by side.
func cpuSummary(rep *Report) *CPUSummary {
	c := &CPUSummary{}
	sum := func(ph *Phase, name string) (us float64) {
		if ph == nil {
			return 0
		}
		for _, p := range ph.Processes {
			if p.Name == name || (name == "worker" && strings.HasPrefix(p.Name, "worker-")) {
				us += p.CPUPerCallUS
			}
		}
		return us
	}
	c.DirectBench = sum(rep.Direct, processBench)
	c.RelayBench = sum(rep.Relay, processBench)
	c.RelayWorker = sum(rep.Relay, "worker")
	c.RelayNATS = sum(rep.Relay, processNATS)
	c.PeerBench = sum(rep.Peer, processBench)
	c.PeerBenthos = sum(rep.Peer, processBenthos)
	c.PeerNATS = sum(rep.Peer, processNATS)
	c.DirectPartner = sum(rep.Direct, processPartner)
	c.RelayPartner = sum(rep.Relay, processPartner)
	c.PartnerApart = c.DirectPartner > 0
	if c.RelayWorker > 0 && c.DirectBench > 0 {
		c.WorkerOverDirect = c.RelayWorker / c.DirectBench
	}
	if c.RelayWorker > 0 && c.PeerBenthos > 0 {
		c.WorkerOverBenthos = c.RelayWorker / c.PeerBenthos
	}
	if rep.Peer != nil && rep.Peer.Throughput > 0 {
		c.RelayOverPeer = rep.Relay.Throughput / rep.Peer.Throughput
	}
	c.PacedDirectBench = sum(rep.PacedDirect, processBench)
	c.PacedRelayWorker = sum(rep.PacedRelay, "worker")
	c.PacedPeerBenthos = sum(rep.PacedPeer, processBenthos)
	if c.PacedRelayWorker > 0 && c.PacedDirectBench > 0 {
		c.PacedWorkerOverDirect = c.PacedRelayWorker / c.PacedDirectBench
	}
	if c.PacedRelayWorker > 0 && c.PacedPeerBenthos > 0 {
		c.PacedWorkerOverBenthos = c.PacedRelayWorker / c.PacedPeerBenthos
	}
	return c
}
