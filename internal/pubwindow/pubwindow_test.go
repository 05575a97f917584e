package pubwindow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/embedded"
	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
	"github.com/mtlsrelay/mtlsrelay/internal/testutil"
)

// A window on an in-process NATS server with one stream on "kept.>".
func startWindow(t *testing.T, size int, timeout time.Duration) (*pubwindow.Window, jetstream.Stream) {
	t.Helper()
	nc, s := startStream(t)
	w, err := pubwindow.New(nc, size, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return w, s
}

// stored is how many messages s holds.
func stored(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// An in-process NATS server with one memory stream on "kept.>".
func startStream(t testing.TB) (*nats.Conn, jetstream.Stream) {
	t.Helper()
	nc, js := testutil.StartJetStream(t)
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return nc, s
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
				if !errors.Is(err, jetstream.ErrNoStreamResponse) {
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

// subscribeSilent subscribes nc to "silent.x" and never answers: a
// publish there finds a responder, so no "no responders", and no ack.
func subscribeSilent(t *testing.T, nc *nats.Conn) {
	t.Helper()
	if _, err := nc.SubscribeSync("silent.x"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// collect returns a done function and a way to wait for its one error.
func collect(t *testing.T) (func(error), func(within time.Duration) error) {
	t.Helper()
	ch := make(chan error, 2)
	return func(err error) { ch <- err }, func(within time.Duration) error {
		t.Helper()
		select {
		case err := <-ch:
			select {
			case again := <-ch:
				t.Fatalf("done ran twice: %v, then %v", err, again)
			case <-time.After(50 * time.Millisecond):
			}
			return err
		case <-time.After(within):
			t.Fatalf("done did not run within %s", within)
			return nil
		}
	}
}

// A subscriber that takes the publish and never answers (not a stream):
// the message fails with jetstream.ErrAsyncPublishTimeout once the timeout
// passed, and the window goes on acknowledging the next ones.
func TestWindowTimesOut(t *testing.T) {
	w, s := startWindow(t, 8, 300*time.Millisecond)
	nc := w.Conn()
	subscribeSilent(t, nc)
	done, wait := collect(t)
	start := time.Now()
	w.Publish(&nats.Msg{Subject: "silent.x", Data: []byte("x")}, done)
	// A message published after it, into the same window, is acknowledged
	// on its own.
	done2, wait2 := collect(t)
	w.Publish(&nats.Msg{Subject: "kept.after", Data: []byte("y")}, done2)
	if err := wait2(5 * time.Second); err != nil {
		t.Fatalf("kept.after: %v", err)
	}
	err := wait(5 * time.Second)
	if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("silent.x: %v, want %v", err, jetstream.ErrAsyncPublishTimeout)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("timed out after %s, before the timeout", took)
	}
	if n := stored(t, s); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

// The stream's refusal comes back as its *jetstream.APIError, with the
// code the worker tells apart (a message too large for the stream).
func TestWindowReportsRefusal(t *testing.T) {
	w, _ := startWindow(t, 8, 2*time.Second)
	js, err := jetstream.New(w.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(context.Background(), jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}, Storage: jetstream.MemoryStorage, MaxMsgSize: 16}); err != nil {
		t.Fatal(err)
	}
	done, wait := collect(t)
	w.Publish(&nats.Msg{Subject: "kept.big", Data: make([]byte, 64)}, done)
	var apiErr *jetstream.APIError
	if err := wait(5 * time.Second); !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Fatalf("a message over the stream's max_msg_size: %v, want the stream's APIError %d", err, jetstream.JSErrCodeStreamMessageExceedsMaximum)
	}
}

// A message the stream stored before (same Nats-Msg-Id) is acknowledged
// again, and stored once.
func TestWindowAcknowledgesDuplicate(t *testing.T) {
	w, s := startWindow(t, 8, 2*time.Second)
	for range 2 {
		msg := nats.NewMsg("kept.dup")
		msg.Header.Set(jetstream.MsgIDHeader, "once")
		msg.Data = []byte("x")
		done, wait := collect(t)
		w.Publish(msg, done)
		if err := wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := stored(t, s); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

// A full window makes the next publish wait the timeout for room, then
// fail with ErrFull; a message too large for NATS fails at once with the
// connection's error, and gives its room back.
func TestWindowFullAndTooLarge(t *testing.T) {
	w, _ := startWindow(t, 1, time.Second)
	// The room wait ends long before the first message's ack timeout.
	pubwindow.SetRoomWait(w, 200*time.Millisecond)
	nc := w.Conn()
	subscribeSilent(t, nc)
	done, wait := collect(t)
	w.Publish(&nats.Msg{Subject: "silent.x", Data: []byte("x")}, done)
	done2, wait2 := collect(t)
	w.Publish(&nats.Msg{Subject: "kept.x", Data: []byte("x")}, done2)
	if err := wait2(5 * time.Second); !errors.Is(err, pubwindow.ErrFull) {
		t.Fatalf("a publish into a full window: %v, want ErrFull", err)
	}
	if err := wait(10 * time.Second); !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("silent.x: %v", err)
	}
	done3, wait3 := collect(t)
	w.Publish(&nats.Msg{Subject: "kept.big", Data: make([]byte, nc.MaxPayload()+1)}, done3)
	if err := wait3(time.Second); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("a message over max_payload: %v, want %v", err, nats.ErrMaxPayload)
	}
	done4, wait4 := collect(t)
	w.Publish(&nats.Msg{Subject: "kept.x", Data: []byte("x")}, done4)
	if err := wait4(5 * time.Second); err != nil {
		t.Fatalf("the window did not get its room back: %v", err)
	}
}

// When the connection drops, the messages awaiting their ack fail with
// nats.ErrDisconnected (their acks would go to the old connection); when it
// closes, with nats.ErrConnectionClosed.
func TestWindowConnectionLost(t *testing.T) {
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := pubwindow.New(nc, 8, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	subscribeSilent(t, nc)
	done, wait := collect(t)
	w.Publish(&nats.Msg{Subject: "silent.x", Data: []byte("x")}, done)
	srv.Shutdown()
	if err := wait(10 * time.Second); !errors.Is(err, nats.ErrDisconnected) {
		t.Fatalf("a message awaiting its ack when the connection dropped: %v, want %v", err, nats.ErrDisconnected)
	}
	done2, wait2 := collect(t)
	w.Publish(&nats.Msg{Subject: "silent.x", Data: []byte("x")}, done2)
	nc.Close()
	if err := wait2(10 * time.Second); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("a message awaiting its ack when the connection closed: %v, want %v", err, nats.ErrConnectionClosed)
	}
}

// A publish that NATS answers with "no responders", as it does while a
// stream elects a leader, is sent again: a stream that captures the
// subject a moment later stores it.
func TestWindowRetriesNoResponders(t *testing.T) {
	w, _ := startWindow(t, 8, 5*time.Second)
	done, wait := collect(t)
	w.Publish(&nats.Msg{Subject: "late.x", Data: []byte("x")}, done)
	time.Sleep(100 * time.Millisecond)
	js, err := jetstream.New(w.Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(5 * time.Second); err != nil {
		t.Fatalf("a publish whose stream came up 100 ms later: %v", err)
	}
	if n := stored(t, s); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}
