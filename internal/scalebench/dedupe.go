package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// measureDedupe estimates what one Nats-Msg-Id costs a server while it is
// inside the duplicate window: the RSS growth of a fresh single server
// after n publishes with unique 36-byte ids, minus the growth after n
// publishes without ids. The stream keeps one message (MaxMsgs 1), so the
// messages themselves do not accumulate and the difference is the dedupe
// map's: the server keeps an id until the window has passed, whatever
// happened to its message. RSS includes heap the Go runtime has not handed
// back, so this is an estimate; it runs twice to show its spread.
func measureDedupe(ctx context.Context, w io.Writer, bin, dir string, n int, window time.Duration) error {
	fmt.Fprintf(w, "\nDedupe memory (single server, %d publishes, duplicate window %s, 36-byte ids, RSS after minus before):\n", n, window)
	var per []float64
	for r := range 2 {
		withIDs, err := rssGrowth(ctx, bin, filepath.Join(dir, fmt.Sprintf("ids-%d", r)), n, window, true)
		if err != nil {
			return err
		}
		without, err := rssGrowth(ctx, bin, filepath.Join(dir, fmt.Sprintf("noids-%d", r)), n, window, false)
		if err != nil {
			return err
		}
		b := float64(withIDs-without) / float64(n)
		per = append(per, b)
		fmt.Fprintf(w, "- run %d: +%.1f MiB with ids, +%.1f MiB without: %.0f B per id\n", r+1,
			float64(withIDs)/(1<<20), float64(without)/(1<<20), b)
	}
	med, lo, hi := stats(per)
	fmt.Fprintf(w, "- estimate: %.0f B per id in the window (runs %.0f-%.0f)\n", med, lo, hi)
	return nil
}

// rssGrowth starts a server, publishes n messages (with unique ids when
// ids) to a one-message stream with the given duplicate window, and
// returns the server's RSS growth, read 3 s after the last PubAck.
func rssGrowth(ctx context.Context, bin, dir string, n int, window time.Duration, ids bool) (int64, error) {
	c, err := startCluster(ctx, bin, dir, 1, "2m")
	if err != nil {
		return 0, err
	}
	defer c.stop()
	nc, err := nats.Connect(c.servers[0].url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "DD", Subjects: []string{"dd"}, Storage: jetstream.FileStorage,
		MaxMsgs: 1, Discard: jetstream.DiscardOld, Duplicates: window,
	}); err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	before, err := rssBytes(c.servers[0].pid())
	if err != nil {
		return 0, err
	}
	body := []byte(strings.Repeat("d", 64))
	for i := range n {
		msg := nats.NewMsg("dd")
		msg.Data = body
		if ids {
			// The shape of a call id: a UUID's 36 characters.
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
		}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("%d publishes not acknowledged within 2 min", js.PublishAsyncPending())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	time.Sleep(3 * time.Second)
	after, err := rssBytes(c.servers[0].pid())
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

// numCPU is the CPUs this process may use.
func numCPU() int { return runtime.NumCPU() }
