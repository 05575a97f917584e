// Package pubwindow publishes messages to JetStream without waiting for
// each ack, and runs a function per message once its ack, or its failure,
// is in. The worker publishes its results through it, and the bench's
// queue floor, which stands in for the worker, does the same.
//
// It speaks JetStream's publish protocol itself rather than through
// jetstream.PublishMsgAsync: a publish is a core NATS message with a reply
// subject, and the stream's answer to that subject is the PubAck. Doing it
// here costs a map entry per message and one timer for the window, where
// the library arms a timer per message and decodes every PubAck with
// encoding/json: BenchmarkPublish measures 14 fewer allocations and about
// a fifth less time per message, client and server together.
package pubwindow

import (
	"errors"
	"strconv"
	"sync"
	"time"

	json "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Window holds the messages that await JetStream's ack: at most size at
// once (a publish into a full window waits up to the timeout for room).
//
// A message's done runs once: with nil when a stream stored it (or had
// stored it before: a duplicate), or with the error that kept it from
// that. It runs on the goroutine of the acks' subscription, of the
// window's timer (timeouts) or of its connection watch (a drop), or on
// Publish's caller before Publish returns (ErrFull, a publish that
// failed); two may run at once. So done functions must not block, nor
// take a lock their caller may hold while publishing.
//
// The errors are jetstream.ErrNoStreamResponse (no stream captures the
// subject: NATS answered "no responders" to the publish and to
// noResponderRetries more, as a stream between leaders does for a
// moment), *jetstream.APIError (the stream refused it),
// jetstream.ErrAsyncPublishTimeout (no answer within the timeout),
// nats.ErrDisconnected (the connection dropped while it waited: its ack,
// if any, went to the old connection), nats.ErrConnectionClosed, ErrFull,
// jetstream.ErrInvalidJSAck, or what nats.Conn.PublishMsg returned
// (nats.ErrMaxPayload).
type Window struct {
	nc      *nats.Conn
	prefix  string // reply subjects are prefix + the message's id
	timeout time.Duration
	// roomWait bounds a publish's wait for room: the timeout, shorter
	// only in tests.
	roomWait time.Duration
	room     chan struct{} // a token per message awaiting its ack

	mu      sync.Mutex
	next    uint64
	pending map[uint64]awaiting
	// order holds the ids in the order they were given, which is the
	// order of their deadlines, from head on; settled ids are dropped
	// from the front as they settle.
	order []uint64
	head  int
	// timer runs sweep while armed: at a deadline of a message that was
	// the oldest waiting when it was set, so never after the oldest's.
	timer *time.Timer
	armed bool
}

// awaiting is a message that waits for its ack.
type awaiting struct {
	msg      *nats.Msg // as published, with the window's reply subject
	done     func(error)
	deadline time.Time
	retries  int // "no responders" answers so far
}

const (
	// noResponderRetries is how many times a publish that NATS answered
	// with "no responders" is sent again, noResponderWait apart, before
	// it fails: a stream electing a leader has none for a moment.
	// jetstream.PublishMsgAsync does the same by default.
	noResponderRetries = 2
	noResponderWait    = 250 * time.Millisecond
)

// New returns a window of size messages on nc. timeout bounds the wait for
// one ack, and a publish's wait for room. The window ends with nc: once nc
// is closed every message still waiting fails with
// nats.ErrConnectionClosed.
func New(nc *nats.Conn, size int, timeout time.Duration) (*Window, error) {
	w := &Window{
		nc:       nc,
		prefix:   nc.NewInbox() + ".",
		timeout:  timeout,
		roomWait: timeout,
		room:     make(chan struct{}, max(size, 1)),
		pending:  make(map[uint64]awaiting, size),
	}
	w.timer = time.AfterFunc(time.Hour, w.sweep)
	w.timer.Stop()
	// Statuses first, so a drop that comes while subscribing is seen.
	status := nc.StatusChanged(nats.RECONNECTING, nats.CLOSED)
	if _, err := nc.Subscribe(w.prefix+"*", w.answer); err != nil {
		nc.RemoveStatusListener(status)
		return nil, err
	}
	go w.watch(status)
	return w, nil
}

// Publish sends msg and arranges for done to run once, with nil when
// JetStream acknowledged it or the error that kept it from doing so. msg's
// reply subject is not sent (the window's takes its place); msg is not
// changed, and must not be until done runs.
func (w *Window) Publish(msg *nats.Msg, done func(error)) {
	if err := w.waitForRoom(); err != nil {
		done(err)
		return
	}
	w.mu.Lock()
	w.next++
	id := w.next
	out := &nats.Msg{Subject: msg.Subject, Reply: w.prefix + strconv.FormatUint(id, 36), Header: msg.Header, Data: msg.Data}
	w.pending[id] = awaiting{msg: out, done: done, deadline: time.Now().Add(w.timeout)}
	w.order = append(w.order, id)
	if !w.armed {
		// Every later message has a later deadline: the timer, once
		// armed, rearms itself from the oldest one (sweep).
		w.armed = true
		w.timer.Reset(w.timeout)
	}
	w.mu.Unlock()
	if err := w.nc.PublishMsg(out); err != nil {
		w.settle(id, err)
	}
}

// Conn is the connection the window publishes on.
func (w *Window) Conn() *nats.Conn { return w.nc }

// waitForRoom takes a token of the window, waiting up to roomWait.
func (w *Window) waitForRoom() error {
	select {
	case w.room <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(w.roomWait)
	defer t.Stop()
	select {
	case w.room <- struct{}{}:
		return nil
	case <-t.C:
		return ErrFull
	}
}

// answer handles a stream's answer to a publish: a PubAck, an error, or
// NATS's "no responders" status when nothing captures the subject.
func (w *Window) answer(m *nats.Msg) {
	if len(m.Subject) <= len(w.prefix) {
		return
	}
	id, err := strconv.ParseUint(m.Subject[len(w.prefix):], 36, 64)
	if err != nil {
		return
	}
	err = pubAckError(m)
	if errors.Is(err, nats.ErrNoResponders) {
		if w.retryLater(id) {
			return
		}
		err = jetstream.ErrNoStreamResponse
	}
	w.settle(id, err)
}

// retryLater arranges for message id, which NATS answered with "no
// responders", to be published again after noResponderWait, keeping its
// room and deadline. It reports false when the message has had its
// retries, or is no longer waiting.
func (w *Window) retryLater(id uint64) bool {
	w.mu.Lock()
	a, ok := w.pending[id]
	retry := ok && a.retries < noResponderRetries
	if retry {
		a.retries++
		w.pending[id] = a
	}
	w.mu.Unlock()
	if !retry {
		return false
	}
	time.AfterFunc(noResponderWait, func() {
		w.mu.Lock()
		_, waiting := w.pending[id]
		w.mu.Unlock()
		if !waiting {
			return
		}
		if err := w.nc.PublishMsg(a.msg); err != nil {
			w.settle(id, err)
		}
	})
	return true
}

// pubAckError is nil when m acknowledges a stored message, else why not.
func pubAckError(m *nats.Msg) error {
	if len(m.Data) == 0 {
		if m.Header.Get("Status") == "503" {
			return nats.ErrNoResponders
		}
		return jetstream.ErrInvalidJSAck
	}
	var ack struct {
		Stream string              `json:"stream"`
		Error  *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	switch {
	case ack.Error != nil:
		return ack.Error
	case ack.Stream == "":
		return jetstream.ErrInvalidJSAck
	}
	return nil
}

// settle runs the done function of message id with err, if it has not run
// yet, and gives its room back.
func (w *Window) settle(id uint64, err error) {
	w.mu.Lock()
	a, ok := w.pending[id]
	if ok {
		delete(w.pending, id)
		w.dropSettled()
	}
	w.mu.Unlock()
	if ok {
		<-w.room
		a.done(err)
	}
}

// dropSettled advances order past the ids no longer pending, and reclaims
// the slice's front once it is most of it. w.mu is held.
func (w *Window) dropSettled() {
	for w.head < len(w.order) {
		if _, ok := w.pending[w.order[w.head]]; ok {
			break
		}
		w.head++
	}
	if w.head == len(w.order) {
		w.order, w.head = w.order[:0], 0
	} else if w.head > 1024 && w.head > len(w.order)/2 {
		w.order = append(w.order[:0], w.order[w.head:]...)
		w.head = 0
	}
}

// sweep fails the messages whose ack is overdue, oldest first, and rearms
// the window's timer for the next deadline while messages wait.
func (w *Window) sweep() {
	now := time.Now()
	var late []awaiting
	w.mu.Lock()
	for w.head < len(w.order) {
		id := w.order[w.head]
		a, ok := w.pending[id]
		if ok && a.deadline.After(now) {
			break
		}
		if ok {
			delete(w.pending, id)
			late = append(late, a)
		}
		w.head++
	}
	w.dropSettled()
	w.armed = w.head < len(w.order)
	if w.armed {
		w.timer.Reset(w.pending[w.order[w.head]].deadline.Sub(now))
	}
	w.mu.Unlock()
	for _, a := range late {
		<-w.room
		a.done(jetstream.ErrAsyncPublishTimeout)
	}
}

// watch fails every waiting message when the connection drops (the
// stream's answer, if it comes, goes to the old connection) and when it
// closes (a later publish then fails on the closed connection).
func (w *Window) watch(status chan nats.Status) {
	for s := range status {
		if s == nats.CLOSED {
			w.nc.RemoveStatusListener(status)
			break
		}
		w.failAll(nats.ErrDisconnected)
	}
	w.failAll(nats.ErrConnectionClosed)
}

// failAll runs every waiting message's done with err.
func (w *Window) failAll(err error) {
	w.mu.Lock()
	waiting := make([]awaiting, 0, len(w.pending))
	for _, a := range w.pending {
		waiting = append(waiting, a)
	}
	clear(w.pending)
	w.order, w.head = w.order[:0], 0
	w.mu.Unlock()
	for _, a := range waiting {
		<-w.room
		a.done(err)
	}
}

// ErrFull is reported when a message waited the timeout for room: JetStream
// acknowledges messages more slowly than they are published.
var ErrFull = errors.New("messages await JetStream's ack faster than it arrives")
