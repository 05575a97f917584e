package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/client"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// caller makes one call and returns when its outcome is known: nil for the
// expected 200 response, and where the time went when the path knows.
type caller interface {
	call(ctx context.Context) (stages, error)
}

// stages splits a relay call's latency: enqueue (publish until JetStream's
// ack), queued (stored until a worker started it, the result's queued_ms),
// attempt (the HTTP exchange, total_ms); the rest of the latency is the
// result's way back (publish, delivery, decoding).
type stages struct {
	enqueue, queued, attempt time.Duration
}

// directCaller makes the request itself, as a flow with its own mTLS client
// would: the ceiling the relay is compared with.
type directCaller struct {
	client    *http.Client
	transport *http.Transport
	url       string
	shape     requestShape
	timeout   time.Duration
}

// newDirectCaller builds an HTTP client configured as the worker's
// transport is (outbound/transport.go): the profile's tls.Config (client
// certificate, truststore, session cache), HTTP/2 when the partner offers
// it, a keep-alive pool as large as the calls in flight, no redirects.
func newDirectCaller(baseURL string, mat *secrets.Material, o Options) *directCaller {
	dialer := &net.Dialer{Timeout: outbound.DefaultDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:            dialer.DialContext,
		TLSClientConfig:        mat.Config.Clone(),
		TLSHandshakeTimeout:    outbound.DefaultTLSHandshakeTimeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    o.inflight(),
		IdleConnTimeout:        outbound.DefaultIdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	shape := shapeOf(o)
	u := baseURL + "/" + shape.path
	if n, ok := shape.query["n"]; ok {
		u += "?n=" + n[0]
	}
	return &directCaller{
		client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		transport: tr,
		url:       u,
		shape:     shape,
		timeout:   o.CallTimeout,
	}
}

func (d *directCaller) call(ctx context.Context) (stages, error) {
	return stages{}, d.do(ctx)
}

func (d *directCaller) do(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var body io.Reader
	if d.shape.body != nil {
		body = bytes.NewReader(d.shape.body)
	}
	req, err := http.NewRequestWithContext(ctx, d.shape.method, d.url, body)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", outbound.DefaultUserAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: status %d", errBadResponse, resp.StatusCode)
	}
	if d.shape.wantLen >= 0 && len(b) != d.shape.wantLen {
		return fmt.Errorf("%w: %d body bytes, want %d", errBadResponse, len(b), d.shape.wantLen)
	}
	return nil
}

// relayCaller enqueues the call on JetStream with client.Client.Enqueue and
// waits for its result, which a core subscription on the run's result
// subjects hands over. Each call id is counted once: a second result for
// an id (a redelivery) finds no waiter and is dropped.
type relayCaller struct {
	client      *client.Client
	runID       string
	replyPrefix string // <prefix>.results.bench.<run>.
	shape       requestShape
	headers     map[string][]string
	idempotent  *bool
	timeout     time.Duration

	seq        atomic.Uint64
	pending    sync.Map // call id -> chan *nats.Msg
	duplicates atomic.Int64
}

func newRelayCaller(client *client.Client, o Options, runID string) *relayCaller {
	r := &relayCaller{
		client:      client,
		runID:       runID,
		replyPrefix: client.Subjects().Result("bench." + runID + "."),
		shape:       shapeOf(o),
		timeout:     o.CallTimeout,
	}
	if r.shape.body != nil {
		r.headers = map[string][]string{"Content-Type": {"application/octet-stream"}}
	}
	if !o.NonIdempotent {
		yes := true
		r.idempotent = &yes
	}
	return r
}

// errNoResult is a call whose result did not come back in time.
var errNoResult = errors.New("no result within the call timeout")

func (r *relayCaller) call(ctx context.Context) (stages, error) {
	_, st, err := r.roundTrip(ctx)
	return st, err
}

// roundTrip enqueues one call and waits for its result.
func (r *relayCaller) roundTrip(ctx context.Context) (resultStatus, stages, error) {
	start := time.Now()
	id := "bench-" + r.runID + "-" + strconv.FormatUint(r.seq.Add(1), 10)
	ch := make(chan *nats.Msg, 1)
	r.pending.Store(id, ch)
	// Query and headers are shared: Enqueue reads them, never writes.
	c := &jobs.Call{
		ID:         id,
		Connection: benchConnection,
		Method:     r.shape.method,
		Path:       r.shape.path,
		Query:      r.shape.query,
		Headers:    r.headers,
		Body:       string(r.shape.body),
		Idempotent: r.idempotent,
		ReplyTo:    r.replyPrefix + id,
	}
	if _, err := r.client.Enqueue(ctx, c); err != nil {
		r.pending.Delete(id)
		return resultStatus{}, stages{}, fmt.Errorf("enqueue: %w", err)
	}
	st := stages{enqueue: time.Since(start)}
	t := time.NewTimer(r.timeout + 5*time.Second)
	defer t.Stop()
	select {
	case m := <-ch:
		rs, err := checkResult(m.Data)
		st.queued, st.attempt = fromMillis(rs.Timing.QueuedMS), fromMillis(rs.Timing.TotalMS)
		return rs, st, err
	case <-t.C:
		r.pending.Delete(id)
		return resultStatus{}, st, errNoResult
	case <-ctx.Done():
		r.pending.Delete(id)
		return resultStatus{}, st, ctx.Err()
	}
}

// deliver is the result subscription's handler: it hands the message to
// the call waiting for it, and does nothing else, so one slow decode does
// not hold up the others.
func (r *relayCaller) deliver(m *nats.Msg) {
	id := m.Header.Get(jobs.HeaderCallID)
	if v, ok := r.pending.LoadAndDelete(id); ok {
		v.(chan *nats.Msg) <- m
		return
	}
	r.duplicates.Add(1)
}

// resultStatus is the part of a result the bench checks. A flow decodes at
// least this much, so the bench pays for it on the relay's side.
type resultStatus struct {
	OK     bool        `json:"ok"`
	Status int         `json:"status"`
	Error  *jobs.Error `json:"error"`
	Timing jobs.Timing `json:"timing"`
	// BodyRef names the body kept in the Object Store (large bodies).
	BodyRef *jobs.BodyRef `json:"body_ref"`
}

func checkResult(data []byte) (resultStatus, error) {
	var rs resultStatus
	if err := json.Unmarshal(data, &rs); err != nil {
		return rs, fmt.Errorf("decode result: %w", err)
	}
	switch {
	case rs.Error != nil:
		return rs, fmt.Errorf("%w: %s: %s", errBadResponse, rs.Error.Code, rs.Error.Message)
	case !rs.OK || rs.Status != http.StatusOK:
		return rs, fmt.Errorf("%w: status %d", errBadResponse, rs.Status)
	}
	return rs, nil
}

func fromMillis(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
