package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/partner"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// LargeBodies is what the large-bodies mode measured (Options.LargeBodies);
// the calls themselves, as the bench process saw them, are Report.Relay.
type LargeBodies struct {
	// BodyBytes is each response's size; InFlight the calls in flight.
	BodyBytes int64 `json:"body_bytes"`
	InFlight  int   `json:"in_flight"`
	// MBPerSecond is the bodies' bytes relayed per second, in MB (10^6).
	MBPerSecond float64 `json:"mb_per_second"`
	// SHA256 is the pattern's digest every body_ref must carry.
	SHA256 string `json:"sha256"`
	// Verified counts bodies read back from the bucket and hashed (the
	// first and one in VerifyEvery), VerifyFailures those whose size or
	// SHA-256 differed or that could not be read.
	Verified       int64  `json:"verified"`
	VerifyEvery    int    `json:"verify_every"`
	VerifyFailures int64  `json:"verify_failures"`
	FirstVerifyErr string `json:"first_verify_error,omitempty"`
	// Deleted counts objects deleted once their result was in;
	// DeleteErrors those that could not be.
	Deleted        int64  `json:"deleted"`
	DeleteErrors   int64  `json:"delete_errors"`
	FirstDeleteErr string `json:"first_delete_error,omitempty"`
	// BucketPeakMB is the most the bucket's stream held, sampled every
	// second, in MB; BucketEndMB what it held at the end.
	BucketPeakMB float64 `json:"bucket_peak_mb"`
	BucketEndMB  float64 `json:"bucket_end_mb"`
	// WorkerProcess is true when the workers ran as processes of their own
	// (Options.WorkerCommand); WorkerPeakRSSMiB is then the largest peak of
	// theirs, else the bench process's VmHWM (everything in one process).
	WorkerProcess    bool           `json:"worker_process"`
	WorkerPeakRSSMiB float64        `json:"worker_peak_rss_mib"`
	Workers          []WorkerMemory `json:"workers,omitempty"`
	// LimitMiB is Options.MaxRSSMiB, the bound checked; 0 for none.
	LimitMiB float64 `json:"limit_mib,omitempty"`
}

// runLargeBodies runs the large-bodies mode on the rig's workers.
func runLargeBodies(ctx context.Context, o Options, r *rig, rep *Report, prof *profiles, progress func(string, ...any)) error {
	lb := &LargeBodies{BodyBytes: o.LargeBodyBytes, InFlight: o.inflight(), VerifyEvery: o.VerifyEvery, WorkerProcess: len(r.procs) > 0, LimitMiB: o.MaxRSSMiB}
	rep.LargeBodies = lb
	lb.SHA256 = partner.PatternSHA256(o.LargeBodyBytes)
	js, err := jetstream.New(r.flowNC)
	if err != nil {
		return err
	}
	store, err := js.ObjectStore(ctx, jobs.BucketBodies)
	if err != nil {
		return fmt.Errorf("the workers' bodies bucket %s: %w", jobs.BucketBodies, err)
	}
	c := &largeCaller{relay: r.relay, store: store, lb: lb, verifyEvery: int64(o.VerifyEvery),
		verifySlots: make(chan struct{}, 2), deleteSlots: make(chan struct{}, 8)}
	bucket := startBucketSampler(js)

	where := "in the bench process"
	if lb.WorkerProcess {
		where = fmt.Sprintf("%d worker process(es)", len(r.procs))
	}
	progress("relay, %d calls of %d-byte bodies by body_ref, %d in flight, %s: reading back 1 body in %d",
		o.Calls, o.LargeBodyBytes, o.inflight(), where, o.VerifyEvery)
	stopTicker := progressTicker(15*time.Second, func() {
		progress("  %d of %d calls done; worker peak RSS so far %.0f MiB; bucket %.0f MB",
			c.done.Load(), o.Calls, workerPeakSoFar(r), bucket.now())
	})
	rep.Relay, err = countedLoop(ctx, r.meter(), "relay", c, o.inflight(), o.Calls, prof.writer("relay", "closed"))
	stopTicker()
	c.cleaning.Wait()
	lb.BucketPeakMB, lb.BucketEndMB = bucket.stop(ctx)
	if err != nil {
		return err
	}
	lb.MBPerSecond = float64(rep.Relay.Calls) * float64(o.LargeBodyBytes) / 1e6 / rep.Relay.Seconds

	// The workers' peak: their processes end here, for getrusage.
	for _, p := range r.procs {
		p.stop()
		m := p.memory()
		lb.Workers = append(lb.Workers, m)
		lb.WorkerPeakRSSMiB = max(lb.WorkerPeakRSSMiB, m.PeakRSSMiB)
	}
	if !lb.WorkerProcess {
		if _, hwm, ok := procStatus(); ok {
			lb.WorkerPeakRSSMiB = mib(hwm)
		}
	}
	if err := needCalls(rep.Relay); err != nil {
		return err
	}
	if lb.Verified == 0 {
		return errors.New("large bodies: no body was read back from the bucket and checked")
	}
	return nil
}

// workerPeakSoFar is the largest VmRSS sampled so far of the worker
// processes, or this process's when the workers run in it.
func workerPeakSoFar(r *rig) float64 {
	var peak int64
	for _, p := range r.procs {
		peak = max(peak, p.sampler.peak.Load())
	}
	if len(r.procs) == 0 {
		peak, _, _ = procStatus()
	}
	return mib(peak)
}

