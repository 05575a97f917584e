package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// The peer phase runs the same load through Benthos v4 (BenthosTool), a
// general-purpose stream processor doing the relay's job with a pipeline
// of three components: a nats_jetstream input (a durable consumer on a
// work-queue stream of its own), an http processor (the same client
// certificate and truststore as the worker's profile) and a nats_jetstream
// output to a results stream of its own. Its process's CPU per call, on the
// same machine, NATS server and partner, is the figure to set the worker's
// next to.
//
// A call is a JetStream message on peerCallSubject whose data is the
// request body and whose headers carry the call id, the URL and the
// subject of its result; the result is the response body, published by
// Benthos to that subject (kept in peerResultsStream) with the call id and
// the response status in its headers. The flow waits for it on a core
// subscription, as the relay's flow does.
const (
	peerCallsStream   = "BENCH_PEER_CALLS"
	peerResultsStream = "BENCH_PEER_RESULTS"
	peerCallSubject   = "bench.peer.calls"
	peerResultsPrefix = "bench.peer.results."
	peerDurable       = "benthos"

	// Headers of a peer call (metadata in Benthos) and of its result.
	peerHeaderURL     = "Bench-Url"
	peerHeaderReplyTo = "Bench-Reply-To"
	peerHeaderStatus  = "Bench-Status"
)

// peerConfig holds what the Benthos config names.
type peerConfig struct {
	NATSURL     string
	Threads     int // pipeline threads, and the output's max_in_flight
	MaxAckPend  int // the input consumer's max_ack_pending
	Method      string
	ContentType string // of the request, when it has a body
	Timeout     time.Duration
	CAFile      string // the partner's CA (the profile's truststore)
	CertFile    string // the client certificate and its key, PEM
	KeyFile     string
}

// yaml is the Benthos config: the relay's job in three components.
func (c peerConfig) yaml() string {
	var b strings.Builder
	q := strconv.Quote
	fmt.Fprintf(&b, "http:\n  enabled: false\n")
	fmt.Fprintf(&b, "logger:\n  level: WARN\n  format: logfmt\n")
	fmt.Fprintf(&b, "metrics:\n  none: {}\n")
	fmt.Fprintf(&b, "input:\n  nats_jetstream:\n")
	fmt.Fprintf(&b, "    urls: [%s]\n", q(c.NATSURL))
	fmt.Fprintf(&b, "    stream: %s\n    subject: %s\n    durable: %s\n    deliver: all\n", peerCallsStream, peerCallSubject, peerDurable)
	fmt.Fprintf(&b, "    ack_wait: %s\n    max_ack_pending: %d\n", q((c.Timeout + 30*time.Second).String()), c.MaxAckPend)
	fmt.Fprintf(&b, "pipeline:\n  threads: %d\n  processors:\n    - http:\n", c.Threads)
	fmt.Fprintf(&b, "        url: %s\n        verb: %s\n", q(`${! meta("`+peerHeaderURL+`") }`), c.Method)
	fmt.Fprintf(&b, "        headers:\n          User-Agent: %s\n", q("mtlsrelay-bench-peer"))
	if c.ContentType != "" {
		fmt.Fprintf(&b, "          Content-Type: %s\n", q(c.ContentType))
	}
	// One attempt, as the relay's bench connection (max_attempts: 1).
	fmt.Fprintf(&b, "        timeout: %s\n        retries: 0\n", q(c.Timeout.String()))
	fmt.Fprintf(&b, "        tls:\n          enabled: true\n          root_cas_file: %s\n", q(c.CAFile))
	fmt.Fprintf(&b, "          client_certs:\n            - cert_file: %s\n              key_file: %s\n", q(c.CertFile), q(c.KeyFile))
	fmt.Fprintf(&b, "output:\n  nats_jetstream:\n")
	fmt.Fprintf(&b, "    urls: [%s]\n", q(c.NATSURL))
	fmt.Fprintf(&b, "    subject: %s\n", q(`${! meta("`+peerHeaderReplyTo+`") }`))
	fmt.Fprintf(&b, "    headers:\n      %s: %s\n      %s: %s\n",
		jobs.HeaderCallID, q(`${! meta("`+jobs.HeaderCallID+`") }`),
		peerHeaderStatus, q(`${! meta("http_status_code").or("0") }`))
	fmt.Fprintf(&b, "    max_in_flight: %d\n", c.Threads)
	return b.String()
}

// peerThreads is the Benthos pipeline's threads: 64, or the calls in
// flight when more, so that Benthos can keep them all going.
func peerThreads(o Options) int { return max(64, o.inflight()) }

// createPeerStreams creates the peer's streams: a work queue of calls and
// a results stream, both on file storage as the relay's.
func createPeerStreams(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: peerCallsStream, Subjects: []string{peerCallSubject}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", peerCallsStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: peerResultsStream, Subjects: []string{peerResultsPrefix + ">"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, MaxAge: time.Hour,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", peerResultsStream, err)
	}
	return nil
}

