package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

// Variant is a change to the relay's per-call JetStream pattern, measured
// against the pattern itself (the zero Variant, "full") in the same round:
// what each JetStream operation of a call costs, and what dropping it
// would cost a guarantee (docs/BENCHMARKS.md, issue 16 item 3).
type Variant struct {
	// Name is the variant's name for -variants.
	Name string
	// Change says what differs from the relay's pattern; Weakens, which
	// guarantee of README's contract (docs/RELIABILITY.md "Guarantees")
	// the change gives up, or "none".
	Change, Weakens string
	// CallNoMsgID publishes calls without Nats-Msg-Id: the calls stream
	// de-duplicates nothing (the id travels in callIDHeader).
	CallNoMsgID bool
	// ResultNoMsgID publishes results without Nats-Msg-Id (the id travels
	// in callIDHeader): the results stream de-duplicates nothing.
	ResultNoMsgID bool
	// ResultWindow is the results stream's duplicate window; 0 is the
	// relay's 2 min. nats-server's least is 100 ms.
	ResultWindow time.Duration
	// CoreResult publishes results with a core publish to a subject no
	// stream keeps (a flow's inbox reply_to) and acks the call at once.
	CoreResult bool
	// AckBeforeResult acks the call as soon as its result is published,
	// before the result's PubAck.
	AckBeforeResult bool
	// AckSync acks with AckSync (the server confirms the ack) instead of
	// a plain Ack.
	AckSync bool
	// InProgress sends one InProgress per call before its result: what a
	// call held longer than AckWait/3 (10 s by default) sends every
	// AckWait/3.
	InProgress bool
	// PerCall runs each call on a goroutine of its own that waits for its
	// result's PubAck and then acks, as the worker's slots do, instead of
	// the pull loop's pipeline.
	PerCall bool
	// KV adds what a non-idempotent call costs in mtlsrelay_call_state: a
	// get before the attempt, a put (in flight) before the request leaves,
	// a put (done) after the result's PubAck and before the ack. With
	// PerCall only.
	KV bool
	// Batch, when > 0, replaces Spec.Batch: calls per Fetch.
	Batch int
}

// callIDHeader carries a call's id when Nats-Msg-Id does not.
const callIDHeader = "Mtlsrelay-Call-Id"

// variantList is every variant, "full" first.
var variantList = []Variant{
	{Name: "full", Change: "the relay's pattern: call publish (PubAck), pull of up to 64, result publish with Nats-Msg-Id (PubAck), plain Ack after the result's PubAck", Weakens: "-"},
	{Name: "no-call-dedupe", CallNoMsgID: true, Change: "calls without Nats-Msg-Id", Weakens: "a flow's retried Enqueue is stored, and run, twice (the calls stream's dedupe)"},
	{Name: "no-result-dedupe", ResultNoMsgID: true, ResultWindow: 100 * time.Millisecond, Change: "results without Nats-Msg-Id, results window 100 ms", Weakens: "stored result: exactly one per call id (a result published again after a lost PubAck or a redelivery is stored twice)"},
	{Name: "result-window-100ms", ResultWindow: 100 * time.Millisecond, Change: "results keep Nats-Msg-Id, results window 100 ms (ids expire during the run)", Weakens: "stored result, for a republish more than 100 ms after the first"},
	{Name: "core-result", CoreResult: true, Change: "result by core publish to a subject no stream keeps, call acked at once", Weakens: "the result is not stored (as for an inbox reply_to today): no call lost / stored result"},
	{Name: "ack-before-result", AckBeforeResult: true, Change: "call acked right after the result's publish, before its PubAck", Weakens: "no call lost (a result the stream never stored leaves an acked call)"},
	{Name: "ack-sync", AckSync: true, Change: "AckSync (double ack, the server confirms) instead of Ack", Weakens: "none (it adds a reply)"},
	{Name: "batch-1", Batch: 1, Change: "Fetch(1): one pull request per call", Weakens: "none (it is dearer)"},
	{Name: "inprogress", InProgress: true, Change: "one InProgress per call (a call held longer than AckWait/3 sends one every AckWait/3)", Weakens: "none (it is dearer)"},
	{Name: "per-call", PerCall: true, Change: "each call on its own goroutine that waits for its result's PubAck, then acks (the worker's slot model); no KV", Weakens: "none"},
	{Name: "per-call-kv", PerCall: true, KV: true, Change: "per-call, plus a non-idempotent call's KV ops: get, put (in flight), put (done) after the result's PubAck", Weakens: "none (what non-idempotent calls add)"},
}