// largeCaller makes one relay call of the large-bodies mode and checks its
// body_ref; the object goes to a cleanup goroutine, which reads back some and
// deletes it.
type largeCaller struct {
	relay       *relayCaller
	store       jetstream.ObjectStore
	lb          *LargeBodies
	verifyEvery int64

	n, done     atomic.Int64
	cleaning    sync.WaitGroup
	verifySlots chan struct{} // bounds the bodies read back at once
	deleteSlots chan struct{} // and the objects being deleted

	mu sync.Mutex // guards lb's counters
}

// call makes the call and hands its object, if any, to a goroutine that
// reads it back when it is one to verify and deletes it, so that the next
// call starts at once: calls in flight stay at the bench's number.
func (c *largeCaller) call(ctx context.Context) (stages, error) {
	rs, st, err := c.relay.roundTrip(ctx)
	defer c.done.Add(1)
	ref := rs.BodyRef
	if ref != nil && ref.Name != "" {
		i := c.n.Add(1)
		verify := err == nil && (i == 1 || i%c.verifyEvery == 0)
		c.cleaning.Go(func() { withPart(partFlow, func() { c.cleanup(ref.Name, verify) }) })
	}
	switch {
	case err != nil:
		return st, err
	case ref == nil:
		return st, fmt.Errorf("%w: the result carries no body_ref", errBadResponse)
	case ref.Bucket != jobs.BucketBodies || ref.Size != c.lb.BodyBytes || ref.SHA256 != c.lb.SHA256:
		return st, fmt.Errorf("%w: body_ref %+v, want bucket %s, %d bytes, sha256 %s", errBadResponse, *ref, jobs.BucketBodies, c.lb.BodyBytes, c.lb.SHA256)
	}
	return st, nil
}

// cleanup reads back the object name when verify is set, and deletes it.
func (c *largeCaller) cleanup(name string, verify bool) {
	ctx := context.Background()
	if verify {
		c.verifySlots <- struct{}{}
		err := c.verify(ctx, name)
		<-c.verifySlots
		c.mu.Lock()
		c.lb.Verified++
		if err != nil {
			c.lb.VerifyFailures++
			if c.lb.FirstVerifyErr == "" {
				c.lb.FirstVerifyErr = err.Error()
			}
		}
		c.mu.Unlock()
	}
	c.deleteSlots <- struct{}{}
	// A busy server may take long to purge an object's chunks.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err := c.store.Delete(dctx, name)
	cancel()
	<-c.deleteSlots
	c.mu.Lock()
	if err != nil {
		c.lb.DeleteErrors++
		if c.lb.FirstDeleteErr == "" {
			c.lb.FirstDeleteErr = err.Error()
		}
	} else {
		c.lb.Deleted++
	}
	c.mu.Unlock()
}

// verify reads the object name and checks its size and SHA-256 against
// the partner's pattern.
func (c *largeCaller) verify(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	obj, err := c.store.Get(ctx, name)
	if err != nil {
		return fmt.Errorf("read back %s: %w", name, err)
	}
	defer obj.Close()
	h := sha256.New()
	n, err := io.Copy(h, obj)
	if err != nil {
		return fmt.Errorf("read back %s: %w", name, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != c.lb.BodyBytes || sum != c.lb.SHA256 {
		return fmt.Errorf("object %s holds %d bytes, sha256 %s; the partner sent %d, %s", name, n, sum, c.lb.BodyBytes, c.lb.SHA256)
	}
	return nil
}

// countedLoop makes calls calls, inflight at a time, and measures them
// all: the large-bodies mode's calls last seconds each, too long for a
// warm-up and a measured window.
func countedLoop(ctx context.Context, p meter, name string, c caller, inflight, calls int, profile io.Writer) (*Phase, error) {
	rec := &recorder{}
	win := openWindow(p)
	profiling, err := startProfile(profile)
	if err != nil {
		win.close()
		return nil, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(inflight, calls) {
		wg.Go(func() {
			withPart(partOf(name), func() {
				for ctx.Err() == nil && next.Add(1) <= int64(calls) {
					start := time.Now()
					st, err := c.call(ctx)
					rec.add(time.Since(start), st, err)
				}
			})
		})
	}
	wg.Wait()
	if profiling {
		pprof.StopCPUProfile()
	}
	win.close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ph := newPhase(name, "closed", rec, win.end.Sub(win.start))
	ph.InFlight = inflight
	win.fill(ph, ph.Calls+ph.Errors)
	return ph, nil
}

// bucketSampler samples the size of the bodies bucket's stream.
type bucketSampler struct {
	js     jetstream.JetStream
	peak   atomic.Int64
	last   atomic.Int64
	stopc  chan struct{}
	done   chan struct{}
	sample func(context.Context)
}

func startBucketSampler(js jetstream.JetStream) *bucketSampler {
	b := &bucketSampler{js: js, stopc: make(chan struct{}), done: make(chan struct{})}
	b.sample = func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "OBJ_"+jobs.BucketBodies)
		if err != nil {
			return
		}
		info, err := s.Info(ctx)
		if err != nil {
			return
		}
		n := int64(info.State.Bytes)
		b.last.Store(n)
		if n > b.peak.Load() {
			b.peak.Store(n)
		}
	}
	go func() {
		defer close(b.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-b.stopc:
				return
			case <-t.C:
				b.sample(context.Background())
			}
		}
	}()
	return b
}

// now is the last size sampled, in MB.
func (b *bucketSampler) now() float64 { return float64(b.last.Load()) / 1e6 }

// stop ends sampling and returns the peak and the size now, in MB.
func (b *bucketSampler) stop(ctx context.Context) (peak, end float64) {
	close(b.stopc)
	<-b.done
	b.sample(ctx)
	return float64(b.peak.Load()) / 1e6, b.now()
}

// progressTicker calls f every d until the returned stop is called.
func progressTicker(d time.Duration, f func()) (stop func()) {
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stopc:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(stopc); <-done }
}
