// Command scalebench measures how far one JetStream stream carries the
// relay's per-call pattern, and what partitioning and fsync change, on real
// nats-server processes: a single server (R1) and a 3-node cluster (R3).
//
// Per call it does what a flow and a worker do (jobs/client, worker):
// an async publish of the call to a work-queue stream with a unique
// Nats-Msg-Id, a pull consumer's Fetch, an async publish of the result
// (Nats-Msg-Id = the call id) to a limits stream, and the call's ack once
// the result is stored. No partner is called. It reports calls/s per
// scenario, the median and spread of several rounds, and each scenario's
// ratio to R3 with one stream measured in the same round: on a small shared
// machine the absolute rates say little, the ratios more.
//
//	go run ./internal/scalebench                    # all scenarios, 3 rounds
//	go run ./internal/scalebench -rounds 5 -calls 20000
//	go run ./internal/scalebench -only R3,R3-always -dedupe-ids 0
//	go run ./internal/scalebench -variants all -rounds 5 -calls 20000
//
// -variants runs, instead of the scenarios, variants of the per-call
// pattern (variants.go: without a dedupe, a core result, AckSync, a pull
// per call, KV state, ...) against the pattern itself, on one server (and
// with -variant-servers r1,r3 on three), reporting calls/s and the
// servers' CPU per call (docs/BENCHMARKS.md, issue 16 item 3).
//
// docs/SCALING.md reports its figures. The nats-server binary is the one
// go.mod requires, built once into the user's cache by internal/bench
// (MTLSRELAY_NATS_SERVER_BIN names another).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

// scenario is one measured configuration.
type scenario struct {
	name       string
	cluster    string // "r1", "r3" or "r3-always": which servers it runs on
	partitions int
}

// scenarios in the order each round runs them; "R3" is the reference.
var scenarioList = []scenario{
	{name: "R3", cluster: "r3", partitions: 1},
	{name: "R1", cluster: "r1", partitions: 1},
	{name: "R3-P2", cluster: "r3", partitions: 2},
	{name: "R3-P4", cluster: "r3", partitions: 4},
	{name: "R3-always", cluster: "r3-always", partitions: 1},
}

