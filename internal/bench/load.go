package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
)

// window measures what happens on the process and the partner between
// open and close: partner counters, allocation counters, sampled RSS.
type window struct {
	m       meter
	p       benchPartner
	start   time.Time
	end     time.Time
	before  partner.Counters
	after   partner.Counters
	m0, m1  runtime.MemStats
	cpu0    time.Duration
	cpu1    time.Duration
	sampler *rssSampler
	peakRSS int64
	// The CPU time of each of m.procs at open and at close; ok0/ok1 false
	// where it could not be read.
	procCPU0, procCPU1 []time.Duration
	procOK0, procOK1   []bool
}

// meter is what a window measures besides the bench process: the
// partner's counters, and the CPU of the processes of the run.
type meter struct {
	partner benchPartner
	procs   []procRef
}

// procRef is a process of the run other than the bench's own.
type procRef struct {
	name     string // "worker", "nats-server", "benthos"
	includes string // what its CPU covers, for the report
	pid      int
}

func openWindow(m meter) *window {
	w := &window{m: m, p: m.partner, before: m.partner.Requests(), m0: memSnapshot(), sampler: startRSSSampler(50 * time.Millisecond)}
	w.procCPU0, w.procOK0 = readProcsCPU(m.procs)
	w.cpu0 = cpuTime()
	w.start = time.Now()
	return w
}

func readProcsCPU(procs []procRef) ([]time.Duration, []bool) {
	cpu, ok := make([]time.Duration, len(procs)), make([]bool, len(procs))
	for i, p := range procs {
		cpu[i], ok[i] = PIDCPU(p.pid)
	}
	return cpu, ok
}

func (w *window) close() {
	w.end = time.Now()
	w.cpu1 = cpuTime()
	w.procCPU1, w.procOK1 = readProcsCPU(w.m.procs)
	w.peakRSS = w.sampler.Stop()
	w.m1 = memSnapshot()
	w.after = w.p.Requests()
}

// fill copies the window's measurements into ph; calls is the number of
// calls the window covers.
func (w *window) fill(ph *Phase, calls int64) {
	ph.Connections = w.after.Connections - w.before.Connections
	hs := w.after.Handshakes - w.before.Handshakes
	resumed := w.after.Resumed - w.before.Resumed
	ph.FullHandshakes = hs - resumed
	ph.ResumedHandshakes = resumed
	ph.PartnerRequests = w.after.Requests - w.before.Requests
	ph.PeakRSSMiB = mib(w.peakRSS)
	cpu := w.cpu1 - w.cpu0
	if d := w.end.Sub(w.start); d > 0 {
		ph.CPUCores = cpu.Seconds() / d.Seconds()
	}
	d := w.end.Sub(w.start)
	ph.Processes = append(ph.Processes, processCPU(ProcessCPU{Name: processBench, PID: os.Getpid()}, cpu, d, calls))
	for i, p := range w.m.procs {
		if !w.procOK0[i] || !w.procOK1[i] {
			continue
		}
		ph.Processes = append(ph.Processes, processCPU(ProcessCPU{Name: p.name, Includes: p.includes, PID: p.pid}, w.procCPU1[i]-w.procCPU0[i], d, calls))
	}
	if calls > 0 {
		ph.CPUPerCallUS = float64(cpu.Microseconds()) / float64(calls)
		ph.FullHandshakesPer1000 = float64(ph.FullHandshakes) * 1000 / float64(calls)
		ph.AllocsPerCall = float64(w.m1.Mallocs-w.m0.Mallocs) / float64(calls)
		ph.BytesPerCall = float64(w.m1.TotalAlloc-w.m0.TotalAlloc) / float64(calls)
	}
}

// closedLoop keeps inflight calls outstanding: each of inflight goroutines
// makes a call, and the next as soon as it completes. Calls completing in
// the first warmup are not counted; those completing during the following
// duration are. When profile is set, a CPU profile of the measured part is
// written to it.
func closedLoop(ctx context.Context, p meter, name string, c caller, inflight int, warmup, duration time.Duration, profile io.Writer) (*Phase, error) {
	const (
		warming = iota
		measuring
		stopped
	)
	var state atomic.Int32
	rec := &recorder{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range inflight {
		wg.Go(func() {
			withPart(partOf(name), func() {
				for state.Load() != stopped && ctx.Err() == nil {
					start := time.Now()
					st, err := c.call(ctx)
					if state.Load() == measuring {
						rec.add(time.Since(start), st, err)
					}
				}
			})
		})
	}
	abort := func(err error) (*Phase, error) {
		state.Store(stopped)
		cancel()
		wg.Wait()
		return nil, err
	}
	if err := sleepCtx(ctx, warmup); err != nil {
		return abort(err)
	}
	win := openWindow(p)
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			win.close()
			return abort(fmt.Errorf("start the CPU profile: %w", err))
		}
	}
	state.Store(measuring)
	err := sleepCtx(ctx, duration)
	state.Store(stopped)
	if profile != nil {
		pprof.StopCPUProfile()
	}
	win.close()
	if err != nil {
		return abort(err)
	}
	drain(&wg, cancel)
	ph := newPhase(name, "closed", rec, win.end.Sub(win.start))
	ph.InFlight = inflight
	win.fill(ph, ph.Calls+ph.Errors)
	return ph, nil
}

