package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/jobs/streams"
	"github.com/mtlsrelay/mtlsrelay/worker"
)

// obsConfig is a worker config for the observability tests: NAME names
// the worker, PARTNER is the partner's URL, CLOSED a port nothing listens
// on, TMP a folder with soon.pem (a certificate expiring in 10 days).
const obsConfig = `
worker:
  name: NAME
  concurrency: 4
  admin_addr: "off"
  retry_base: 20ms
  retry_max: 100ms
  ack_wait: 5s
  cert_expiry_warn_days: 30
log: {level: debug, format: json}
profiles:
  client: {keystore: "file:FIX/client.pem", truststore: "file:FIX/ca.pem"}
  p12:    {keystore: "file:FIX/client-openssl.p12", password: "value:fixture-pass-123", truststore: "file:FIX/ca.pem"}
  broken: {keystore: "file:FIX/client-openssl.p12", password: "value:not-the-password", truststore: "file:FIX/ca.pem"}
  soon:   {keystore: "file:TMP/soon.pem", truststore: "file:FIX/ca.pem"}
connections:
  metrics: {base_url: "PARTNER", profile: client, breaker_failures: -1}
  slow:    {base_url: "PARTNER", profile: p12}
  closed:  {base_url: "https://127.0.0.1:CLOSED/", profile: client, max_attempts: 2, breaker_failures: -1}
`

type obsEnv struct {
	natsURL string
	nc      *nats.Conn
	cfg     func(name string) string
}

func newObsEnv(t *testing.T) *obsEnv {
	t.Helper()
	srv := startNATS(t)
	p := startPartner(t)
	tmp := t.TempDir()
	writeTimedCert(t, filepath.Join(tmp, "soon.pem"), time.Now().Add(-time.Hour), time.Now().Add(10*24*time.Hour))
	closed := closedPort(t)
	nc, _ := connect(t, srv.ClientURL())
	return &obsEnv{natsURL: srv.ClientURL(), nc: nc, cfg: func(name string) string {
		return configYAML(t, obsConfig, "NAME", name, "PARTNER", "https://localhost:"+port(p.URL())+"/", "CLOSED", closed, "TMP", tmp)
	}}
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape fetches /metrics from an admin server and parses it.
func scrape(t *testing.T, url string) ([]sample, string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	var out []sample
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out = append(out, s)
	}
	return out, string(body)
}

func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
		s.name, rest = line[:i], line[i+1:]
		for !strings.HasPrefix(rest, "}") {
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return s, fmt.Errorf("bad labels")
			}
			key := strings.TrimPrefix(rest[:eq], ",")
			rest = rest[eq+2:]
			var val strings.Builder
			for i := 0; ; i++ {
				if i >= len(rest) {
					return s, fmt.Errorf("unterminated label value")
				}
				if rest[i] == '\\' && i+1 < len(rest) {
					val.WriteByte(rest[i+1])
					i++
					continue
				}
				if rest[i] == '"' {
					rest = strings.TrimPrefix(rest[i+1:], ",")
					break
				}
				val.WriteByte(rest[i])
			}
			s.labels[key] = val.String()
		}
		rest = strings.TrimSpace(rest[1:])
	} else {
		s.name, rest, _ = strings.Cut(line, " ")
	}
	v, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
	var err error
	s.value, err = strconv.ParseFloat(v, 64)
	return s, err
}

