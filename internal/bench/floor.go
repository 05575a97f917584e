package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/pubwindow"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// floorResponder stands in for the workers with everything but the HTTP
// exchange: it takes calls from the shared consumer "workers" of
// MTLSRELAY_CALLS, publishes a result the size of a real one to each call's
// reply_to through the worker's result window (internal/pubwindow), with
// Nats-Msg-Id and Mtlsrelay-Call-Id set as SPEC.md asks, and acknowledges
// the call when JetStream has acknowledged the result, as the worker does.
// It calls no partner and checks nothing: the flow, the NATS server and
// this responder do only the JetStream work of a relayed call.
//
// Its throughput is the relay's floor on this machine: the cost of SPEC's
// JetStream hops alone. A relayed call costs at least that plus an HTTP
// exchange, and the direct path measures the exchange.
type floorResponder struct {
	nc  *nats.Conn
	cc  jetstream.ConsumeContext
	win *pubwindow.Window
	// head and tail are a real result's encoding before and after its id:
	// the responder splices each call's id in between.
	head, tail []byte
}

// startFloor starts the responder on its own NATS connection. The workers
// must be stopped first: they share the consumer.
func startFloor(ctx context.Context, url string, o Options) (*floorResponder, error) {
	f := &floorResponder{}
	if err := f.template(o); err != nil {
		return nil, err
	}
	var err error
	if f.nc, err = nats.Connect(url, nats.Name("mtlsrelay bench floor")); err != nil {
		return nil, fmt.Errorf("connect the floor responder to NATS: %w", err)
	}
	// The worker's result window, of the worker's size.
	if f.win, err = pubwindow.New(f.nc, max(o.inflight(), 64), 5*time.Second); err != nil {
		f.close()
		return nil, err
	}
	js, err := jetstream.New(f.nc)
	if err != nil {
		f.close()
		return nil, err
	}
	cons, err := js.Consumer(ctx, jobs.StreamCalls, jobs.ConsumerWorkers)
	if err != nil {
		f.close()
		return nil, fmt.Errorf("floor responder: %w", err)
	}
	if f.cc, err = cons.Consume(f.answer, jetstream.PullMaxMessages(max(o.inflight(), 64))); err != nil {
		f.close()
		return nil, fmt.Errorf("floor responder: %w", err)
	}
	return f, nil
}

// template encodes the result a worker would publish for the bench's
// request, id aside.
func (f *floorResponder) template(o Options) error {
	const marker = "\x00id\x00"
	shape := shapeOf(o)
	body := strings.Repeat("x", max(shape.wantLen, 0))
	data, err := jobs.EncodeResult(&jobs.Result{
		ID: marker, Connection: benchConnection, OK: true, Status: 200,
		Headers: map[string][]string{"Content-Type": {"application/octet-stream"}, "Content-Length": {fmt.Sprint(len(body))}},
		Body:    body, Attempt: 1, Worker: "bench-floor",
		CompletedAt: time.Now(),
	})
	if err != nil {
		return err
	}
	head, tail, ok := strings.Cut(string(data), `"`+strings.ReplaceAll(marker, "\x00", `\u0000`)+`"`)
	if !ok {
		return fmt.Errorf("floor result template: id marker not found in %.80s", data)
	}
	f.head, f.tail = []byte(head), []byte(tail)
	return nil
}

// answer publishes the result of one call; the call is acked when the
// result is, and handed back when it is not.
func (f *floorResponder) answer(m jetstream.Msg) {
	var c struct {
		ID      string `json:"id"`
		ReplyTo string `json:"reply_to"`
	}
	if err := json.Unmarshal(m.Data(), &c); err != nil || c.ID == "" || c.ReplyTo == "" {
		_ = m.Term()
		return
	}
	data := make([]byte, 0, len(f.head)+len(c.ID)+2+len(f.tail))
	data = append(append(append(append(append(data, f.head...), '"'), c.ID...), '"'), f.tail...)
	out := &nats.Msg{Subject: c.ReplyTo, Data: data, Header: nats.Header{
		jobs.HeaderMsgID:  {c.ID},
		jobs.HeaderCallID: {c.ID},
	}}
	f.win.Publish(out, func(err error) {
		if err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
}

func (f *floorResponder) close() {
	if f.cc != nil {
		f.cc.Stop()
	}
	if f.nc != nil {
		f.nc.Close()
	}
}
