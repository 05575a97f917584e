// Package pubwindow publishes messages to JetStream without waiting for
// each ack, and runs a function per message once its ack, or its failure,
// is in. The worker publishes its results through it, and the bench's
// queue floor, which stands in for the worker, does the same.
package pubwindow

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Window holds the messages that await JetStream's ack: at most size at
// once (a publish into a full window waits up to the timeout). Acks come
// back on one subscription, handled by one goroutine, so done functions
// must not block.
type Window struct {
	js      jetstream.JetStream
	timeout time.Duration

	mu      sync.Mutex
	pending map[*nats.Msg]func(error)
}

// New returns a window of size messages on nc. timeout bounds the wait for
// one ack, and a publish's wait for room.
func New(nc *nats.Conn, size int, timeout time.Duration) (*Window, error) {
	w := &Window{timeout: timeout, pending: make(map[*nats.Msg]func(error), size)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(size),
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			w.settle(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			w.settle(m, err)
		}),
	)
	if err != nil {
		return nil, err
	}
	w.js = js
	return w, nil
}

// Publish sends msg and arranges for done to run once, with nil when
// JetStream acknowledged it or the error that kept it from doing so. msg
// must not be changed or reused until then.
func (w *Window) Publish(msg *nats.Msg, done func(error)) {
	w.mu.Lock()
	w.pending[msg] = done
	w.mu.Unlock()
	if _, err := w.js.PublishMsgAsync(msg, jetstream.WithStallWait(w.timeout)); err != nil {
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			err = ErrFull
		}
		w.settle(msg, err)
	}
}

// settle runs the done function of msg, if it has not run yet.
func (w *Window) settle(msg *nats.Msg, err error) {
	w.mu.Lock()
	done := w.pending[msg]
	delete(w.pending, msg)
	w.mu.Unlock()
	if done != nil {
		done(err)
	}
}

// ErrFull is reported when a message waited the timeout for room: JetStream
// acknowledges messages more slowly than they are published.
var ErrFull = errors.New("messages await JetStream's ack faster than it arrives")
