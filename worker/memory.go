package worker

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
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
	return cgroupMemoryLimit(cgroupMemoryFiles) / 2
}

// cgroupMemoryFiles are where cgroups v2 and v1 state the container's
// memory limit.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// cgroupMemoryLimit returns the memory limit the first readable of files
// states, 0 when none does or it says there is none ("max" in v2, a huge
// number in v1).
func cgroupMemoryLimit(files []string) int64 {
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || limit <= 0 || limit >= 1<<60 {
			return 0
		}
		return limit
	}
	return 0
}

// GoMemoryLimit is the Go memory limit a worker sets itself in a container
// whose memory limit is containerLimit (and no GOMEMLIMIT): the container's
// limit less a tenth of it, at least 32 MiB (at most half). The headroom is
// what Go does not count, about 16 MiB for a worker (its binary's pages
// among them), and slack: at GOGC 400 the heap grows to the limit, and a
// limit equal to the container's let a worker reach 523 MiB RSS where the
// container allowed 512.
func GoMemoryLimit(containerLimit int64) int64 {
	headroom := min(max(containerLimit/10, 32<<20), containerLimit/2)
	return containerLimit - headroom
}

// DefaultGCPercent is worker.gc_percent when a memory limit bounds the
// worker's heap.
const DefaultGCPercent = 400

// RuntimeTuning is what TuneRuntime set.
type RuntimeTuning struct {
	// GCPercent is the collector's target now (GOGC).
	GCPercent int
	// MemoryLimit is Go's memory limit now, 0 for none.
	MemoryLimit int64
	// Source says where the memory limit came from: "GOMEMLIMIT",
	// "cgroup" (GoMemoryLimit of the container's) or "" for none; and
	// GCFrom where the target came from: "GOGC", "worker.gc_percent",
	// "default".
	Source, GCFrom string
	// Warning, when set, is for the operator: GOMEMLIMIT leaves the
	// container too little headroom, so the target stayed at 100.
	Warning string
}

// TuneRuntime sets the Go runtime's garbage collection for a worker
// process from cfg.Worker.GCPercent and the memory limit, and returns what
// it set. A memory limit comes from GOMEMLIMIT (Go applies it itself;
// "off" is none) or, when that is unset, from the container's limit
// (GoMemoryLimit of it). The collector's target is GOGC when set, else
// worker.gc_percent when set, else DefaultGCPercent under a memory limit
// and Go's 100 without one: raising it without a limit would let the heap
// grow with it. A GOMEMLIMIT above GoMemoryLimit of the container's limit
// keeps 100 too, with a warning: the heap would grow into the container's
// limit. It changes process-wide settings: `serve` calls it once.
func TuneRuntime(cfg *Config) RuntimeTuning {
	return tuneRuntime(cfg.Worker.GCPercent, os.LookupEnv, cgroupMemoryFiles)
}

func tuneRuntime(gcPercent int, lookup func(string) (string, bool), cgroupFiles []string) RuntimeTuning {
	// An empty variable is no setting, as Go itself takes it.
	set := func(k string) bool { v, ok := lookup(k); return ok && v != "" }
	var t RuntimeTuning
	container := cgroupMemoryLimit(cgroupFiles)
	tooHigh := false
	if set("GOMEMLIMIT") {
		if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
			t.MemoryLimit, t.Source = limit, "GOMEMLIMIT"
			tooHigh = container > 0 && limit > GoMemoryLimit(container)
		}
	} else if container > 0 {
		t.MemoryLimit, t.Source = GoMemoryLimit(container), "cgroup"
		debug.SetMemoryLimit(t.MemoryLimit)
	}
	switch {
	case set("GOGC"):
		// Go applied it; read it back without changing it.
		t.GCPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(t.GCPercent)
		t.GCFrom = "GOGC"
	case gcPercent > 0:
		t.GCPercent, t.GCFrom = gcPercent, "worker.gc_percent"
		debug.SetGCPercent(gcPercent)
	case t.MemoryLimit > 0 && !tooHigh:
		t.GCPercent, t.GCFrom = DefaultGCPercent, "default"
		debug.SetGCPercent(DefaultGCPercent)
	default:
		t.GCPercent, t.GCFrom = 100, "default"
		debug.SetGCPercent(100)
	}
	if tooHigh {
		what := "GOGC stays 100 so that the heap does not grow into the container's limit"
		if t.GCPercent > 100 {
			what = fmt.Sprintf("with GOGC %d (%s) the heap grows to it: the container may be killed for memory", t.GCPercent, t.GCFrom)
		}
		t.Warning = fmt.Sprintf("GOMEMLIMIT (%d bytes) leaves less than the headroom the container's memory limit (%d bytes) needs; %s; unset GOMEMLIMIT and the worker sets %d",
			t.MemoryLimit, container, what, GoMemoryLimit(container))
	}
	return t
}
