package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// recorder collects the outcomes of one phase's measured calls. Safe for
// concurrent use.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration // successful calls only
	stages    []stages        // of successful calls, when the path has them
	errors    int64
	firstErr  error
}

func (r *recorder) add(lat time.Duration, st stages, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors++
		if r.firstErr == nil {
			r.firstErr = err
		}
		return
	}
	r.latencies = append(r.latencies, lat)
	if st != (stages{}) {
		r.stages = append(r.stages, st)
	}
}

// stageBreakdown returns the p50 and p99 of each stage, or nil when the
// path recorded none.
func (r *recorder) stageBreakdown() *Stages {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.stages) == 0 {
		return nil
	}
	pick := func(f func(stages) time.Duration) []float64 {
		d := make([]time.Duration, len(r.stages))
		for i, st := range r.stages {
			d[i] = f(st)
		}
		return percentilesOf(d, 50, 99)
	}
	enq := pick(func(s stages) time.Duration { return s.enqueue })
	q := pick(func(s stages) time.Duration { return s.queued })
	att := pick(func(s stages) time.Duration { return s.attempt })
	return &Stages{
		EnqueueP50MS: enq[0], EnqueueP99MS: enq[1],
		QueuedP50MS: q[0], QueuedP99MS: q[1],
		AttemptP50MS: att[0], AttemptP99MS: att[1],
	}
}

// percentiles returns the nearest-rank percentiles ps (0-100) of the
// recorded latencies, in milliseconds.
func (r *recorder) percentiles(ps ...float64) []float64 {
	r.mu.Lock()
	lat := slices.Clone(r.latencies)
	r.mu.Unlock()
	return percentilesOf(lat, ps...)
}

// percentilesOf sorts lat and returns its nearest-rank percentiles ps, in
// milliseconds.
func percentilesOf(lat []time.Duration, ps ...float64) []float64 {
	slices.Sort(lat)
	out := make([]float64, len(ps))
	if len(lat) == 0 {
		return out
	}
	for i, p := range ps {
		rank := int(p/100*float64(len(lat))+0.5) - 1
		rank = min(max(rank, 0), len(lat)-1)
		out[i] = ms(lat[rank])
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// procStatus reads the resident set size (VmRSS) and its high-water mark
// (VmHWM) of this process from /proc/self/status, in bytes. ok is false
// where there is no such file (not Linux).
func procStatus() (rss, hwm int64, ok bool) { return procStatusOf(selfStatus) }

// selfStatus is this process's status file; procPath(pid) another's.
const selfStatus = "/proc/self/status"

func procPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/status" }

// procStatusOf reads VmRSS and VmHWM from the status file path, in bytes.
func procStatusOf(path string) (rss, hwm int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &rss
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &hwm
		default:
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) >= 2 {
			kb, err := strconv.ParseInt(string(fields[1]), 10, 64)
			if err == nil {
				*dst = kb << 10
			}
		}
	}
	return rss, hwm, rss > 0
}

// rssSampler reads VmRSS every interval and keeps the largest value, since
// VmHWM cannot be reset between phases.
type rssSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func startRSSSampler(every time.Duration) *rssSampler {
	return startRSSSamplerOf(selfStatus, every)
}

// startRSSSamplerOf samples the VmRSS of the process whose status file is
// path (procPath(pid) for another process).
func startRSSSamplerOf(path string, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	sample := func() {
		if rss, _, ok := procStatusOf(path); ok && rss > s.peak.Load() {
			s.peak.Store(rss)
		}
	}
	sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				sample()
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the largest VmRSS seen, in bytes.
func (s *rssSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// memSnapshot reads the allocation counters of the whole process.
func memSnapshot() runtime.MemStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// loadAverage returns the 1-minute load average from /proc/loadavg, or 0.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fields := bytes.Fields(b)
	if len(fields) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(string(fields[0]), 64)
	return v
}

// Parts of the process that a CPU profile of a run tells apart, as the pprof
// label "part": `go tool pprof -tags` gives each part's share. Goroutines
// inherit the label of the goroutine that starts them, so the NATS server's
// connection and stream goroutines, the partner's handlers and the HTTP
// client connections each land in their part; the runtime's own work
// (garbage collection) carries none.
const (
	partNATS    = "nats-server"
	partPartner = "partner"
	partWorker  = "worker"
	partFlow    = "flow"
	partDirect  = "direct-client"
)

// withPart runs f with the goroutine labelled part.
func withPart(part string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("part", part), func(context.Context) { f() })
}

// partOf is the part a phase's load goroutines belong to.
func partOf(path string) string {
	if path == "direct" {
		return partDirect
	}
	return partFlow
}
