package pubwindow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// A window on an in-process NATS server with one stream on "kept.>".
func startWindow(t *testing.T, size int, timeout time.Duration) (*pubwindow.Window, jetstream.Stream) {
	t.Helper()
	nc, js := testutil.StartJetStream(t)
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	w, err := pubwindow.New(nc, size, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return w, s
}

// Each message's done runs once: with nil once the stream acknowledged it,
// with an error when no stream captures its subject. "No responders" is an
// error, never an acknowledgement.
func TestWindowReportsEachMessageOnce(t *testing.T) {
	w, s := startWindow(t, 8, 2*time.Second)
	const n = 50
	results := make(chan error, 2*n)
	for i := range n {
		subject := fmt.Sprintf("kept.%d", i)
		if i%5 == 4 {
			subject = fmt.Sprintf("nowhere.%d", i) // no stream captures it
		}
		msg := nats.NewMsg(subject)
		msg.Data = []byte("x")
		w.Publish(msg, func(err error) { results <- err })
	}
	acked, failed := 0, 0
	for range n {
		select {
		case err := <-results:
			if err == nil {
				acked++
			} else {
				failed++
				if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
					t.Errorf("a message no stream captures failed with %v", err)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d messages reported", acked+failed, n)
		}
	}
	select {
	case err := <-results:
		t.Fatalf("a message was reported twice (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if acked != 40 || failed != 10 || info.State.Msgs != 40 {
		t.Errorf("acked %d, failed %d, stored %d; want 40, 10, 40", acked, failed, info.State.Msgs)
	}
}
