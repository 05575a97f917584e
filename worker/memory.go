package worker

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sync/semaphore"

	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// memoryBudget admits calls by the bytes they may hold while running
// (worker.max_memory), besides the slots that count them: a call that
// does not fit is handed back to wait in JetStream, not in the heap.
// A nil budget admits everything.
type memoryBudget struct {
	sem   *semaphore.Weighted
	total int64
	// perCall is what any call holds besides its own message: a response
	// kept inline (inline_body_max), its result's encoding, and the
	// buffers of a streamed body: the HTTP/2 receive window, the chunks
	// awaiting JetStream's ack, TLS's records.
	perCall int64
}

// streamBuffers is what a streamed body holds at most besides an inline
// one: the HTTP/2 receive window (outbound.StreamReceiveWindow), the
// Object Store writer's chunk buffer (128 KiB, internal/objput; its chunks
// awaiting an ack are in the NATS connection's buffer, not held) and a TLS
// record's buffers.
const streamBuffers = outbound.StreamReceiveWindow + 128<<10 + 64<<10

// newMemoryBudget returns a budget of total bytes, or nil for total <= 0.
func newMemoryBudget(total, inlineMax int64) *memoryBudget {
	if total <= 0 {
		return nil
	}
	return &memoryBudget{sem: semaphore.NewWeighted(total), total: total, perCall: 3*inlineMax + streamBuffers}
}

// cost is what a call whose message is msgBytes may hold: its message,
// decoded and sent (a body is copied once into the request), and perCall.
// A call larger than the whole budget costs the budget, so that it runs
// alone rather than never.
func (m *memoryBudget) cost(msgBytes int) int64 {
	return min(3*int64(msgBytes)+m.perCall, m.total)
}

// tryAdmit reserves cost(msgBytes) and returns it, or 0 and false when the
// budget is spent.
func (m *memoryBudget) tryAdmit(msgBytes int) (int64, bool) {
	if m == nil {
		return 0, true
	}
	n := m.cost(msgBytes)
	return n, m.sem.TryAcquire(n)
}

// release returns n bytes admitted by tryAdmit.
func (m *memoryBudget) release(n int64) {
	if m != nil && n > 0 {
		m.sem.Release(n)
	}
}

// defaultMaxMemory is worker.max_memory when unset: half the container's
// memory limit when the cgroup sets one (the rest is the Go runtime, the
// connection pools, TLS sessions and the garbage collector's headroom),
// else 0, no bound but the slots.
func defaultMaxMemory() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2) or a huge number (v1) mean no limit.
		if err != nil || limit <= 0 || limit >= 1<<60 {
			return 0
		}
		return limit / 2
	}
	return 0
}
