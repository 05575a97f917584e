package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/mtlsrelay/mtlsrelay/internal/bench"
)

// TestPartitionMatchesServerMapping checks that the bench spreads
// connections as nats-server's subject mapping partition(P, 1) would: a
// deployment that partitions with a server-side mapping gets the partitions
// the bench measured.
func TestPartitionMatchesServerMapping(t *testing.T) {
	for _, p := range []int{2, 4, 7} {
		tr, err := natsserver.NewSubjectTransform("calls.*", fmt.Sprintf("calls.{{partition(%d,1)}}.{{wildcard(1)}}", p))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			conn := "conn-" + strconv.Itoa(i)
			got, err := tr.Match("calls." + conn)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("calls.%d.%s", partitionOf(conn, p), conn); got != want {
				t.Fatalf("P=%d: the server maps calls.%s to %s, the bench to %s", p, conn, got, want)
			}
		}
	}
}

// TestRunCountsEveryCallOnce runs the bench's workload, small, on a real
// 3-node cluster with R3 streams, one stream and two partitions, with
// every 7th call enqueued twice and its result published twice: each call
// must be acknowledged, leave the work queue and have exactly one stored
// result, in its connection's partition, and the duplicates must be
// counted as such. Nothing here is timed.
func TestRunCountsEveryCallOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts three nats-server processes")
	}
	bin := bench.NATSServerTool().Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := startCluster(ctx, bin, t.TempDir(), 3, "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)

	for _, p := range []int{1, 2} {
		t.Run(fmt.Sprintf("P=%d", p), func(t *testing.T) {
			spec := Spec{
				Tag: fmt.Sprintf("test%d", p), Partitions: p, Calls: 300, Connections: 16,
				Payload: 64, Window: 32, Workers: 4, Batch: 16, DupEvery: 7, CheckEach: true, Spread: true,
			}
			out, err := run(ctx, c.urls(), c.names(), 3, spec)
			if err != nil {
				t.Fatal(err)
			}
			wantDups := int64((spec.Calls + spec.DupEvery - 1) / spec.DupEvery)
			if out.Stored != uint64(spec.Calls) {
				t.Errorf("%d results stored, want %d", out.Stored, spec.Calls)
			}
			if out.CallDuplicates != wantDups || out.ResultDuplicates != wantDups {
				t.Errorf("duplicates: %d calls, %d results, want %d each", out.CallDuplicates, out.ResultDuplicates, wantDups)
			}
			if out.CallsPerSec <= 0 {
				t.Errorf("calls/s %v", out.CallsPerSec)
			}
			// The leaders are where spreadLeaders put them.
			names := c.names()
			for _, l := range out.Leaders {
				var part int
				_, _ = fmt.Sscanf(l.Stream[len(l.Stream)-1:], "%d", &part)
				want := names[part%3]
				if l.Stream == spec.resultsStream(part) {
					want = names[(part+1)%3]
				}
				if l.Server != want {
					t.Errorf("leader of %s %s is %s, want %s", l.Stream, l.Consumer, l.Server, want)
				}
			}
			t.Logf("%d calls in %s, leaders %s", spec.Calls, out.Elapsed.Round(time.Millisecond), leaderSummary(out.Leaders))
		})
	}
}

// TestVariantsCountEveryCall runs each variant of the per-call pattern,
// small, on one server: every call must be acknowledged and leave the work
// queue, and the results stream must hold one result per call (none for
// core-result, whose results no stream keeps). The servers' CPU must be
// readable on Linux. Nothing here is timed.
func TestVariantsCountEveryCall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a nats-server process")
	}
	bin := bench.NATSServerTool().Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := startCluster(ctx, bin, t.TempDir(), 1, "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	all, err := variantsByName("all")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := variantsByName("full,nope"); err == nil {
		t.Error("variantsByName accepted an unknown variant")
	}
	for _, v := range all {
		t.Run(v.Name, func(t *testing.T) {
			spec := Spec{
				Tag: strings.ReplaceAll(v.Name, "-", ""), Partitions: 1, Calls: 300, Connections: 16,
				Payload: 64, Window: 32, Workers: 4, Batch: 16, CheckEach: true, Variant: v, PIDs: []int{c.servers[0].pid()},
			}
			if v.Batch > 0 {
				spec.Batch = v.Batch
			}
			out, err := run(ctx, c.urls(), c.names(), 1, spec)
			if err != nil {
				t.Fatal(err)
			}
			if want := v.storedWant(spec.Calls); out.Stored != want {
				t.Errorf("%d results stored, want %d", out.Stored, want)
			}
			if out.CallDuplicates != 0 || out.ResultDuplicates != 0 {
				t.Errorf("duplicates: %d calls, %d results, want none", out.CallDuplicates, out.ResultDuplicates)
			}
			if runtime.GOOS == "linux" && !out.ServerCPUOK {
				t.Error("the server's CPU was not read")
			}
		})
	}
}
