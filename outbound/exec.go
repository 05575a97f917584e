package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// Executor makes single attempts of calls over mTLS. It keeps one HTTP
// transport, and so one keep-alive pool, per profile and version of the
// profile's TLS material, and is safe for concurrent use.
//
// It does not retry. It follows redirects only for a connection with
// follow_redirects, and then only to hosts the connection allows; otherwise
// a 3xx is a result like any other status.
type Executor struct {
	opts       ExecutorOptions
	transports *transportCache
	derived    derivedCache
	oauth      *oauthTokens
	wsdls      wsdlCache
}

// NewExecutor returns an executor; zero options mean the defaults.
func NewExecutor(opts ExecutorOptions) *Executor {
	opts = opts.withDefaults()
	return &Executor{opts: opts, transports: newTransportCache(opts), oauth: newOAuthTokens()}
}

// Close closes the idle connections of every transport. Attempts still
// running finish; the executor stays usable.
func (x *Executor) Close() { x.transports.closeIdle() }

// Outcome is what one attempt produced.
type Outcome struct {
	// Result is the attempt's result: ID, Connection, Metadata, OK, Status,
	// Headers, Body or BodyBase64, SOAPFault, Error, Timing (but QueuedMS),
	// ClientCert and CompletedAt. The caller sets Attempt and Worker.
	Result *jobs.Result
	// RetryAfter is the Retry-After of a 429 or 503 response (seconds or an
	// HTTP date), 0 when there is none.
	RetryAfter time.Duration
	// Sent is false only when the request certainly did not reach the
	// server: a check before dialing, or a DNS, connect or TLS handshake
	// failure.
	Sent bool
}

// Attempt makes one attempt of call against conn, presenting mat's client
// certificate, within conn.AttemptTimeout(call).
//
// A response of any status is a result, not an error: 2xx without a SOAP
// fault is OK, anything else is not, and the retryable statuses
// (429/502/503/504) are left to the caller's retry policy. Error is set only
// when no usable response was obtained, or when its body exceeds
// conn.ResponseLimit() (response_too_large, status and headers kept).
//
// A connection with auth gets its credentials on the request (outbound's
// auth.go): a header built from secrets read now, or an OAuth2 token from
// the cache or the token endpoint. When the partner answers 401 to a
// request made with a token, the token is renewed once and the request
// made once more, within the same deadline.
func (x *Executor) Attempt(ctx context.Context, call *jobs.Call, conn *catalog.Connection, mat *secrets.Material) Outcome {
	return x.AttemptOn(ctx, LaneQueued, call, conn, mat)
}

// Lane picks the connection pools an attempt uses.
type Lane uint8

const (
	// LaneQueued is the lane of calls taken from the queue.
	LaneQueued Lane = iota
	// LaneDirect is the lane of direct calls: pools of their own, so that
	// a direct call never waits behind queued ones on an HTTP/2
	// connection's read loop and writer.
	LaneDirect
)

