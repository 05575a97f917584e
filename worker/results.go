package worker

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// resultTimeout bounds the wait for JetStream's ack of one result, and a
// publish's wait for room in a full window.
const resultTimeout = 5 * time.Second

// resultWindow publishes results to MTLSRELAY_RESULTS without waiting for
// each ack: the goroutine that made the call goes on to the next one, up to
// window results await their acks at once (a publish into a full window
// waits), and done runs for each when its ack, or its failure, arrives.
// Acks come back on one subscription, handled by one goroutine, so done
// must not block.
type resultWindow struct {
	js jetstream.JetStream

	mu      sync.Mutex
	pending map[*nats.Msg]func(error)
}

func newResultWindow(nc *nats.Conn, window int) (*resultWindow, error) {
	rw := &resultWindow{pending: make(map[*nats.Msg]func(error), window)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(resultTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			rw.settle(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			rw.settle(m, err)
		}),
	)
	if err != nil {
		return nil, err
	}
	rw.js = js
	return rw, nil
}

// publish sends msg and arranges for done to run once, with nil when
// JetStream acknowledged it or the error that kept it from doing so. msg
// must not be changed or reused until then.
func (rw *resultWindow) publish(msg *nats.Msg, done func(error)) {
	rw.mu.Lock()
	rw.pending[msg] = done
	rw.mu.Unlock()
	if _, err := rw.js.PublishMsgAsync(msg, jetstream.WithStallWait(resultTimeout)); err != nil {
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			err = errWindowFull
		}
		rw.settle(msg, err)
	}
}

// settle runs the done function of msg, if it has not run yet.
func (rw *resultWindow) settle(msg *nats.Msg, err error) {
	rw.mu.Lock()
	done := rw.pending[msg]
	delete(rw.pending, msg)
	rw.mu.Unlock()
	if done != nil {
		done(err)
	}
}

// errWindowFull is reported when results waited resultTimeout for room:
// JetStream acknowledges them more slowly than calls complete.
var errWindowFull = errors.New("results await JetStream's ack faster than it arrives")
