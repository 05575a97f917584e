package outbound

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// instrumentationName names the tracer of the request spans.
const instrumentationName = "github.com/mtlsrelay/mtlsrelay/outbound"

// attrPhaseMS is the duration of a phase (dns, connect, tls, ttfb) on the
// events added to the attempt's span.
const attrPhaseMS = attribute.Key("mtlsrelay.duration_ms")

// propagator writes the request span's W3C trace context into the
// partner request's headers.
var propagator = propagation.TraceContext{}

// httpSpan is the client span of one HTTP request of an attempt.
type httpSpan struct {
	ctx    context.Context
	parent trace.Span // the attempt's span
	span   trace.Span // nil when only passing a flow's context on
	tr     *tracer
}

// startHTTPSpan starts the client span of an attempt's request to u, as the
// child of the attempt span in ctx. It returns nil, and costs nothing, when
// ctx carries no trace context.
func startHTTPSpan(ctx context.Context, method string, u *url.URL, tr *tracer) (context.Context, *httpSpan) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, nil
	}
	hs := &httpSpan{ctx: ctx, parent: parent, tr: tr}
	if !parent.IsRecording() {
		return ctx, hs
	}
	port, _ := strconv.Atoi(u.Port())
	if port == 0 {
		port = 443
	}
	// The query is left out of url.full: it may hold a partner's API key.
	full := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
	hs.ctx, hs.span = parent.TracerProvider().Tracer(instrumentationName).Start(ctx, method,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.URLFull(full),
			semconv.ServerAddress(u.Hostname()),
			semconv.ServerPort(port),
		))
	return hs.ctx, hs
}

// inject writes the request span's context into the request's headers.
func (hs *httpSpan) inject(h http.Header) {
	if hs == nil {
		return
	}
	propagator.Inject(hs.ctx, propagation.HeaderCarrier(h))
}

// end adds the phases to the attempt's span as events and ends the
// request's span with the attempt's outcome.
func (hs *httpSpan) end(out *Outcome) {
	if hs == nil || hs.span == nil {
		return
	}
	hs.tr.mu.Lock()
	phases := [...]struct {
		name       string
		start, end time.Time
	}{
		{"dns", hs.tr.dnsStart, hs.tr.dnsDone},
		{"connect", hs.tr.connStart, hs.tr.connDone},
		{"tls", hs.tr.tlsStart, hs.tr.tlsDone},
		{"ttfb", hs.tr.start, hs.tr.firstByte},
	}
	version := hs.tr.tlsVersion
	hs.tr.mu.Unlock()
	for _, p := range phases {
		if p.start.IsZero() || p.end.IsZero() || p.end.Before(p.start) {
			continue
		}
		hs.parent.AddEvent(p.name, trace.WithTimestamp(p.end),
			trace.WithAttributes(attrPhaseMS.Float64(jobs.Millis(p.end.Sub(p.start)))))
	}
	if version != 0 {
		hs.span.SetAttributes(semconv.TLSProtocolVersion(strings.TrimPrefix(tls.VersionName(version), "TLS ")))
	}
	if res := out.Result; res != nil {
		if res.Status != 0 {
			hs.span.SetAttributes(semconv.HTTPResponseStatusCode(res.Status))
		}
		switch {
		case res.Error != nil:
			hs.span.SetAttributes(semconv.ErrorTypeKey.String(string(res.Error.Code)))
			hs.span.SetStatus(codes.Error, string(res.Error.Code))
		case res.Status >= 400:
			hs.span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(res.Status)))
			hs.span.SetStatus(codes.Error, "HTTP "+strconv.Itoa(res.Status))
		}
	}
	hs.span.End()
}
