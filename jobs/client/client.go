// Package client is what a Go flow uses to hand calls to mtlsrelay and read
// their results over NATS. It speaks only the wire contract of package
// jobs, so anything it does a plain NATS client can do too.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	json "github.com/goccy/go-json"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/objput"
	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Client is what a flow uses to hand calls to mtlsrelay and read results. It
// speaks only the wire contract, so anything it does a plain NATS client can
// do too. Safe for concurrent use.
type Client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	subj jobs.Subjects
	// tenant is the flow's tenant; "" sends v1 calls.
	tenant string
	// inlineMax is the largest request body sent inside the call; fetchMax
	// the largest body_ref a result's body is read from for the flow.
	inlineMax, fetchMax int64
	// put writes uploads with a bounded window of unacknowledged chunks,
	// made on the first upload.
	put     *objput.Writer
	putErr  error
	putOnce sync.Once
}

// Defaults of the body options.
const (
	// DefaultInlineMax is the largest request body sent inside a call; a
	// larger one is uploaded to the Object Store and sent as body_ref.
	DefaultInlineMax = 256 << 10
	// DefaultFetchMax is the largest response body Call reads from the
	// Object Store into the result for the flow.
	DefaultFetchMax = 64 << 20
)

// WithBodyLimits sets the largest request body sent inside a call (a
// larger one goes by body_ref) and the largest response body Call and
// CallProgress read from a body_ref into the result; 0 keeps a default.
func WithBodyLimits(inlineMax, fetchMax int64) Option {
	return func(c *Client) {
		if inlineMax > 0 {
			c.inlineMax = inlineMax
		}
		if fetchMax > 0 {
			c.fetchMax = fetchMax
		}
	}
}

// Option configures a Client.
type Option func(*Client)

// WithSubjects sets the subject prefix (default "mtlsrelay").
func WithSubjects(s jobs.Subjects) Option { return func(c *Client) { c.subj = s } }

// WithTenant makes the client a tenant's: calls go to
// <prefix>.calls.<tenant>.<connection> and <prefix>.rpc.<tenant>.<connection>,
// and a call without reply_to gets <prefix>.results.<tenant>.<id>. The NATS
// server decides whether the connection may publish there; connect it with
// nats.CustomInboxPrefix(jobs.TenantInbox(tenant)) so its direct replies
// and acks arrive under the tenant's own inbox prefix.
func WithTenant(tenant string) Option { return func(c *Client) { c.tenant = tenant } }

// New returns a Client on an established NATS connection.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, inlineMax: DefaultInlineMax, fetchMax: DefaultFetchMax}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Subjects returns the subjects the client uses.
func (c *Client) Subjects() jobs.Subjects { return c.subj }

func (c *Client) prepare(ctx context.Context, call *jobs.Call) ([]byte, error) {
	if err := call.Normalize(""); err != nil {
		return nil, err
	}
	if err := c.uploadLarge(ctx, call); err != nil {
		return nil, err
	}
	if call.ReplyTo == "" {
		call.ReplyTo = c.resultSubject(call.ID)
		if !jobs.ValidSubject(call.ReplyTo) {
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "call id %q does not make a valid result subject; set reply_to", call.ID)
		}
	}
	if c.subj.Reserved(call.ReplyTo) {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "reply_to %q is a subject no relay publishes results to; use one under %s", call.ReplyTo, c.subj.ResultsAll())
	}
	return json.Marshal(call)
}

// resultSubject is the conventional reply subject of call id.
func (c *Client) resultSubject(id string) string {
	if c.tenant != "" {
		return c.subj.TenantResult(c.tenant, id)
	}
	return c.subj.Result(id)
}

// callSubject is the durable (or, rpc, direct) subject of connection.
func (c *Client) callSubject(connection string, rpc bool) string {
	switch {
	case c.tenant != "" && rpc:
		return c.subj.TenantRPC(c.tenant, connection)
	case c.tenant != "":
		return c.subj.TenantCalls(c.tenant, connection)
	case rpc:
		return c.subj.RPC(connection)
	}
	return c.subj.Calls(connection)
}

// Enqueue publishes call durably to <prefix>.calls.<connection> (or its
// tenant's subject, WithTenant) with
// Nats-Msg-Id set to its id, so a repeated Enqueue of the same id within the
// duplicate window is stored once. A call without reply_to gets
// <prefix>.results.<id>, kept in MTLSRELAY_RESULTS.
func (c *Client) Enqueue(ctx context.Context, call *jobs.Call) (*jetstream.PubAck, error) {
	data, err := c.prepare(ctx, call)
	if err != nil {
		return nil, err
	}
	return c.publish(ctx, call, data)
}

