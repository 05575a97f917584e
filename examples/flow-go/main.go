// Command flow-go is an example flow: it enqueues calls with the jobs client
// and reads their results asynchronously from stream MTLSRELAY_RESULTS, the
// way a flow that must survive its own restart would.
//
// Each run gets a run id; every call's reply_to is
// <prefix>.results.<run>.<call id>, so one filtered consumer of
// MTLSRELAY_RESULTS sees exactly this run's results, whenever they arrive,
// even those published before it subscribed.
//
//	go run ./examples/flow-go -nats nats://127.0.0.1:4222 -connection partner-api -path echo -count 10
//
// It exits 0 when every call got a result (whether ok or not), 1 otherwise.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
)

// options are the flow's flags.
type options struct {
	// NATSURL is the NATS cluster, comma-separated.
	NATSURL string
	// Connection names the mtlsrelay connection to call.
	Connection string
	// Path is each call's path under the connection's base URL.
	Path string
	// Count is how many calls to enqueue.
	Count int
	// Prefix is the subject prefix; default "mtlsrelay".
	Prefix string
	// Timeout bounds the wait for all results.
	Timeout time.Duration
	// JSON prints every result as one JSON line instead of a table row.
	JSON bool
}

func main() {
	var o options
	flag.StringVar(&o.NATSURL, "nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL(s), comma-separated ($NATS_URL)")
	flag.StringVar(&o.Connection, "connection", "partner-api", "mtlsrelay connection to call")
	flag.StringVar(&o.Path, "path", "echo", "path of each call under the connection's base URL")
	flag.IntVar(&o.Count, "count", 5, "number of calls")
	flag.StringVar(&o.Prefix, "prefix", jobs.DefaultPrefix, "subject prefix")
	flag.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for all results")
	flag.BoolVar(&o.JSON, "json", false, "print each result as a JSON line")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flow-go:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// run enqueues o.Count calls and prints their results as they arrive. It
// returns an error when a call could not be enqueued or some result did not
// arrive within o.Timeout.
func run(ctx context.Context, o options, out io.Writer) error {
	if o.Count < 1 {
		return errors.New("count must be at least 1")
	}
	nc, err := nats.Connect(o.NATSURL, nats.Name("mtlsrelay example flow-go"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", o.NATSURL, err)
	}
	defer nc.Close()
	subj := jobs.Subjects{Prefix: o.Prefix}
	relay, err := client.New(nc, client.WithSubjects(subj))
	if err != nil {
		return err
	}

	runID := "flow-" + randomHex(6)
	// subj.Result(x) is <prefix>.results.x, so this run's results live
	// under <prefix>.results.<run>.
	runResults := subj.Result(runID)

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	var (
		mu      sync.Mutex
		pending = map[string]bool{}
		results []*jobs.Result
		allIn   = make(chan struct{})
	)
	for i := 1; i <= o.Count; i++ {
		pending[fmt.Sprintf("%s-%d", runID, i)] = true
	}
	// Results are consumed from the stream, not from a live subscription:
	// the ordered consumer starts at the beginning of MTLSRELAY_RESULTS, so
	// a result stored before this point, or while the flow was away, is
	// still delivered. A result seen twice (a redelivery) is counted once.
	stopConsuming, err := relay.ConsumeResults(ctx, client.ResultsOptions{Filter: runResults + ".>"}, func(r *jobs.Result) error {
		mu.Lock()
		defer mu.Unlock()
		if !pending[r.ID] {
			return nil
		}
		delete(pending, r.ID)
		results = append(results, r)
		printResult(out, r, o.JSON)
		if len(pending) == 0 {
			close(allIn)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("consume %s: %w", jobs.StreamResults, err)
	}
	defer stopConsuming()

	if !o.JSON {
		fmt.Fprintf(out, "run %s: enqueuing %d calls to %s, results from %s on %s.>\n", runID, o.Count, subj.Calls(o.Connection), jobs.StreamResults, runResults)
	}
	for i := 1; i <= o.Count; i++ {
		id := fmt.Sprintf("%s-%d", runID, i)
		call := &jobs.Call{
			ID:         id,
			Connection: o.Connection,
			Path:       o.Path,
			Query:      map[string][]string{"n": {strconv.Itoa(i)}},
			ReplyTo:    runResults + "." + id,
			Metadata:   map[string]string{"flow": "flow-go", "run": runID, "n": strconv.Itoa(i)},
		}
		if _, err := relay.Enqueue(ctx, call); err != nil {
			return fmt.Errorf("enqueue %s: %w", id, err)
		}
	}

	select {
	case <-allIn:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	okCount := 0
	for _, r := range results {
		if r.OK {
			okCount++
		}
	}
	if !o.JSON {
		fmt.Fprintf(out, "%d/%d results, %d ok\n", len(results), o.Count, okCount)
	}
	if len(pending) > 0 {
		missing := make([]string, 0, len(pending))
		for id := range pending {
			missing = append(missing, id)
		}
		sort.Strings(missing)
		return fmt.Errorf("%d of %d results missing after %s (is a worker running and serving connection %q?): %v",
			len(missing), o.Count, o.Timeout, o.Connection, missing)
	}
	return nil
}

func printResult(out io.Writer, r *jobs.Result, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintf(out, "%s\n", b)
		return
	}
	outcome := "ok"
	switch {
	case r.Error != nil:
		outcome = string(r.Error.Code) + ": " + r.Error.Message
	case r.SOAPFault != nil:
		outcome = "soap fault " + r.SOAPFault.Code
	case !r.OK:
		outcome = "not ok"
	}
	fmt.Fprintf(out, "%-24s status=%d attempt=%d worker=%s total=%.1fms %s\n", r.ID, r.Status, r.Attempt, r.Worker, r.Timing.TotalMS, outcome)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