// AttemptOn is Attempt on lane's connection pools.
func (x *Executor) AttemptOn(ctx context.Context, lane Lane, call *jobs.Call, conn *catalog.Connection, mat *secrets.Material) Outcome {
	start := time.Now()
	res := &jobs.Result{}
	out := Outcome{Result: res}
	if call != nil {
		res.ID, res.Connection, res.Metadata = call.ID, call.Connection, call.Metadata
	}
	finish := func(e *jobs.Error) Outcome {
		if e != nil {
			res.Error = e
			res.OK = false
		}
		end := time.Now()
		res.Timing.TotalMS = jobs.Millis(end.Sub(start))
		res.CompletedAt = end.UTC()
		return out
	}
	if call == nil || conn == nil || mat == nil || mat.Config == nil {
		return finish(jobs.Errorf(jobs.CodeInternal, "mtlsrelay made an attempt without a call, connection or TLS material; see the worker log"))
	}
	leaf := mat.Leaf
	if leaf == nil && len(mat.Config.Certificates) > 0 {
		leaf = mat.Config.Certificates[0].Leaf
	}
	res.ClientCert = x.derived.leaf(leaf)
	if e := secrets.CheckValidity(mat.Profile, leaf, start); e != nil {
		return finish(e)
	}
	cd := x.derived.connection(call.Connection, conn)
	if cd.base == nil {
		return finish(jobs.Errorf(jobs.CodeInternal, "connection %s has an invalid base_url", call.Connection))
	}
	if call.Kind == jobs.KindSOAP && call.SOAP != nil && call.SOAP.Operation != "" {
		wctx, wcancel := context.WithTimeout(ctx, conn.AttemptTimeout(call))
		resolved, jerr := x.resolveOperation(wctx, lane, call, conn, cd.base, mat)
		wcancel()
		if jerr != nil {
			return finish(jerr)
		}
		call = resolved
	}
	u, err := conn.RequestURL(call, cd.base)
	if err != nil {
		return finish(jobs.AsError(err))
	}
	if u.Scheme != "https" {
		return finish(jobs.Errorf(jobs.CodeInvalidCall, "connection %s targets %s URLs; mtlsrelay only makes https calls", call.Connection, u.Scheme))
	}

	timeout := conn.AttemptTimeout(call)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Credentials are read and tokens requested within the attempt's
	// deadline, but without its trace: a token request is not the call's.
	authCtx := ctx
	tr := &tracer{start: start}
	ctx = httptrace.WithClientTrace(ctx, tr.clientTrace())
	ctx, hs := startHTTPSpan(ctx, call.Method, u, tr)
	defer hs.end(&out)
	var req *http.Request
	var jerr *jobs.Error
	if call.Kind == jobs.KindSOAP {
		req, jerr = newSOAPRequest(ctx, call, u, conn.SOAP, mat)
	} else {
		req, jerr = newRESTRequest(ctx, call, u, x.opts.Bodies)
	}
	if jerr != nil {
		return finish(jerr)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", x.opts.UserAgent)
	}
	hs.inject(req.Header)

	pt := x.transports.getVia(call.Connection, conn.Proxy, lane, mat)
	defer pt.release()
	var cred *credential
	if conn.Auth != nil {
		if cred, jerr = x.credentials(authCtx, call.Connection, conn, mat, pt); jerr != nil {
			return finish(jerr)
		}
		cred.apply(req)
	}
	target := Target{Host: HostPort(u), Profile: mat.Profile, SystemRoots: mat.Config.RootCAs == nil, Timeout: timeout}
	classify := func(err error) *jobs.Error {
		// The attempt's context explains failures whose own error does not
		// (a connection closed under a request whose deadline passed).
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		tr.describe(&target)
		return ClassifyError(err, target)
	}

	endFirst, err := pt.first(target.Host).wait(ctx)
	if err != nil {
		tr.recordTiming(res)
		return finish(classify(fmt.Errorf("waiting for another call to make the first connection to %s: %w", target.Host, err)))
	}
	if endFirst != nil {
		tr.onConn = func(h2 bool) {
			if h2 {
				endFirst(true)
				return
			}
			time.AfterFunc(ticketWait, func() { endFirst(true) })
		}
		defer func() { endFirst(tr.sent()) }()
	}
	req = req.WithContext(withEgress(req.Context(), cd.egress))
	client := &http.Client{Transport: pt.rt, CheckRedirect: redirectPolicy(call, conn, cd.base)}
	resp, err := client.Do(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && cred.renewable() {
		// The token may have been revoked or have expired early: renew it
		// once and try once more.
		resp, err = x.retryUnauthorized(authCtx, call.Connection, conn, mat, pt, cred, client, req, resp)
	}
	if err != nil {
		err = withConnFailure(err, tr)
		out.Sent = tr.sent()
		tr.recordTiming(res)
		return finish(classify(err))
	}
	out.Sent = true
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.Headers = resp.Header
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		out.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	limit := conn.ResponseLimit()
	if resp.ContentLength > limit && req.Method != http.MethodHead {
		tr.recordTiming(res)
		return finish(tooLarge(call, target.Host, resp.ContentLength, limit))
	}
	verify := call.Kind == jobs.KindSOAP && conn.SOAP != nil && conn.SOAP.WSS != nil && conn.SOAP.WSS.VerifyResponse
	var body []byte
	// A response whose signature is verified is read whole first (it is
	// bounded by max_response_bytes): the signature covers all of it.
	if b := x.opts.Bodies; b != nil && !verify && req.Method != http.MethodHead && (resp.ContentLength < 0 || resp.ContentLength > b.InlineMax()) {
		// Perhaps too large for a message: read what a result may hold,
		// and stream the rest, if there is more, to the bodies store.
		inline := min(b.InlineMax(), limit)
		head, err := io.ReadAll(io.LimitReader(resp.Body, inline+1))
		if err != nil {
			tr.recordTiming(res)
			return finish(classify(err))
		}
		if int64(len(head)) > inline {
			rest := &limitedBody{r: io.MultiReader(bytes.NewReader(head), resp.Body), left: limit}
			ref, err := b.Store(ctx, call, rest, resp.Header.Get("Content-Type"))
			tr.recordTiming(res)
			var je *jobs.Error
			switch {
			case errors.Is(err, ErrBodyTooLarge):
				return finish(tooLarge(call, target.Host, -1, limit))
			case errors.As(err, &je):
				return finish(je) // the store's own failure
			case err != nil:
				return finish(classify(err)) // reading the partner
			}
			res.BodyRef = ref
			res.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
			return finish(nil)
		}
		body = head
	} else {
		var err error
		body, err = readBody(resp.Body, resp.ContentLength, limit)
		if err != nil {
			tr.recordTiming(res)
			return finish(classify(err))
		}
	}
	tr.recordTiming(res)
	if int64(len(body)) > limit {
		return finish(tooLarge(call, target.Host, -1, limit))
	}
	if call.Kind == jobs.KindSOAP || mayCarrySOAP(resp.Header.Get("Content-Type")) {
		res.SOAPFault = parseSOAPFault(resp.Header.Get("Content-Type"), body)
	}
	res.OK = resp.StatusCode >= 200 && resp.StatusCode < 300 && res.SOAPFault == nil
	var verr *jobs.Error
	if verify && res.OK {
		verr = verifyResponseWSS(call, target.Host, body, conn.SOAP.WSS, mat)
	}
	if b := x.opts.Bodies; verify && b != nil && int64(len(body)) > b.InlineMax() {
		ref, err := b.Store(ctx, call, bytes.NewReader(body), resp.Header.Get("Content-Type"))
		var je *jobs.Error
		switch {
		case errors.As(err, &je):
			return finish(je)
		case err != nil:
			return finish(classify(err))
		}
		res.BodyRef = ref
		return finish(verr)
	}
	setBody(res, body)
	return finish(verr)
}

// retryUnauthorized renews the token of cred, which the partner refused
// with first (a 401), and makes req once more with the new one. It returns
// first as it is when req's body cannot be sent again, and the renewal's
// failure (a *jobs.Error: auth_failed, connect_failed...) when there is no
// new token.
func (x *Executor) retryUnauthorized(ctx context.Context, name string, conn *catalog.Connection, mat *secrets.Material, pt *pooledTransport,
	cred *credential, client *http.Client, req *http.Request, first *http.Response) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return first, nil
	}
	// Read what little the 401 holds, so its connection can serve the retry.
	_, _ = io.Copy(io.Discard, io.LimitReader(first.Body, 64<<10))
	first.Body.Close()
	next, jerr := x.oauth.renew(ctx, cred, x, name, conn, mat, pt)
	if jerr != nil {
		return nil, jerr
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		again.Body = body
	}
	next.apply(again)
	return client.Do(again)
}