// publish stores a prepared call in MTLSRELAY_CALLS.
func (c *Client) publish(ctx context.Context, call *jobs.Call, data []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(c.callSubject(call.Connection, false))
	msg.Data = data
	msg.Header.Set(jobs.HeaderMsgID, call.ID)
	return c.js.PublishMsg(ctx, msg)
}

// Call enqueues call and waits for its final result on its reply subject
// until ctx ends. When the wait ends without a live result and the reply
// subject is kept in MTLSRELAY_RESULTS, the stored result is returned if
// there is a final one. Progress messages (call.Progress) are skipped; see
// CallProgress.
func (c *Client) Call(ctx context.Context, call *jobs.Call) (*jobs.Result, error) {
	return c.CallProgress(ctx, call, nil)
}

// CallProgress is Call, handing each progress message that arrives before
// the final result to onProgress (which may be nil).
func (c *Client) CallProgress(ctx context.Context, call *jobs.Call, onProgress func(*jobs.Result)) (*jobs.Result, error) {
	data, err := c.prepare(ctx, call)
	if err != nil {
		return nil, err
	}
	sub, err := c.nc.SubscribeSync(call.ReplyTo)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if _, err := c.publish(ctx, call, data); err != nil {
		return nil, err
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if c.subj.IsResult(call.ReplyTo) {
				fallback, cancel := context.WithTimeout(context.Background(), c.nc.Opts.Timeout)
				defer cancel()
				if r, serr := c.StoredResult(fallback, call.ReplyTo); serr == nil && !r.Progress {
					return r, c.fetchBody(fallback, r)
				}
			}
			return nil, fmt.Errorf("waiting for the result of call %s on %s: %w", call.ID, call.ReplyTo, err)
		}
		if jobs.Replayed(msg.Header) != "" {
			// A stored message a server sent here on someone's request
			// (a direct get naming this subject as its reply): not a
			// worker's result.
			continue
		}
		r, err := jobs.DecodeResult(msg.Data)
		if err == nil && r.ID != call.ID {
			continue // another call's result, replayed or misaddressed
		}
		if err != nil || !r.Progress {
			if err == nil {
				err = c.fetchBody(ctx, r)
			}
			return r, err
		}
		if onProgress != nil {
			onProgress(r)
		}
	}
}

// Direct sends call as a core NATS request to <prefix>.rpc.<connection>: no
// persistence, lowest latency; the result is the reply. ctx bounds the wait.
func (c *Client) Direct(ctx context.Context, call *jobs.Call) (*jobs.Result, error) {
	if err := call.Normalize(""); err != nil {
		return nil, err
	}
	if err := c.uploadLarge(ctx, call); err != nil {
		return nil, err
	}
	data, err := json.Marshal(call)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(c.callSubject(call.Connection, true))
	msg.Data = data
	msg.Header.Set(jobs.HeaderCallID, call.ID)
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("no worker serves %s; start `mtlsrelay serve`: %w", msg.Subject, err)
		}
		return nil, err
	}
	res, err := jobs.DecodeResult(reply.Data)
	if err != nil {
		return nil, err
	}
	return res, c.fetchBody(ctx, res)
}

// StoredResult returns the last result stored in MTLSRELAY_RESULTS on
// subject. For a call that asked for progress it may be a progress message
// (Progress set) while the call is being retried.
func (c *Client) StoredResult(ctx context.Context, subject string) (*jobs.Result, error) {
	s, err := c.js.Stream(ctx, jobs.StreamResults)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil, err
	}
	return jobs.DecodeResult(m.Data)
}

// ResultsOptions selects which stored results ConsumeResults delivers.
type ResultsOptions struct {
	// Filter is a subject filter under <prefix>.results; default all results.
	Filter string
	// Durable names a durable consumer so a flow resumes where it stopped;
	// empty uses an ephemeral ordered consumer from the start of the stream.
	Durable string
}