// value returns the sample of name whose labels include want, and whether
// there is one.
func value(samples []sample, name string, want map[string]string) (float64, bool) {
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		return s.value, true
	}
	return 0, false
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func leafOf(t *testing.T, pemFile string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			t.Fatalf("no certificate in %s", pemFile)
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

func TestObservabilityMetrics(t *testing.T) {
	env := newObsEnv(t)
	w, logs := startWorker(t, env.natsURL, env.cfg("obs-metrics"))
	admin := httptest.NewServer(w.AdminHandler())
	t.Cleanup(admin.Close)
	nc, js := connect(t, env.natsURL)

	for range 3 {
		if r := call(t, nc, js, "metrics", map[string]any{"path": "echo"}); !r.OK {
			t.Fatalf("ok call: %+v", r.Error)
		}
	}
	if r := call(t, nc, js, "metrics", map[string]any{"path": "status/404"}); r.OK || r.Status != 404 || r.Error != nil {
		t.Fatalf("404 call: ok=%v status=%d error=%+v", r.OK, r.Status, r.Error)
	}
	if r := call(t, nc, js, "closed", map[string]any{"path": "x"}); r.Error == nil || r.Error.Code != jobs.CodeConnectFailed || r.Attempt != 2 {
		t.Fatalf("closed call: %+v after %d attempts", r.Error, r.Attempt)
	}
	if r := call(t, nc, js, "no-such-connection", map[string]any{"path": "x"}); r.Error == nil || r.Error.Code != jobs.CodeUnknownConnection {
		t.Fatalf("unknown connection call: %+v", r.Error)
	}

	var samples []sample
	var body string
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		samples, body = scrape(t, admin.URL)
		// Profiles are loaded in the background at start; dead letters
		// are published after the result.
		for _, p := range []string{"client", "p12", "soon"} {
			if _, ok := value(samples, "mtlsrelay_keystore_loads_total", labels("profile", p, "result", "ok")); !ok {
				return errorf("profile %s not loaded yet", p)
			}
		}
		if _, ok := value(samples, "mtlsrelay_dead_letters_total", labels("connection", "_unknown")); !ok {
			return errorf("dead letter of the unknown connection not counted yet")
		}
		// A result is published, then its dead letter stored and the call
		// counted, off the handler: in-flight reaches 0 before that.
		if _, ok := value(samples, "mtlsrelay_dead_letters_total", labels("connection", "closed", "code", "connect_failed")); !ok {
			return errorf("dead letter of the closed connection not counted yet")
		}
		// A call's handler still dead-letters and acks after its result.
		if n, _ := value(samples, "mtlsrelay_calls_in_flight", nil); n != 0 {
			return errorf("%v calls still in flight", n)
		}
		// The last call's ack reaches the consumer after its handler
		// returned, and the gauge follows the consumer's info.
		if n, _ := value(samples, "mtlsrelay_consumer_ack_pending", nil); n != 0 {
			return errorf("%v calls awaiting their ack at the consumer", n)
		}
		return nil
	})

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mtlsrelay_calls_total", labels("connection", "metrics", "outcome", "ok", "code", ""), 3},
		{"mtlsrelay_calls_total", labels("connection", "metrics", "outcome", "not_ok", "code", "404"), 1},
		{"mtlsrelay_calls_total", labels("connection", "closed", "outcome", "error", "code", "connect_failed"), 1},
		{"mtlsrelay_calls_total", labels("connection", "_unknown", "outcome", "error", "code", "unknown_connection"), 1},
		{"mtlsrelay_call_phase_seconds_count", labels("connection", "metrics", "phase", "total"), 4},
		{"mtlsrelay_call_phase_seconds_count", labels("connection", "metrics", "phase", "queue"), 4},
		{"mtlsrelay_call_phase_seconds_count", labels("connection", "metrics", "phase", "ttfb"), 4},
		{"mtlsrelay_call_phase_seconds_count", labels("connection", "closed", "phase", "total"), 2},
		{"mtlsrelay_retries_total", labels("connection", "closed", "code", "connect_failed"), 1},
		{"mtlsrelay_dead_letters_total", labels("connection", "closed", "code", "connect_failed"), 1},
		{"mtlsrelay_dead_letters_total", labels("connection", "_unknown", "code", "unknown_connection"), 1},
		{"mtlsrelay_calls_in_flight", nil, 0},
		{"mtlsrelay_worker_concurrency", nil, 4},
		{"mtlsrelay_worker_info", labels("worker", "obs-metrics"), 1},
		{"mtlsrelay_keystore_loads_total", labels("profile", "client", "source", "file", "result", "ok"), 1},
		{"mtlsrelay_keystore_loads_total", labels("profile", "p12", "source", "file", "result", "ok"), 1},
		{"mtlsrelay_keystore_loads_total", labels("profile", "broken", "source", "file", "result", "error"), 1},
		{"mtlsrelay_client_cert_expiring", labels("profile", "soon"), 1},
		{"mtlsrelay_client_cert_expiring", labels("profile", "client"), 0},
		{"mtlsrelay_client_cert_expiry_warn_days", nil, 30},
		{"mtlsrelay_consumer_pending", nil, 0},
		{"mtlsrelay_consumer_ack_pending", nil, 0},
	} {
		got, ok := value(samples, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Only a new connection has DNS, connect and TLS phases.
	for _, phase := range []string{"dns", "connect", "tls"} {
		if n, _ := value(samples, "mtlsrelay_call_phase_seconds_count", labels("connection", "metrics", "phase", phase)); n < 1 || n > 4 {
			t.Errorf("phase %s observed %v times, want 1-4", phase, n)
		}
	}
	if sum, _ := value(samples, "mtlsrelay_call_phase_seconds_sum", labels("connection", "metrics", "phase", "total")); sum <= 0 || sum > 60 {
		t.Errorf("total phase sum = %v s", sum)
	}
	notAfter := leafOf(t, fixture(t, "client.pem")).NotAfter
	got, _ := value(samples, "mtlsrelay_client_cert_expiry_seconds", labels("profile", "client"))
	if want := time.Until(notAfter).Seconds(); math.Abs(got-want) > 60 {
		t.Errorf("client cert expiry = %.0f s, want about %.0f s (NotAfter %s)", got, want, notAfter)
	}
	if ts, _ := value(samples, "mtlsrelay_client_cert_not_after_timestamp_seconds", labels("profile", "client")); int64(ts) != notAfter.Unix() {
		t.Errorf("not_after timestamp = %v, want %d", ts, notAfter.Unix())
	}
	if _, ok := value(samples, "mtlsrelay_client_cert_expiry_seconds", labels("profile", "broken")); ok {
		t.Errorf("a profile that never loaded has an expiry")
	}
	for _, secret := range []string{fixturePassword, "not-the-password"} {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics contains a password")
		}
	}

	var warned bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"profile":"soon"`) && strings.Contains(line, "expires soon") {
			warned = true
		}
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"profile":"client"`) && strings.Contains(line, "expires soon") {
			t.Errorf("warned about a certificate far from expiry: %s", line)
		}
	}
	if !warned {
		t.Errorf("no warning about profile soon's certificate expiring in 10 days")
	}
}