// readBody reads at most limit+1 bytes of body, to its end. When the
// partner announced the length, the body is read into one buffer of exactly
// that size, not grown by doubling as io.ReadAll does; then on to the end of
// the stream: closing an HTTP/2 body before its END_STREAM resets the
// stream, and a server that sees resets while its handlers still run takes
// them for an attack and closes the connection.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength < 0 || contentLength > limit {
		return io.ReadAll(io.LimitReader(body, limit+1))
	}
	b := make([]byte, contentLength)
	if n, err := io.ReadFull(body, b); err != nil {
		return b[:n], err
	}
	var next [1]byte
	for {
		n, err := body.Read(next[:])
		if n > 0 {
			// More than announced (net/http refuses that for both
			// protocols): read on, to the limit.
			rest, err := io.ReadAll(io.LimitReader(body, limit-contentLength))
			return append(append(b, next[0]), rest...), err
		}
		switch {
		case err == io.EOF:
			return b, nil
		case err != nil:
			return b, err
		}
	}
}

func tooLarge(call *jobs.Call, host string, size, limit int64) *jobs.Error {
	what := "more than " + strconv.FormatInt(limit, 10) + " bytes"
	if size >= 0 {
		what = strconv.FormatInt(size, 10) + " bytes, over the limit of " + strconv.FormatInt(limit, 10)
	}
	return jobs.Errorf(jobs.CodeResponseTooLarge,
		"the response of %s is %s; raise max_response_bytes of connection %s or ask the partner for less", host, what, call.Connection)
}