// ConsumeResults delivers results kept in MTLSRELAY_RESULTS to handle, in
// stream order, until the returned stop function is called. With a durable
// consumer a result is acknowledged when handle returns nil, and redelivered
// when it returns an error.
func (c *Client) ConsumeResults(ctx context.Context, o ResultsOptions, handle func(*jobs.Result) error) (stop func(), err error) {
	filter := o.Filter
	if filter == "" {
		filter = c.subj.ResultsAll()
	}
	var cons jetstream.Consumer
	if o.Durable == "" {
		cons, err = c.js.OrderedConsumer(ctx, jobs.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	} else {
		cons, err = c.js.CreateOrUpdateConsumer(ctx, jobs.StreamResults, jetstream.ConsumerConfig{
			Durable:       o.Durable,
			FilterSubject: filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
		})
	}
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, derr := jobs.DecodeResult(m.Data())
		if derr != nil {
			_ = m.Term()
			return
		}
		if herr := handle(r); herr != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

// uploadLarge sends a request body over the inline bound by body_ref.
func (c *Client) uploadLarge(ctx context.Context, call *jobs.Call) error {
	if int64(len(call.Body)+len(call.BodyBase64)) <= c.inlineMax {
		return nil
	}
	ref, err := c.PutBody(ctx, "calls/"+call.ID, bytes.NewReader(call.RequestBody()))
	if err != nil {
		return err
	}
	call.Body, call.BodyBase64, call.BodyRef = "", nil, ref
	return nil
}

// objectName is the name of an object the client uploads: under
// "<tenant>/" for a tenant's client, where a worker accepts its body_refs.
func (c *Client) objectName(name string) string {
	if c.tenant != "" {
		return c.tenant + "/" + name
	}
	return name
}

// PutBody uploads a request body to the Object Store bucket
// mtlsrelay_bodies under name (a tenant's client puts it in its tenant's
// bucket, mtlsrelay_bodies_<tenant>, under "<tenant>/"), streamed from r, and returns the body_ref a call sends
// instead of body. Enqueue, Call and Direct do it themselves for a body
// larger than the inline bound (WithBodyLimits).
func (c *Client) PutBody(ctx context.Context, name string, r io.Reader) (*jobs.RequestBodyRef, error) {
	bucket := jobs.TenantBucketBodies(c.tenant)
	c.putOnce.Do(func() { c.put, c.putErr = objput.New(c.nc, bucket, objput.Options{}) })
	if c.putErr != nil {
		return nil, c.putErr
	}
	name = c.objectName(name)
	if _, err := c.put.Put(ctx, jetstream.ObjectMeta{Name: name}, r); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("upload the request body to %s/%s: %w (a worker creates the bucket when it starts)", bucket, name, err)
		}
		return nil, fmt.Errorf("upload the request body to %s/%s: %w", bucket, name, err)
	}
	return &jobs.RequestBodyRef{Name: name}, nil
}

// OpenBody returns a reader of res's response body, wherever it is: in the
// result, or in the Object Store (body_ref), where it is checked against
// the body_ref's size and SHA-256 as it is read (a mismatch is an error at
// the end).
func (c *Client) OpenBody(ctx context.Context, res *jobs.Result) (io.ReadCloser, error) {
	if res.BodyRef == nil {
		return io.NopCloser(bytes.NewReader(res.ResponseBody())), nil
	}
	// By direct gets, not a consumer: a tenant's NATS user may read its
	// bucket, and may not create consumers (docs/nats-accounts.conf).
	obj, _, err := objput.Open(ctx, c.nc, res.BodyRef.Bucket, res.BodyRef.Name)
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", res.BodyRef.Bucket, res.BodyRef.Name, err)
	}
	return &checkedBody{r: obj, c: obj, h: sha256.New(), ref: res.BodyRef}, nil
}

// fetchBody reads a result's body_ref into Body or BodyBase64, up to the
// client's fetch bound; a larger one stays a body_ref for OpenBody.
func (c *Client) fetchBody(ctx context.Context, res *jobs.Result) error {
	if res.BodyRef == nil || res.BodyRef.Size > c.fetchMax {
		return nil
	}
	r, err := c.OpenBody(ctx, res)
	if err != nil {
		return err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	res.SetBody(b)
	return nil
}

// checkedBody reads a body_ref's object and checks its size and SHA-256
// at the end.
type checkedBody struct {
	r   io.Reader
	c   io.Closer
	h   hash.Hash
	n   int64
	ref *jobs.BodyRef
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	if err == io.EOF && (b.n != b.ref.Size || hex.EncodeToString(b.h.Sum(nil)) != b.ref.SHA256) {
		return n, fmt.Errorf("body %s/%s: read %d bytes with sha256 %x, want %d bytes with %s", b.ref.Bucket, b.ref.Name, b.n, b.h.Sum(nil), b.ref.Size, b.ref.SHA256)
	}
	return n, err
}

func (b *checkedBody) Close() error { return b.c.Close() }