// variantsByName resolves -variants: "all", or names separated by commas
// ("full" is added first when missing: it is the reference).
func variantsByName(list string) ([]Variant, error) {
	if list == "all" {
		return variantList, nil
	}
	out := []Variant{variantList[0]}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || name == "full" {
			continue
		}
		i := slices.IndexFunc(variantList, func(v Variant) bool { return v.Name == name })
		if i < 0 {
			var names []string
			for _, v := range variantList {
				names = append(names, v.Name)
			}
			return nil, fmt.Errorf("no variant %q (have: all, %s)", name, strings.Join(names, ", "))
		}
		out = append(out, variantList[i])
	}
	return out, nil
}

// storedWant is how many results a run of calls leaves stored.
func (v Variant) storedWant(calls int) uint64 {
	if v.CoreResult {
		return 0
	}
	return uint64(calls)
}

func (s Spec) stateBucket() string { return "sb_" + strings.ToLower(s.Tag) + "_state" }

// inboxSubject is where a core result goes: no stream keeps it.
func (s Spec) inboxSubject(p int, id string) string {
	return fmt.Sprintf("sb.%s.inbox.%d.%s", s.Tag, p, id)
}

// stateBucketConfig is mtlsrelay_call_state's configuration (worker.openState)
// for the run's bucket.
func stateBucketConfig(s Spec, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: s.stateBucket(), TTL: time.Hour, History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
	}
}

// callOf reads a delivered call's id and index.
func callOf(msg jetstream.Msg, s Spec) (string, int, error) {
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	if id == "" {
		id = msg.Headers().Get(callIDHeader)
	}
	i, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
	if err != nil || i < 0 || i >= s.Calls {
		return "", 0, fmt.Errorf("call with id %q", id)
	}
	return id, i, nil
}

// resultMsg is call id's result: on its results subject with Nats-Msg-Id
// (the relay's), without it (Variant.ResultNoMsgID), or on an inbox
// subject (Variant.CoreResult).
func resultMsg(s Spec, p int, id string, payload []byte) *nats.Msg {
	subject := s.resultSubject(p, id)
	if s.Variant.CoreResult {
		subject = s.inboxSubject(p, id)
	}
	res := nats.NewMsg(subject)
	res.Data = payload
	if s.Variant.ResultNoMsgID || s.Variant.CoreResult {
		res.Header.Set(callIDHeader, id)
	} else {
		res.Header.Set(jetstream.MsgIDHeader, id)
	}
	return res
}

// workPerCall is work for Variant.PerCall: the pull loop hands each call
// to a goroutine of its own (at most s.Window at once per loop), which
// does what worker.handleDurable does around JetStream for a call made at
// its first delivery: with Variant.KV, read the call's state and record
// it in flight; publish the result and wait for its PubAck; with
// Variant.KV record the call done; ack.
func workPerCall(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, p int, s Spec, t *tally) error {
	payload := []byte(strings.Repeat("r", s.Payload))
	var kv jetstream.KeyValue
	if s.Variant.KV {
		var err error
		if kv, err = js.KeyValue(ctx, s.stateBucket()); err != nil {
			return err
		}
	}
	slots := make(chan struct{}, max(1, s.Window))
	var wg sync.WaitGroup
	var firstErr atomic.Value
	failed := func(err error) {
		if ctx.Err() == nil {
			firstErr.CompareAndSwap(nil, err)
		}
	}
	loopErr := pullCalls(ctx, cons, s, func() bool { return firstErr.Load() == nil }, func(msg jetstream.Msg, id string, i int) error {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return errStopped
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := oneCall(ctx, js, kv, msg, resultMsg(s, p, id, payload), "c."+id); err != nil {
				failed(err)
				return
			}
			t.ack(i)
		})
		return nil
	})
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		return errors.Join(loopErr, e)
	}
	return loopErr
}