// HostPort returns u's host with its port, 443 when the URL has none.
func HostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return u.Host + ":443"
}

// describeLeaf returns what a result says about the client certificate.
func describeLeaf(leaf *x509.Certificate) *jobs.ClientCert {
	if leaf == nil {
		return nil
	}
	return &jobs.ClientCert{
		Subject:  leaf.Subject.String(),
		Serial:   leaf.SerialNumber.Text(16),
		NotAfter: leaf.NotAfter.UTC(),
	}
}

// withConnFailure adds to err the failure of the connection it happened
// on, when the HTTP/2 transport dropped it. That transport reports a new
// connection that failed before its first request only as "client conn could
// not be established"; in TLS 1.3 that is how a server's refusal of the
// client certificate (an alert right after the handshake) often surfaces.
// The TLS connection keeps the error its reader met, so one read returns it.
func withConnFailure(err error, tr *tracer) error {
	if !strings.Contains(err.Error(), "client conn could not be established") {
		return err
	}
	tr.mu.Lock()
	conn, fresh := tr.conn, !tr.reused
	tr.mu.Unlock()
	tc, ok := conn.(*tls.Conn)
	if !ok || !fresh {
		return err
	}
	// The connection is closed and its reader gone; the deadline only bounds
	// the read should the close still be under way.
	_ = tc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	if _, cause := tc.Read(b[:]); cause != nil && !errors.Is(cause, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// It returns 0 when v is empty, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(365 * 24 * 3600)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// tracer records the phases of one attempt through net/http/httptrace. Its
// hooks may run on the transport's dialing goroutines, even after the
// attempt returned, hence the mutex.
type tracer struct {
	start time.Time

	mu                  sync.Mutex
	dnsStart, dnsDone   time.Time
	connStart, connDone time.Time
	tlsStart, tlsDone   time.Time
	firstByte           time.Time
	gotConn, reused     bool
	conn                net.Conn
	tlsVersion          uint16

	// onConn, when set (before the request starts), is told when the
	// request got its connection and whether it speaks HTTP/2.
	onConn func(h2 bool)
}

func (t *tracer) clientTrace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		DNSStart:          func(httptrace.DNSStartInfo) { t.mark(&t.dnsStart, false) },
		DNSDone:           func(httptrace.DNSDoneInfo) { t.mark(&t.dnsDone, true) },
		ConnectStart:      func(string, string) { t.mark(&t.connStart, false) },
		ConnectDone:       func(string, string, error) { t.mark(&t.connDone, true) },
		TLSHandshakeStart: func() { t.mark(&t.tlsStart, false) },
		TLSHandshakeDone: func(cs tls.ConnectionState, _ error) {
			t.mark(&t.tlsDone, true)
			t.mu.Lock()
			t.tlsVersion = cs.Version
			t.mu.Unlock()
		},
		GotConn: func(info httptrace.GotConnInfo) {
			h2 := false
			t.mu.Lock()
			t.gotConn, t.reused, t.conn = true, info.Reused, info.Conn
			if tc, ok := info.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok && (t.tlsVersion == 0 || t.onConn != nil) {
				cs := tc.ConnectionState()
				if t.tlsVersion == 0 {
					t.tlsVersion = cs.Version
				}
				h2 = cs.NegotiatedProtocol == "h2"
			}
			t.mu.Unlock()
			if t.onConn != nil {
				t.onConn(h2)
			}
		},
		GotFirstResponseByte: func() { t.mark(&t.firstByte, false) },
	}
}

