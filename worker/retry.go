package worker

import (
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// retryPolicy decides whether a failed attempt is tried again and when.
type retryPolicy struct {
	base, max time.Duration
}

// retryableStatus are the HTTP statuses worth another attempt.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// decide returns whether attempt (1-based) of call, which ended in out, is
// retried and after what delay. It applies SPEC.md's rules: retry on
// connect_failed, timeout, secret_unavailable and 429/502/503/504; a
// non-idempotent call only when the request certainly did not reach the
// server or the server answered 429 or 503.
func (p retryPolicy) decide(call *jobs.Call, out outbound.Outcome, attempt, maxAttempts int) (bool, time.Duration) {
	if attempt >= maxAttempts {
		return false, 0
	}
	res := out.Result
	switch {
	case res.Error != nil:
		if !res.Error.Retryable {
			return false, 0
		}
		if !call.IsIdempotent() && out.Sent {
			return false, 0
		}
		if out.RetryAfter > 0 {
			return true, min(max(out.RetryAfter, p.backoff(attempt)), p.max)
		}
	case retryableStatus(res.Status):
		if !call.IsIdempotent() && res.Status != http.StatusTooManyRequests && res.Status != http.StatusServiceUnavailable {
			return false, 0
		}
		if out.RetryAfter > 0 {
			return true, min(out.RetryAfter, p.max)
		}
	default:
		return false, 0
	}
	return true, p.backoff(attempt)
}

// backoff is exponential with "equal jitter": half the delay is fixed, half
// random, so retries of many calls spread out but never come back at once.
func (p retryPolicy) backoff(attempt int) time.Duration {
	d := p.base
	for i := 1; i < attempt && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	half := d / 2
	return half + rand.N(half+1)
}

// finalize turns a last attempt that ended on a retryable status into the
// http_status error SPEC.md promises, keeping status, headers and body.
func finalize(res *jobs.Result, attempts int) {
	if res.Error == nil && retryableStatus(res.Status) {
		res.Error = jobs.Errorf(jobs.CodeHTTPStatus,
			"the partner answered HTTP %d on attempt %d of %d; it is overloaded or down, try later or raise max_attempts",
			res.Status, res.Attempt, attempts)
	}
}