// oneCall is one call of workPerCall.
func oneCall(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, msg jetstream.Msg, res *nats.Msg, key string) error {
	if kv != nil {
		if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("state get %s: %v, want not found", key, err)
		}
		if _, err := kv.Put(ctx, key, []byte(`{"attempts":0,"inflight":true,"worker":"scalebench"}`)); err != nil {
			return fmt.Errorf("state put: %w", err)
		}
	}
	fut, err := js.PublishMsgAsync(res, jetstream.WithStallWait(stallWait))
	if err != nil {
		return fmt.Errorf("publish result: %w", err)
	}
	select {
	case <-fut.Ok():
	case err := <-fut.Err():
		return fmt.Errorf("publish result: %w", err)
	case <-ctx.Done():
		return nil
	}
	if kv != nil {
		if _, err := kv.Put(ctx, key, []byte(`{"attempts":1,"done":true,"worker":"scalebench"}`)); err != nil {
			return fmt.Errorf("state put: %w", err)
		}
	}
	if err := msg.Ack(); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// serversCPU is the CPU time (user + system, all threads) the processes
// pids have used so far, together (internal/bench's reading of
// /proc/<pid>/stat, 10 ms ticks); ok is false when one could not be read.
func serversCPU(pids []int) (time.Duration, bool) {
	var sum time.Duration
	for _, pid := range pids {
		d, ok := bench.PIDCPU(pid)
		if !ok {
			return 0, false
		}
		sum += d
	}
	return sum, true
}

// loadAvg is /proc/loadavg's first three fields, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// variantSample is one run of a variant.
type variantSample struct {
	rate, cpuPerCall float64 // calls/s, server CPU µs per call (-1 unknown)
}