// pacedLoop starts calls at rate per second whatever their progress (an
// open loop), so a slow call does not slow the load down. A call's latency
// runs from the moment it was due, not from when it started, so falling
// behind shows in the percentiles. Calls due in the first warmup are not
// counted. At most maxOutstanding calls run at once; a call due beyond that
// is skipped and counted.
func pacedLoop(ctx context.Context, p meter, name string, c caller, rate float64, maxOutstanding int, warmup, duration time.Duration, profile io.Writer) (*Phase, error) {
	rec := &recorder{}
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		return nil, fmt.Errorf("rate %.0f calls/s is too high to pace", rate)
	}
	var (
		outstanding atomic.Int64
		skipped     int64
		wg          sync.WaitGroup
		win         *window
		profiling   bool
		err         error
	)
	defer func() {
		if profiling {
			pprof.StopCPUProfile()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	measureFrom, end := t0.Add(warmup), t0.Add(warmup+duration)
	for i := int64(0); ; i++ {
		due := t0.Add(time.Duration(i) * interval)
		if !due.Before(end) {
			break
		}
		if err := sleepCtx(ctx, time.Until(due)); err != nil {
			drain(&wg, cancel)
			return nil, err
		}
		measured := !due.Before(measureFrom)
		if measured && win == nil {
			win = openWindow(p)
			if profiling, err = startProfile(profile); err != nil {
				drain(&wg, cancel)
				return nil, err
			}
		}
		if outstanding.Load() >= int64(maxOutstanding) {
			if measured {
				skipped++
			}
			continue
		}
		outstanding.Add(1)
		wg.Go(func() {
			defer outstanding.Add(-1)
			withPart(partOf(name), func() {
				st, err := c.call(ctx)
				if measured {
					rec.add(time.Since(due), st, err)
				}
			})
		})
	}
	if err := sleepCtx(ctx, time.Until(end)); err != nil {
		drain(&wg, cancel)
		return nil, err
	}
	if win == nil {
		win = openWindow(p)
		if profiling, err = startProfile(profile); err != nil {
			drain(&wg, cancel)
			return nil, err
		}
	}
	// Wait for the measured calls, so the window counts their handshakes
	// and allocations; the rate is over the nominal duration.
	drain(&wg, cancel)
	if profiling {
		pprof.StopCPUProfile()
		profiling = false
	}
	win.close()
	ph := newPhase(name, "paced", rec, duration)
	ph.Skipped = skipped
	ph.OfferedRate = rate
	win.fill(ph, ph.Calls+ph.Errors)
	return ph, nil
}

// drain waits for the load's goroutines; their calls end by their own
// timeouts, or by cancel after a generous grace.
func drain(wg *sync.WaitGroup, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cancel()
		<-done
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newPhase(name, loop string, rec *recorder, d time.Duration) *Phase {
	rec.mu.Lock()
	calls, errs, first := int64(len(rec.latencies)), rec.errors, rec.firstErr
	rec.mu.Unlock()
	pc := rec.percentiles(50, 90, 99, 100)
	ph := &Phase{
		Name:       name,
		Loop:       loop,
		Seconds:    d.Seconds(),
		Calls:      calls,
		Errors:     errs,
		Throughput: float64(calls) / d.Seconds(),
		P50MS:      pc[0],
		P90MS:      pc[1],
		P99MS:      pc[2],
		MaxMS:      pc[3],
	}
	if first != nil {
		ph.FirstError = first.Error()
	}
	ph.Stages = rec.stageBreakdown()
	return ph
}

// startProfile starts a CPU profile into w, if w is set, and reports
// whether it did.
func startProfile(w io.Writer) (bool, error) {
	if w == nil {
		return false, nil
	}
	if err := pprof.StartCPUProfile(w); err != nil {
		return false, fmt.Errorf("start the CPU profile: %w", err)
	}
	return true, nil
}

// processCPU fills pc with cpu, the process's CPU time over a window of d
// that covered calls.
func processCPU(pc ProcessCPU, cpu, d time.Duration, calls int64) ProcessCPU {
	pc.CPUSeconds = cpu.Seconds()
	if d > 0 {
		pc.Cores = cpu.Seconds() / d.Seconds()
	}
	if calls > 0 {
		pc.CPUPerCallUS = float64(cpu.Microseconds()) / float64(calls)
	}
	return pc
}
