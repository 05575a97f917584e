package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heldCalls keeps the calls being attempted alive: every third of AckWait,
// one goroutine tells JetStream each call held longer than that is still
// being worked on (InProgress), so a long call is not redelivered to
// another worker. A call's first InProgress thus leaves at most two thirds
// of AckWait after it was taken.
type heldCalls struct {
	mu   sync.Mutex
	held map[jetstream.Msg]time.Time
}

func newHeldCalls() *heldCalls {
	return &heldCalls{held: make(map[jetstream.Msg]time.Time)}
}

func (h *heldCalls) add(msg jetstream.Msg) {
	now := time.Now()
	h.mu.Lock()
	h.held[msg] = now
	h.mu.Unlock()
}

func (h *heldCalls) remove(msg jetstream.Msg) {
	h.mu.Lock()
	delete(h.held, msg)
	h.mu.Unlock()
}

// keepAlive sends InProgress for the calls held longer than every, every
// every, until ctx ends.
func (h *heldCalls) keepAlive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			h.mu.Lock()
			for msg, since := range h.held {
				if now.Sub(since) >= every {
					due = append(due, msg)
				}
			}
			h.mu.Unlock()
			for _, msg := range due {
				_ = msg.InProgress()
			}
		}
	}
}