func TestObservabilityTracing(t *testing.T) {
	env := newObsEnv(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg, err := worker.ParseConfig([]byte(env.cfg("obs-trace")))
	if err != nil {
		t.Fatal(err)
	}
	wnc, _ := connect(t, env.natsURL)
	w, err := worker.New(cfg, wnc, worker.WithTracerProvider(tp), worker.WithLogger(zerolog.New(io.Discard)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !w.Ready() {
			return errorf("worker not ready")
		}
		return nil
	})
	nc, js := connect(t, env.natsURL)

	check := func(t *testing.T, mode string, send func(flowTP string) (*nats.Msg, trace.SpanKind)) {
		flowTrace, flowSpan := randomHex(16), randomHex(8)
		msg, wantKind := send("00-" + flowTrace + "-" + flowSpan + "-01")
		var res jobs.Result
		if err := json.Unmarshal(msg.Data, &res); err != nil {
			t.Fatal(err)
		}
		e := decodeEcho(t, &res)
		resTrace, resSpan := splitTraceparent(t, msg.Header.Get("traceparent"))
		if resTrace != flowTrace || resSpan == flowSpan {
			t.Errorf("%s result traceparent %s-%s, want trace %s and the worker's span", mode, resTrace, resSpan, flowTrace)
		}
		var sent string
		if v := e.Headers["Traceparent"]; len(v) == 1 {
			sent = v[0]
		}
		httpTrace, httpSpanID := splitTraceparent(t, sent)
		if httpTrace != flowTrace {
			t.Errorf("partner got traceparent %q, want trace %s", sent, flowTrace)
		}

		var call, attempt, httpSpan tracetest.SpanStub
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			call, attempt, httpSpan = tracetest.SpanStub{}, tracetest.SpanStub{}, tracetest.SpanStub{}
			for _, s := range exp.GetSpans() {
				if s.SpanContext.TraceID().String() != flowTrace {
					continue
				}
				switch {
				case s.Name == "mtlsrelay.call":
					call = s
				case s.Name == "mtlsrelay.attempt":
					attempt = s
				case s.SpanKind == trace.SpanKindClient:
					httpSpan = s
				}
			}
			if call.Name == "" || attempt.Name == "" || httpSpan.Name == "" {
				return errorf("spans call %q attempt %q http %q", call.Name, attempt.Name, httpSpan.Name)
			}
			return nil
		})
		if call.Parent.SpanID().String() != flowSpan || !call.Parent.IsRemote() || call.SpanKind != wantKind {
			t.Errorf("call span: parent %s (remote %v), kind %v; want the flow's span %s, kind %v", call.Parent.SpanID(), call.Parent.IsRemote(), call.SpanKind, flowSpan, wantKind)
		}
		if attempt.Parent.SpanID() != call.SpanContext.SpanID() {
			t.Errorf("attempt span's parent is %s, want the call span %s", attempt.Parent.SpanID(), call.SpanContext.SpanID())
		}
		if httpSpan.Parent.SpanID() != attempt.SpanContext.SpanID() || httpSpan.Name != "GET" {
			t.Errorf("HTTP span %q's parent is %s, want GET under the attempt span %s", httpSpan.Name, httpSpan.Parent.SpanID(), attempt.SpanContext.SpanID())
		}
		if httpSpanID != httpSpan.SpanContext.SpanID().String() {
			t.Errorf("partner got span %s, want the HTTP span %s", httpSpanID, httpSpan.SpanContext.SpanID())
		}
		if resSpan != call.SpanContext.SpanID().String() {
			t.Errorf("result names span %s, want the call span %s", resSpan, call.SpanContext.SpanID())
		}
		events := map[string]bool{}
		for _, ev := range attempt.Events {
			events[ev.Name] = true
		}
		if !events["ttfb"] {
			t.Errorf("attempt span events %v lack ttfb", events)
		}
		var status int64
		for _, a := range httpSpan.Attributes {
			if a.Key == "http.response.status_code" {
				status = a.Value.AsInt64()
			}
		}
		if status != 200 {
			t.Errorf("HTTP span status code attribute = %d, want 200", status)
		}
	}

	t.Run("ok/durable", func(t *testing.T) {
		check(t, "durable", func(tp string) (*nats.Msg, trace.SpanKind) {
			id := uniqueID(t.Name())
			reply := "mtlsrelay.results.test." + id
			sub, err := nc.SubscribeSync(reply)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			m := nats.NewMsg("mtlsrelay.calls.metrics")
			m.Data, _ = json.Marshal(map[string]any{"id": id, "reply_to": reply, "path": "echo"})
			m.Header.Set("traceparent", tp)
			if _, err := js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			got, err := sub.NextMsg(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return got, trace.SpanKindConsumer
		})
		// The first attempt opened a connection: its phases are events.
		for _, s := range exp.GetSpans() {
			if s.Name != "mtlsrelay.attempt" {
				continue
			}
			names := map[string]bool{}
			for _, ev := range s.Events {
				names[ev.Name] = true
			}
			if !names["tls"] || !names["connect"] {
				t.Errorf("first attempt's events %v lack connect and tls", names)
			}
			break
		}
	})
	t.Run("ok/direct", func(t *testing.T) {
		check(t, "direct", func(tp string) (*nats.Msg, trace.SpanKind) {
			m := nats.NewMsg("mtlsrelay.rpc.metrics")
			m.Data, _ = json.Marshal(map[string]any{"id": uniqueID(t.Name()), "path": "echo"})
			m.Header.Set("traceparent", tp)
			got, err := nc.RequestMsg(m, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return got, trace.SpanKindServer
		})
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// splitTraceparent returns the trace and parent ids of a W3C traceparent.
func splitTraceparent(t *testing.T, tp string) (traceID, spanID string) {
	t.Helper()
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 {
		t.Errorf("traceparent %q is not W3C version 00", tp)
		return "", ""
	}
	return parts[1], parts[2]
}

func TestObservabilityMicroDiscovery(t *testing.T) {
	env := newObsEnv(t)
	nc, js := connect(t, env.natsURL)
	ctx := context.Background()

	// No worker yet: calls wait in the consumer.
	if _, err := streams.Ensure(ctx, js, streams.Options{AckWait: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	var replies []*nats.Subscription
	for range 2 {
		id := uniqueID(t.Name())
		sub, err := nc.SubscribeSync("mtlsrelay.results.test." + id)
		if err != nil {
			t.Fatal(err)
		}
		replies = append(replies, sub)
		m := nats.NewMsg("mtlsrelay.calls.metrics")
		m.Data, _ = json.Marshal(map[string]any{"id": id, "reply_to": sub.Subject, "path": "echo"})
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer counts a stored call a moment after the publish's ack.
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		fleet, err := worker.FleetStatus(ctx, nc, worker.FleetOptions{Wait: 200 * time.Millisecond})
		if err != nil {
			return err
		}
		if len(fleet.Workers) != 0 || fleet.Consumer == nil || fleet.Consumer.Pending != 2 {
			return errorf("before workers: %d workers, consumer %+v (%s); want none and 2 pending", len(fleet.Workers), fleet.Consumer, fleet.ConsumerError)
		}
		return nil
	})

	wa, _ := startWorker(t, env.natsURL, env.cfg("obs-a"))
	wb, _ := startWorker(t, env.natsURL, env.cfg("obs-b"))
	for _, sub := range replies {
		if _, err := sub.NextMsg(30 * time.Second); err != nil {
			t.Fatalf("pending call not done once workers started: %v", err)
		}
	}

	// A slow call shows as in flight on one worker.
	slowID := uniqueID(t.Name())
	slowSub, err := nc.SubscribeSync("mtlsrelay.results.test." + slowID)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("mtlsrelay.calls.slow")
	m.Data, _ = json.Marshal(map[string]any{"id": slowID, "reply_to": slowSub.Subject, "path": "slow", "query": map[string][]string{"ms": {"3000"}}})
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		f, err := worker.FleetStatus(ctx, nc, worker.FleetOptions{Wait: 500 * time.Millisecond})
		if err != nil {
			return err
		}
		var inflight int64
		for _, w := range f.Workers {
			inflight += w.InFlight
		}
		if inflight != 1 {
			return errorf("%d calls in flight, want 1", inflight)
		}
		var gauge float64
		for _, w := range []*worker.Worker{wa, wb} {
			srv := httptest.NewServer(w.AdminHandler())
			s, _ := scrape(t, srv.URL)
			srv.Close()
			v, _ := value(s, "mtlsrelay_calls_in_flight", nil)
			gauge += v
		}
		if gauge != 1 {
			return errorf("mtlsrelay_calls_in_flight adds up to %v, want 1", gauge)
		}
		return nil
	})
	if m, err := slowSub.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("slow call: %v", err)
	} else if r, err := jobs.DecodeResult(m.Data); err != nil || !r.OK {
		t.Fatalf("slow call: %v %s", err, m.Data)
	}

	var fleet *worker.Fleet
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		f, err := worker.FleetStatus(ctx, nc, worker.FleetOptions{})
		if err != nil {
			return err
		}
		fleet = f
		if len(f.Workers) != 2 || f.Workers[0].Worker != "obs-a" || f.Workers[1].Worker != "obs-b" {
			return errorf("workers %+v, want obs-a and obs-b", f.Workers)
		}
		var ok uint64
		for _, w := range f.Workers {
			ok += w.Handled.OK
			if w.Error != "" || !w.Ready || w.Concurrency != 4 || w.InFlight != 0 || len(w.Connections) != 3 {
				return errorf("worker %+v", w)
			}
			if p := profileOf(w, "client"); p == nil || p.NotAfter.IsZero() || p.Expiring {
				return errorf("worker %s profile client: %+v", w.Worker, p)
			}
			if p := profileOf(w, "soon"); p == nil || !p.Expiring || p.Expired || p.ExpiresInSeconds > 10*24*3600 {
				return errorf("worker %s profile soon: %+v", w.Worker, p)
			}
			if p := profileOf(w, "broken"); p == nil || p.LastError == nil || p.LastError.Code != jobs.CodeKeystorePasswordWrong {
				return errorf("worker %s profile broken: %+v", w.Worker, p)
			}
		}
		if ok != 3 {
			return errorf("workers handled %d ok calls, want 3", ok)
		}
		if c := f.Consumer; c == nil || c.Pending != 0 || c.AckPending != 0 {
			return errorf("consumer %+v", c)
		}
		return nil
	})

	// The micro API: INFO names the worker, STATS counts what it handled.
	var handled worker.Handled
	for _, ws := range fleet.Workers {
		subj, _ := micro.ControlSubject(micro.InfoVerb, worker.ServiceName, ws.InstanceID)
		m, err := nc.Request(subj, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatal(err)
		}
		if info.Metadata["worker"] != ws.Worker || info.Metadata["concurrency"] != "4" || len(info.Endpoints) != 1 ||
			info.Endpoints[0].Subject != worker.StatusSubject("", ws.Worker) {
			t.Errorf("info %+v", info)
		}
		subj, _ = micro.ControlSubject(micro.StatsVerb, worker.ServiceName, ws.InstanceID)
		if m, err = nc.Request(subj, nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var stats micro.Stats
		if err := json.Unmarshal(m.Data, &stats); err != nil || len(stats.Endpoints) != 1 {
			t.Fatalf("stats %s: %v", m.Data, err)
		}
		var h worker.Handled
		if err := json.Unmarshal(stats.Endpoints[0].Data, &h); err != nil {
			t.Fatalf("stats data %s: %v", stats.Endpoints[0].Data, err)
		}
		handled.OK += h.OK
	}
	if handled.OK != 3 {
		t.Errorf("$SRV.STATS count %d ok calls, want 3", handled.OK)
	}

	// The command line.
	bin := mtlsrelayBinary(t)
	out, err := exec.Command(bin, "status", "--nats", env.natsURL, "--json").Output()
	if err != nil {
		t.Fatalf("mtlsrelay status --json: %v", err)
	}
	var got worker.Fleet
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("status --json output: %v\n%s", err, out)
	}
	if len(got.Workers) != 2 || got.Consumer == nil {
		t.Errorf("status --json: %s", out)
	}
	out, err = exec.Command(bin, "status", "--nats", env.natsURL).CombinedOutput()
	if err != nil {
		t.Fatalf("mtlsrelay status: %v\n%s", err, out)
	}
	for _, want := range []string{"WORKERS (2)", "obs-a", "obs-b", "pending", "CERTIFICATES", "expiring soon", "keystore_password_wrong"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{fixturePassword, "not-the-password"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("status output contains a password")
		}
	}
}