// startPeer writes the Benthos config, starts Benthos and waits until its
// consumer is on the calls stream.
func (r *rig) startPeer(ctx context.Context, progress func(string, ...any)) error {
	bin, err := BenthosTool().Build(progress)
	if err != nil {
		return fmt.Errorf("the peer phase needs Benthos (--peer=false leaves it out): %w", err)
	}
	js, err := jetstream.New(r.flowNC)
	if err != nil {
		return err
	}
	if err := createPeerStreams(ctx, js); err != nil {
		return err
	}
	cfg := r.peerConfig()
	path := filepath.Join(r.dir, "benthos.yaml")
	if err := os.WriteFile(path, []byte(cfg.yaml()), 0o600); err != nil {
		return err
	}
	c, err := startChild("benthos", exec.Command(bin, "-c", path))
	if err != nil {
		return err
	}
	r.benthos = c
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.exitedErr(); err != nil {
			return err
		}
		// Benthos makes a push consumer, which js.Consumer does not return:
		// the stream's count of consumers says it is there.
		if s, err := js.Stream(ctx, peerCallsStream); err == nil {
			if info, err := s.Info(ctx); err == nil && info.State.Consumers > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("benthos: no consumer %s on stream %s after 30s:\n%s", peerDurable, peerCallsStream, c.output.String())
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	if r.peer, err = newPeerCaller(r.flowNC, js, r.partner.URL(), r.o, r.relay.runID); err != nil {
		return err
	}
	return nil
}

// peerConfig is the run's Benthos config.
func (r *rig) peerConfig() peerConfig {
	shape := shapeOf(r.o)
	c := peerConfig{
		NATSURL: r.url, Threads: peerThreads(r.o), MaxAckPend: peerThreads(r.o),
		Method: shape.method, Timeout: r.o.CallTimeout,
		CAFile: r.caFile, CertFile: r.clientCertFile, KeyFile: r.clientKeyFile,
	}
	if shape.body != nil {
		c.ContentType = "application/octet-stream"
	}
	return c
}

// peerCaller publishes calls for Benthos on JetStream and waits for their
// results on a core subscription, each call id counted once.
type peerCaller struct {
	js          jetstream.JetStream
	sub         *nats.Subscription
	replyPrefix string
	runID       string
	url         string
	shape       requestShape
	timeout     time.Duration

	seq        atomic.Uint64
	pending    sync.Map // call id -> chan *nats.Msg
	duplicates atomic.Int64
}

func newPeerCaller(nc *nats.Conn, js jetstream.JetStream, baseURL string, o Options, runID string) (*peerCaller, error) {
	shape := shapeOf(o)
	u := baseURL + "/" + shape.path
	if n, ok := shape.query["n"]; ok {
		u += "?n=" + n[0]
	}
	p := &peerCaller{js: js, replyPrefix: peerResultsPrefix + runID + ".", runID: runID, url: u, shape: shape, timeout: o.CallTimeout}
	var err error
	withPart(partFlow, func() { p.sub, err = nc.Subscribe(p.replyPrefix+">", p.deliver) })
	if err != nil {
		return nil, fmt.Errorf("subscribe to the peer's results: %w", err)
	}
	if err := p.sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *peerCaller) call(ctx context.Context) (stages, error) {
	id := "peer-" + p.runID + "-" + strconv.FormatUint(p.seq.Add(1), 10)
	ch := make(chan *nats.Msg, 1)
	p.pending.Store(id, ch)
	msg := nats.NewMsg(peerCallSubject)
	msg.Header.Set(jobs.HeaderCallID, id)
	msg.Header.Set(jobs.HeaderMsgID, id)
	msg.Header.Set(peerHeaderURL, p.url)
	msg.Header.Set(peerHeaderReplyTo, p.replyPrefix+id)
	msg.Data = p.shape.body
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		p.pending.Delete(id)
		return stages{}, fmt.Errorf("publish: %w", err)
	}
	t := time.NewTimer(p.timeout + 5*time.Second)
	defer t.Stop()
	select {
	case m := <-ch:
		return stages{}, p.check(m)
	case <-t.C:
		p.pending.Delete(id)
		return stages{}, errNoResult
	case <-ctx.Done():
		p.pending.Delete(id)
		return stages{}, ctx.Err()
	}
}

// check accepts a result of status 200 whose body has the expected size.
func (p *peerCaller) check(m *nats.Msg) error {
	if st := m.Header.Get(peerHeaderStatus); st != strconv.Itoa(http.StatusOK) {
		return fmt.Errorf("%w: status %q", errBadResponse, st)
	}
	if p.shape.wantLen >= 0 && len(m.Data) != p.shape.wantLen {
		return fmt.Errorf("%w: %d body bytes, want %d", errBadResponse, len(m.Data), p.shape.wantLen)
	}
	return nil
}

func (p *peerCaller) deliver(m *nats.Msg) {
	id := m.Header.Get(jobs.HeaderCallID)
	if v, ok := p.pending.LoadAndDelete(id); ok {
		v.(chan *nats.Msg) <- m
		return
	}
	p.duplicates.Add(1)
}