// mark sets *at to now: the first time only, or every time when last is set
// (happy eyeballs may start several connects; the last one to end counts).
func (t *tracer) mark(at *time.Time, last bool) {
	now := time.Now()
	t.mu.Lock()
	if last || at.IsZero() {
		*at = now
	}
	t.mu.Unlock()
}

// sent reports whether the request may have reached the server: it had a
// connection to be written on.
func (t *tracer) sent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gotConn
}

// describe fills the phase and connection facts of target.
func (t *tracer) describe(target *Target) {
	t.mu.Lock()
	defer t.mu.Unlock()
	target.TLSVersion = t.tlsVersion
	target.FreshConn = t.gotConn && !t.reused
	switch {
	case !t.firstByte.IsZero():
		target.Phase = PhaseBody
	case t.gotConn:
		target.Phase = PhaseResponse
	case !t.tlsStart.IsZero():
		target.Phase = PhaseTLS
	case !t.dnsStart.IsZero() && t.dnsDone.IsZero():
		target.Phase = PhaseDNS
	default:
		target.Phase = PhaseConnect
	}
}

// recordTiming copies the phases measured so far into res.Timing.
func (t *tracer) recordTiming(res *jobs.Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	span := func(a, b time.Time) float64 {
		if a.IsZero() || b.IsZero() || b.Before(a) {
			return 0
		}
		return jobs.Millis(b.Sub(a))
	}
	res.Timing.DNSMS = span(t.dnsStart, t.dnsDone)
	res.Timing.ConnectMS = span(t.connStart, t.connDone)
	res.Timing.TLSMS = span(t.tlsStart, t.tlsDone)
	res.Timing.TTFBMS = span(t.start, t.firstByte)
}

// maxRedirects bounds the redirects one attempt follows.
const maxRedirects = 5

// redirectPolicy keeps a redirected call within its connection's allowed
// hosts, and follows nothing unless the connection says so.
func redirectPolicy(call *jobs.Call, conn *catalog.Connection, base *url.URL) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !conn.FollowRedirects {
			return http.ErrUseLastResponse
		}
		if len(via) >= maxRedirects {
			return jobs.Errorf(jobs.CodeHTTPStatus, "the partner redirected call %s more than %d times; check the connection's base_url", call.ID, maxRedirects)
		}
		if req.URL.Scheme != "https" || !conn.HostAllowed(req.URL, base) {
			return jobs.Errorf(jobs.CodeHostNotAllowed,
				"the partner redirected to %s://%s, which connection %s does not allow; add the host to allow_hosts if the redirect is expected",
				req.URL.Scheme, req.URL.Host, call.Connection)
		}
		if conn.Auth != nil && !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
			// The connection's credentials are for the host the call
			// went to, not for every host it may be redirected to.
			for _, h := range conn.Auth.HeaderNames() {
				req.Header.Del(h)
			}
		}
		return nil
	}
}

// setBody stores body as res's body (Body when it is valid UTF-8, else
// BodyBase64) without copying it. body must be a buffer that readBody made
// for this response and that nothing else holds or changes: a response
// body is the largest thing a call carries, and a copy of it costs as much
// again (docs/BENCHMARKS.md, 64 KiB responses).
func setBody(res *jobs.Result, body []byte) {
	if utf8.Valid(body) {
		res.Body, res.BodyBase64 = unsafe.String(unsafe.SliceData(body), len(body)), nil
		return
	}
	res.Body, res.BodyBase64 = "", body
}
