package worker

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Defaults of a connection's circuit breaker.
const (
	// maxRateWait is the longest a call waits in the worker for its
	// connection's rate limit; longer waits hand the call back to JetStream.
	maxRateWait = 250 * time.Millisecond
)

// connLimits are one connection's per-worker limits: calls in flight
// (max_conns), calls per second (rate_limit), and a circuit breaker.
type connLimits struct {
	key     limitSettings
	slots   chan struct{} // nil: no cap
	rate    *rate.Limiter // nil: no limit
	breaker *breaker      // nil: disabled
}

// limitSet holds the limits of every connection, rebuilt when a
// connection's settings change.
type limitSet struct {
	mu sync.Mutex
	m  map[string]*connLimits
}

func (s *limitSet) get(name string, c *catalog.Connection) *connLimits {
	key := limitsKey(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.m[name]; ok && l.key == key {
		return l
	}
	l := &connLimits{key: key}
	if c.MaxConns > 0 {
		l.slots = make(chan struct{}, c.MaxConns)
	}
	if c.RateLimit > 0 {
		l.rate = rate.NewLimiter(rate.Limit(c.RateLimit), max(1, int(c.RateLimit)))
	}
	if failures, cooldown := c.Breaker(); failures > 0 {
		l.breaker = &breaker{threshold: failures, cooldown: cooldown}
	}
	if s.m == nil {
		s.m = map[string]*connLimits{}
	}
	s.m[name] = l
	return l
}

// limitSettings are the connection fields its limits are built from; a
// change of any of them rebuilds the limits. Comparable, so checking it on
// every call costs no allocation.
type limitSettings struct {
	maxConns        int
	rateLimit       float64
	breakerFailures int
	breakerCooldown catalog.Duration
}

func limitsKey(c *catalog.Connection) limitSettings {
	return limitSettings{c.MaxConns, c.RateLimit, c.BreakerFailures, c.BreakerCooldown}
}

// admission is the verdict on starting a call now.
type admission struct {
	// release frees the call's slot; nil when the call was not admitted.
	release func()
	// handback > 0: the connection is saturated or rate-limited; hand the
	// call back for this long. It is not an attempt.
	handback time.Duration
	// breakerWait > 0: the circuit is open; fail this attempt fast and
	// retry after this long.
	breakerWait time.Duration
}

// admit decides whether a call on this connection may start now. With
// block set (direct calls, which cannot be handed back) it waits for a
// slot and for the rate limit within ctx instead.
func (l *connLimits) admit(ctx context.Context, now time.Time, block bool) admission {
	if l.breaker != nil {
		if ok, wait := l.breaker.allow(now); !ok {
			return admission{breakerWait: wait}
		}
	}
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			if !block {
				return admission{handback: jitter(100 * time.Millisecond)}
			}
			select {
			case l.slots <- struct{}{}:
			case <-ctx.Done():
				return admission{handback: time.Millisecond}
			}
		}
	}
	release := func() {
		if l.slots != nil {
			<-l.slots
		}
	}
	if l.rate != nil {
		r := l.rate.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			if d > maxRateWait && !block {
				r.CancelAt(now)
				release()
				return admission{handback: d + jitter(10*time.Millisecond)}
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				r.Cancel()
				release()
				return admission{handback: time.Millisecond}
			}
		}
	}
	return admission{release: release}
}

// record tells the breaker how an attempt ended.
func (l *connLimits) record(res *jobs.Result, now time.Time) {
	if l.breaker == nil || res == nil {
		return
	}
	if failure, counts := partnerFailure(res); counts {
		l.breaker.record(failure, now)
	}
}

// shortenedTimeout reports a timeout of a call that asked for less time
// than its connection gives: it says nothing of the partner, and counting
// it would let one flow open the circuit for everyone (timeout_ms: 1).
func shortenedTimeout(call *jobs.Call, conn *catalog.Connection, res *jobs.Result) bool {
	return res != nil && res.Error != nil && res.Error.Code == jobs.CodeTimeout &&
		call.TimeoutMS > 0 && conn.AttemptTimeout(nil) > conn.AttemptTimeout(call)
}

// partnerFailure says whether res shows the partner failing (it could not
// be reached in time, or answered 502/503/504), and whether res says
// anything about the partner at all (a bad keystore does not).
func partnerFailure(res *jobs.Result) (failure, counts bool) {
	if res.Error != nil {
		switch res.Error.Code {
		case jobs.CodeConnectFailed, jobs.CodeTimeout, jobs.CodeTLSHandshakeFailed:
			return true, true
		}
		if res.Status == 0 {
			return false, false
		}
	}
	switch res.Status {
	case 502, 503, 504:
		return true, true
	}
	return false, res.Status != 0
}

// breaker opens after threshold consecutive partner failures and stays
// open for cooldown; then it lets one trial call through (half-open): a
// success closes it, a failure opens it again.
type breaker struct {
	mu        sync.Mutex
	threshold int
	cooldown  time.Duration
	failures  int
	openUntil time.Time
	trial     bool
}

func (b *breaker) allow(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
		return true, 0
	}
	if now.Before(b.openUntil) {
		return false, b.openUntil.Sub(now)
	}
	if b.trial {
		return false, jitter(b.cooldown / 4)
	}
	b.trial = true
	return true, 0
}

func (b *breaker) record(failure bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if !failure {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
	}
}

// jitter returns a duration between d and 2d.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(d)
}