// options are the command's flags.
type options struct {
	rounds      int
	only        string
	dir         string
	dedupeIDs   int
	dedupeWin   time.Duration
	spec        Spec
	noSpread    bool
	showLeaders bool
	// variants, when set, runs the pattern's variants instead of the
	// scenarios, on the clusters variantServers names.
	variants       string
	variantServers string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every scenario once")
	flag.StringVar(&o.only, "only", "", "comma-separated scenarios to run (R1,R3,R3-P2,R3-P4,R3-always); default all")
	flag.StringVar(&o.dir, "dir", "", "where the servers keep their stores (default a temporary folder on the system disk, removed afterwards)")
	flag.IntVar(&o.dedupeIDs, "dedupe-ids", 200000, "unique Nats-Msg-Ids for the dedupe memory measurement (0 skips it)")
	flag.DurationVar(&o.dedupeWin, "dedupe-window", time.Hour, "duplicate window of the dedupe memory measurement's stream")
	flag.IntVar(&o.spec.Calls, "calls", 20000, "calls per run")
	flag.IntVar(&o.spec.Connections, "connections", 64, "distinct connection names")
	flag.IntVar(&o.spec.Payload, "payload", 256, "bytes of each call's and each result's body")
	flag.IntVar(&o.spec.Window, "window", 256, "async publishes awaiting a PubAck, per flow and per worker")
	flag.IntVar(&o.spec.Workers, "workers", 8, "pull loops in all, spread over the partitions (at least one each)")
	flag.IntVar(&o.spec.Batch, "batch", 64, "calls per Fetch")
	flag.BoolVar(&o.noSpread, "no-spread", false, "leave the Raft leaders where the servers put them")
	flag.BoolVar(&o.showLeaders, "leaders", true, "print where the Raft leaders were")
	flag.StringVar(&o.variants, "variants", "", "run variants of the per-call pattern instead of the scenarios: all, or comma-separated names (full is always run, as the reference)")
	flag.StringVar(&o.variantServers, "variant-servers", "r1", "clusters the variants run on: r1, r3 or r1,r3")
	flag.Parse()
	o.spec.Spread = !o.noSpread

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runAll(ctx, os.Stdout, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

// runAll starts the servers the chosen scenarios need, runs the rounds,
// prints the report, measures dedupe memory and stops every server.
func runAll(ctx context.Context, w io.Writer, o options) (err error) {
	var variants []Variant
	if o.variants != "" {
		if variants, err = variantsByName(o.variants); err != nil {
			return err
		}
	}
	chosen := scenarioList
	if o.only != "" {
		chosen = nil
		for _, s := range scenarioList {
			if slices.Contains(strings.Split(o.only, ","), s.name) {
				chosen = append(chosen, s)
			}
		}
		if len(chosen) == 0 {
			return fmt.Errorf("-only %q names no scenario", o.only)
		}
	}
	bin, err := bench.NATSServerTool().Build(func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	})
	if err != nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		// Not os.TempDir's tmpfs, where there may be one: fsync must reach a disk.
		home, _ := os.UserCacheDir()
		if dir, err = os.MkdirTemp(home, "mtlsrelay-scalebench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(w, "# scalebench: %s, nats-server %s, %d CPUs\n", time.Now().UTC().Format(time.RFC3339), bench.NATSServerVersion, numCPU())
	fmt.Fprintf(w, "# command: scalebench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "# per run: %d calls, %d connections, %d B bodies, window %d, %d pull loops in all, batch %d, leaders spread %v\n",
		o.spec.Calls, o.spec.Connections, o.spec.Payload, o.spec.Window, o.spec.Workers, o.spec.Batch, o.spec.Spread)
	if variants != nil {
		return runVariants(ctx, w, bin, dir, o, variants)
	}

	clusters := map[string]*cluster{}
	defer func() {
		for _, c := range clusters {
			c.stop()
		}
	}()
	for _, s := range chosen {
		if clusters[s.cluster] != nil {
			continue
		}
		n, sync := 3, "2m"
		switch s.cluster {
		case "r1":
			n = 1
		case "r3-always":
			sync = "always"
		}
		c, err := startCluster(ctx, bin, filepath.Join(dir, s.cluster), n, sync)
		if err != nil {
			return fmt.Errorf("start %s: %w", s.cluster, err)
		}
		clusters[s.cluster] = c
	}

	rates := map[string][]float64{}
	ratios := map[string][]float64{}
	lastLeaders := map[string][]Leader{}
	for r := range o.rounds {
		round := map[string]float64{}
		for _, s := range chosen {
			c := clusters[s.cluster]
			spec := o.spec
			spec.Tag = fmt.Sprintf("%s_%d", strings.ReplaceAll(s.name, "-", ""), r)
			spec.Partitions = s.partitions
			replicas := len(c.servers)
			out, err := run(ctx, c.urls(), c.names(), replicas, spec)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, s.name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-10s %8.0f calls/s (%s, %d results stored, leaders %s)\n",
				r+1, s.name, out.CallsPerSec, out.Elapsed.Round(time.Millisecond), out.Stored, leaderSummary(out.Leaders))
			round[s.name] = out.CallsPerSec
			rates[s.name] = append(rates[s.name], out.CallsPerSec)
			lastLeaders[s.name] = out.Leaders
		}
		if ref, ok := round["R3"]; ok {
			for name, v := range round {
				ratios[name] = append(ratios[name], v/ref)
			}
		}
	}

	fmt.Fprintf(w, "\n| scenario | servers | sync_interval | streams (calls+results) | calls/s per round | median calls/s | spread (min-max / median) | ratio to R3 (median of per-round ratios) |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|\n")
	for _, s := range chosen {
		c := clusters[s.cluster]
		var each []string
		for _, v := range rates[s.name] {
			each = append(each, fmt.Sprintf("%.0f", v))
		}
		med, lo, hi := stats(rates[s.name])
		ratio := "-"
		if rs := ratios[s.name]; len(rs) > 0 {
			rm, rlo, rhi := stats(rs)
			ratio = fmt.Sprintf("%.2f (%.2f-%.2f)", rm, rlo, rhi)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %d+%d | %s | %.0f | %.0f%% | %s |\n", s.name, len(c.servers), c.sync,
			s.partitions, s.partitions, strings.Join(each, ", "), med, 100*(hi-lo)/med, ratio)
	}
	if o.showLeaders {
		fmt.Fprintf(w, "\nRaft leaders in the last round (stream/consumer: server):\n")
		for _, s := range chosen {
			fmt.Fprintf(w, "- %s: %s\n", s.name, leaderSummary(lastLeaders[s.name]))
		}
	}
	for name, c := range clusters {
		delete(clusters, name)
		c.stop()
	}

	if o.dedupeIDs > 0 {
		if err := measureDedupe(ctx, w, bin, filepath.Join(dir, "dedupe"), o.dedupeIDs, o.dedupeWin); err != nil {
			return fmt.Errorf("dedupe memory: %w", err)
		}
	}
	return nil
}

// leaderSummary lists leaders as CALLS_0=n1 CALLS_0/workers=n1 ...
func leaderSummary(ls []Leader) string {
	var parts []string
	for _, l := range ls {
		name := l.Stream // SB_<tag>_CALLS_<p>: keep CALLS_<p>
		if i := max(strings.Index(name, "_CALLS_"), strings.Index(name, "_RESULTS_")); i >= 0 {
			name = name[i+1:]
		}
		if l.Consumer != "" {
			name += "/" + l.Consumer
		}
		srv := l.Server
		if srv == "" {
			srv = "n1" // a single server reports no Raft leader for an R1 consumer
		}
		parts = append(parts, name+"="+srv)
	}
	return strings.Join(parts, " ")
}

// stats returns the median, min and max of v.
func stats(v []float64) (med, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0, 0, 0
	}
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}