// runVariants runs each variant once per round on each of the clusters
// named in servers ("r1", "r3"), in an order that turns by one each round,
// and prints per cluster the rates, the servers' CPU per call and their
// ratios to "full" in the same round.
func runVariants(ctx context.Context, w io.Writer, bin, dir string, o options, variants []Variant) error {
	fmt.Fprintf(w, "# variants: %d rounds; load average at start %s\n", o.rounds, loadAvg())
	for _, cname := range strings.Split(o.variantServers, ",") {
		cname = strings.TrimSpace(cname)
		n := 1
		switch cname {
		case "r1":
		case "r3":
			n = 3
		default:
			return fmt.Errorf("-variant-servers: %q is neither r1 nor r3", cname)
		}
		c, err := startCluster(ctx, bin, filepath.Join(dir, "variants-"+cname), n, "2m")
		if err != nil {
			return fmt.Errorf("start %s: %w", cname, err)
		}
		err = runVariantsOn(ctx, w, c, cname, o, variants)
		c.stop()
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\n# load average at end %s\n", loadAvg())
	return nil
}

func runVariantsOn(ctx context.Context, w io.Writer, c *cluster, cname string, o options, variants []Variant) error {
	var pids []int
	for _, s := range c.servers {
		pids = append(pids, s.pid())
	}
	// A first run, not counted: the first run on fresh servers costs
	// more (allocations, file creation) and would be "full"'s.
	warm := o.spec
	warm.Tag, warm.Partitions, warm.PIDs = "V"+cname+"_warm", 1, pids
	if _, err := run(ctx, c.urls(), c.names(), len(c.servers), warm); err != nil {
		return fmt.Errorf("%s warm-up: %w", cname, err)
	}
	samples := map[string][]variantSample{}
	rateRatios, cpuRatios := map[string][]float64{}, map[string][]float64{}
	for r := range o.rounds {
		round := map[string]variantSample{}
		for k := range variants {
			v := variants[(k+r)%len(variants)]
			spec := o.spec
			spec.Tag = fmt.Sprintf("V%s%d_%s", cname, r, strings.ReplaceAll(v.Name, "-", ""))
			spec.Partitions = 1
			spec.Variant = v
			spec.PIDs = pids
			if v.Batch > 0 {
				spec.Batch = v.Batch
			}
			out, err := run(ctx, c.urls(), c.names(), len(c.servers), spec)
			if err != nil {
				return fmt.Errorf("%s round %d, %s: %w", cname, r+1, v.Name, err)
			}
			smp := variantSample{rate: out.CallsPerSec, cpuPerCall: -1}
			if out.ServerCPUOK {
				smp.cpuPerCall = float64(out.ServerCPU.Microseconds()) / float64(spec.Calls)
			}
			fmt.Fprintf(os.Stderr, "%s round %d %-20s %8.0f calls/s %6.1f µs server CPU/call (%s, %d results stored, load %s)\n",
				cname, r+1, v.Name, smp.rate, smp.cpuPerCall, out.Elapsed.Round(time.Millisecond), out.Stored, loadAvg())
			round[v.Name] = smp
			samples[v.Name] = append(samples[v.Name], smp)
		}
		ref := round["full"]
		for name, smp := range round {
			rateRatios[name] = append(rateRatios[name], smp.rate/ref.rate)
			if smp.cpuPerCall > 0 && ref.cpuPerCall > 0 {
				cpuRatios[name] = append(cpuRatios[name], smp.cpuPerCall/ref.cpuPerCall)
			}
		}
	}
	fmt.Fprintf(w, "\n%s (%d server%s, streams R%d), %d calls per run, batch %d, window %d, %d pull loops; load average now %s\n",
		strings.ToUpper(cname), len(c.servers), map[bool]string{true: "s", false: ""}[len(c.servers) > 1], len(c.servers),
		o.spec.Calls, o.spec.Batch, o.spec.Window, o.spec.Workers, loadAvg())
	fmt.Fprintf(w, "\n| variant | calls/s per round | median calls/s | calls/s ratio to full, median (range) | nats-server CPU µs/call per round | median µs/call | CPU/call ratio to full, median (range) |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|\n")
	for _, v := range variants {
		var eachRate, eachCPU []string
		var rv, cv []float64
		for _, smp := range samples[v.Name] {
			rv = append(rv, smp.rate)
			eachRate = append(eachRate, fmt.Sprintf("%.0f", smp.rate))
			if smp.cpuPerCall >= 0 {
				cv = append(cv, smp.cpuPerCall)
				eachCPU = append(eachCPU, fmt.Sprintf("%.1f", smp.cpuPerCall))
			}
		}
		rm, _, _ := stats(rv)
		cm, _, _ := stats(cv)
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %.1f | %s |\n", v.Name, strings.Join(eachRate, ", "), rm,
			ratioCell(rateRatios[v.Name]), strings.Join(eachCPU, ", "), cm, ratioCell(cpuRatios[v.Name]))
	}
	fmt.Fprintf(w, "\n| variant | change | weakens |\n|---|---|---|\n")
	for _, v := range variants {
		fmt.Fprintf(w, "| %s | %s | %s |\n", v.Name, v.Change, v.Weakens)
	}
	return nil
}

// ratioCell is "median (min-max)" of ratios.
func ratioCell(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	m, lo, hi := stats(v)
	return fmt.Sprintf("%.2f (%.2f-%.2f)", m, lo, hi)
}