func profileOf(w worker.WorkerStatus, name string) *worker.ProfileStatus {
	for i := range w.Profiles {
		if w.Profiles[i].Profile == name {
			return &w.Profiles[i]
		}
	}
	return nil
}

// The real binary: OTEL_* variables turn tracing on, spans reach an OTLP
// collector, and /metrics is served on the admin address.
func TestObservabilityServeProcess(t *testing.T) {
	env := newObsEnv(t)
	traceID := randomHex(16)
	want, _ := hex.DecodeString(traceID)
	var mu sync.Mutex
	var exported bool
	collector := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" &&
			bytes.Contains(body, want) && bytes.Contains(body, []byte("mtlsrelay.call")) {
			mu.Lock()
			exported = true
			mu.Unlock()
		}
		rw.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	adminAddr := "127.0.0.1:" + closedPort(t)
	cfgPath := filepath.Join(t.TempDir(), "worker.yaml")
	cfg := strings.Replace(env.cfg("obs-process"), `admin_addr: "off"`, "admin_addr: "+adminAddr, 1)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startWorkerProcess(t, env.natsURL, cfgPath, "obs-process",
		"OTEL_TRACES_EXPORTER=", "OTEL_SDK_DISABLED=", "OTEL_EXPORTER_OTLP_PROTOCOL=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+collector.URL, "OTEL_BSP_SCHEDULE_DELAY=50")
	if !strings.Contains(p.logs.String(), "tracing on") {
		t.Errorf("worker did not log that tracing is on:\n%s", p.logs.String())
	}
	nc, js := connect(t, env.natsURL)
	id := uniqueID(t.Name())
	sub, err := nc.SubscribeSync("mtlsrelay.results.test." + id)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("mtlsrelay.calls.metrics")
	m.Data, _ = json.Marshal(map[string]any{"id": id, "reply_to": sub.Subject, "path": "echo"})
	m.Header.Set("traceparent", "00-"+traceID+"-"+randomHex(8)+"-01")
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	res, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := splitTraceparent(t, res.Header.Get("traceparent")); got != traceID {
		t.Errorf("result traceparent %q, want trace %s", res.Header.Get("traceparent"), traceID)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !exported {
			return errorf("the collector received no span of trace %s", traceID)
		}
		return nil
	})
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		samples, _ := scrape(t, "http://"+adminAddr)
		if v, _ := value(samples, "mtlsrelay_calls_total", labels("connection", "metrics", "outcome", "ok")); v != 1 {
			return errorf("mtlsrelay_calls_total{connection=metrics,outcome=ok} = %v, want 1", v)
		}
		return nil
	})
}
