package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// instrumentationName names the tracer of the worker's spans.
const instrumentationName = "github.com/mtlsrelay/mtlsrelay/worker"

// Span names. A call span (one per delivery of a durable call, one per
// direct call) is the child of the flow's span named by the call message's
// traceparent; each attempt is its child, and the HTTP request the
// attempt's child.
const (
	spanCall    = "mtlsrelay.call"
	spanAttempt = "mtlsrelay.attempt"
)

// Attribute keys of mtlsrelay's own span attributes.
const (
	attrCallID     = attribute.Key("mtlsrelay.call.id")
	attrConnection = attribute.Key("mtlsrelay.connection")
	attrWorker     = attribute.Key("mtlsrelay.worker")
	attrDelivery   = attribute.Key("mtlsrelay.delivery")
	attrAttempt    = attribute.Key("mtlsrelay.attempt")
	attrOutcome    = attribute.Key("mtlsrelay.outcome")
	attrRetryIn    = attribute.Key("mtlsrelay.retry_in_ms")
	attrPhaseMS    = attribute.Key("mtlsrelay.duration_ms")
)

// propagator reads and writes W3C trace context (traceparent, tracestate).
var propagator = propagation.TraceContext{}

// WithTracerProvider makes the worker trace its calls with tp: a span per
// call, a child span per attempt with the phases (dns, connect, tls, ttfb)
// as events, and a client span per HTTP request, whose context goes to the
// partner in the traceparent header. Without it the worker records no
// spans but still passes a call's traceparent on to the result.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(w *Worker) {
		if tp != nil {
			w.tracer = tp.Tracer(instrumentationName, trace.WithInstrumentationVersion(Version()))
		}
	}
}

// natsCarrier adapts a nats.Header to propagation.TextMapCarrier, keeping
// the lower-case names of the W3C headers (nats.Header is case-sensitive).
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	return nats.Header(c).Get(http.CanonicalHeaderKey(key))
}

func (c natsCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// hasTraceContext reports whether h carries a traceparent.
func hasTraceContext(h nats.Header) bool {
	return natsCarrier(h).Get(jobs.HeaderTraceparent) != ""
}

// startCallSpan extracts the flow's trace context from a call message's
// headers and, when tracing, starts the call's span. call may be nil (not
// decoded yet); delivery is 0 for a direct call. The returned span is
// always safe to End.
func (w *Worker) startCallSpan(ctx context.Context, h nats.Header, call *jobs.Call, subject string, delivery uint64) (context.Context, trace.Span) {
	if hasTraceContext(h) {
		ctx = propagator.Extract(ctx, natsCarrier(h))
	}
	if w.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	kind := trace.SpanKindConsumer
	if delivery == 0 {
		kind = trace.SpanKindServer
	}
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(subject),
		attrWorker.String(w.Name()),
	}
	if delivery > 0 {
		attrs = append(attrs, attrDelivery.Int64(int64(delivery)))
	}
	if call != nil {
		attrs = append(attrs, attrCallID.String(call.ID), attrConnection.String(call.Connection))
	}
	return w.tracer.Start(ctx, spanCall, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// injectTrace writes the trace context of ctx (the call's span, or the
// flow's context when not tracing) into a result's headers, or copies the
// call message's traceparent when ctx has none.
func (w *Worker) injectTrace(ctx context.Context, out, in nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, natsCarrier(out))
		return
	}
	if tp := natsCarrier(in).Get(jobs.HeaderTraceparent); tp != "" {
		out.Set(jobs.HeaderTraceparent, tp)
	}
}

// callFinished records a call's final result: metrics, and the outcome on
// the call's span.
func (w *Worker) callFinished(ctx context.Context, connection string, res *jobs.Result) {
	w.metrics.finished(w.connLabel(connection), res)
	w.annotateFinished(ctx, connection, res)
}

// annotateFinished records a call's final result on its span.
func (w *Worker) annotateFinished(ctx context.Context, connection string, res *jobs.Result) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrCallID.String(res.ID), attrConnection.String(connection), attrAttempt.Int(res.Attempt))
	annotate(span, res)
}

// callRetried records an attempt that will be tried again after delay.
func (w *Worker) callRetried(ctx context.Context, connection string, res *jobs.Result, delay time.Duration) {
	w.metrics.retried(w.connLabel(connection), res)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("retry scheduled", trace.WithAttributes(attrRetryIn.Int64(delay.Milliseconds())))
	}
}

// annotate sets the outcome of res on span.
func annotate(span trace.Span, res *jobs.Result) {
	if res == nil {
		return
	}
	switch {
	case res.Error != nil:
		span.SetAttributes(attrOutcome.String(outcomeError), semconv.ErrorTypeKey.String(string(res.Error.Code)))
		span.SetStatus(codes.Error, string(res.Error.Code))
	case res.OK:
		span.SetAttributes(attrOutcome.String(outcomeOK))
	default:
		span.SetAttributes(attrOutcome.String(outcomeNotOK))
		span.SetStatus(codes.Error, "HTTP "+strconv.Itoa(res.Status))
	}
	if res.Status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(res.Status))
	}
}

// startAttemptSpan starts attempt n's span when tracing; nil otherwise.
func (w *Worker) startAttemptSpan(ctx context.Context, call *jobs.Call, n int) (context.Context, trace.Span) {
	if w.tracer == nil {
		return ctx, nil
	}
	return w.tracer.Start(ctx, spanAttempt, trace.WithAttributes(attrAttempt.Int(n), attrConnection.String(call.Connection)))
}

// endAttemptSpan ends an attempt's span with its outcome.
func (w *Worker) endAttemptSpan(span trace.Span, ao *attemptOutcome) {
	if span == nil {
		return
	}
	if ao.handback > 0 {
		span.AddEvent("handed back", trace.WithAttributes(attrRetryIn.Int64(ao.handback.Milliseconds())))
	}
	annotate(span, ao.Result)
	span.End()
}

// TracerProviderFromEnv returns a tracer provider exporting spans over
// OTLP as the standard OTEL_* environment variables say, or nil when they
// do not ask for traces. Tracing is on when OTEL_TRACES_EXPORTER is "otlp",
// or when it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turn it off. The protocol is
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
// http/protobuf (default) or grpc. The exporters read the endpoint,
// headers, TLS and timeout variables themselves; the SDK reads
// OTEL_TRACES_SAMPLER and OTEL_BSP_*; OTEL_SERVICE_NAME (default
// "mtlsrelay") and OTEL_RESOURCE_ATTRIBUTES describe the process.
// instance names the worker (service.instance.id). Call shutdown before
// exiting to flush spans.
func TracerProviderFromEnv(ctx context.Context, instance string) (tp *sdktrace.TracerProvider, shutdown func(context.Context) error, err error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil, nil
	}
	exporters := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))
	switch {
	case exporters == "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil, nil
		}
	case exporters == "none":
		return nil, nil, nil
	case exporters != "otlp":
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported; use otlp or none", exporters)
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, nil, fmt.Errorf("OTLP protocol %q is not supported; use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName("mtlsrelay"), semconv.ServiceVersion(Version()), semconv.ServiceInstanceID(instance)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
