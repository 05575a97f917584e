package pubwindow_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
)

// asyncWindow is the window as it was before it spoke the publish protocol
// itself: jetstream.PublishMsgAsync, a timer and an encoding/json decode per
// message. BenchmarkPublish measures the two side by side.
type asyncWindow struct {
	js      jetstream.JetStream
	mu      sync.Mutex
	pending map[*nats.Msg]func(error)
}

func newAsyncWindow(b *testing.B, nc *nats.Conn, size int) *asyncWindow {
	w := &asyncWindow{pending: map[*nats.Msg]func(error){}}
	settle := func(m *nats.Msg, err error) {
		w.mu.Lock()
		done := w.pending[m]
		delete(w.pending, m)
		w.mu.Unlock()
		if done != nil {
			done(err)
		}
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(size),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) { settle(m, nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { settle(m, err) }),
	)
	if err != nil {
		b.Fatal(err)
	}
	w.js = js
	return w
}

func (w *asyncWindow) Publish(msg *nats.Msg, done func(error)) {
	w.mu.Lock()
	w.pending[msg] = done
	w.mu.Unlock()
	if _, err := w.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second)); err != nil {
		done(err)
	}
}

type publisher interface {
	Publish(msg *nats.Msg, done func(error))
}

// BenchmarkPublish publishes small results into a memory stream, 64 at
// most awaiting their acks, through the window and through
// jetstream.PublishMsgAsync (the baseline). The NATS server runs in the
// test's process, so ns/op is the client's and the server's together;
// allocs/op is the client's and the server's, the server's being the same
// for both.
func BenchmarkPublish(b *testing.B) {
	for _, tc := range []struct {
		name string
		make func(nc *nats.Conn) publisher
	}{
		{"window", func(nc *nats.Conn) publisher {
			w, err := pubwindow.New(nc, 64, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			return w
		}},
		{"jetstream-async", func(nc *nats.Conn) publisher { return newAsyncWindow(b, nc, 64) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			nc, _ := startStream(b)
			w := tc.make(nc)
			data := make([]byte, 400)
			room := make(chan struct{}, 64)
			var wg sync.WaitGroup
			var failed sync.Once
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				room <- struct{}{}
				wg.Add(1)
				msg := &nats.Msg{Subject: "kept.r", Data: data}
				w.Publish(msg, func(err error) {
					if err != nil {
						failed.Do(func() { b.Error(err) })
					}
					<-room
					wg.Done()
				})
			}
			wg.Wait()
		})
	}
}
