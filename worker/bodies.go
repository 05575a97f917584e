package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/internal/objput"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound"
)

// DefaultInlineBodyMax is the largest response body a result holds itself
// unless worker.inline_body_max says otherwise; a larger one goes to the
// Object Store.
const DefaultInlineBodyMax = 256 << 10

// objectBodies keeps the bodies too large for a message in the Object
// Store bucket mtlsrelay_bodies, and with tenants in each tenant's
// mtlsrelay_bodies_<tenant> (outbound.Bodies): request bodies flows
// uploaded, response bodies above inlineMax, streamed both ways.
type objectBodies struct {
	inlineMax int64
	// buckets are the buckets by name, set once the worker created them
	// (ensureStreams); nc is the connection they are read on, set before.
	buckets atomic.Pointer[map[string]*bodyBucket]
	nc      *nats.Conn
}

// bodyBucket is one bucket, and what writes its objects.
type bodyBucket struct {
	name string
	put  *objput.Writer
}

var _ outbound.Bodies = (*objectBodies)(nil)

// inlineMaxFor bounds configured, the largest body a result holds, so that
// the result fits in the server's maxPayload whatever its encoding: base64
// makes 4 bytes of 3, JSON escapes can double text, and headers, timing
// and metadata need room.
func inlineMaxFor(configured int64, maxPayload int64) int64 {
	if configured <= 0 {
		configured = DefaultInlineBodyMax
	}
	if maxPayload > 0 {
		configured = min(configured, max((maxPayload-64<<10)/2, 1<<10))
	}
	return configured
}

func (b *objectBodies) InlineMax() int64 { return b.inlineMax }

// bucket returns the bucket of tenant's bodies ("": the relay's without
// tenants).
func (b *objectBodies) bucket(tenant string) (*bodyBucket, error) {
	if b == nil {
		return nil, jobs.Errorf(jobs.CodeInternal, "this worker keeps no bodies bucket")
	}
	name := jobs.TenantBucketBodies(tenant)
	if m := b.buckets.Load(); m != nil {
		if bb := (*m)[name]; bb != nil {
			return bb, nil
		}
	}
	return nil, jobs.Errorf(jobs.CodeInternal, "the bodies bucket %s is not set up yet", name)
}

// Open returns the request body call.BodyRef names. A tenant's call may
// name only objects under "<tenant>/": another tenant's uploads are not
// its to send.
func (b *objectBodies) Open(ctx context.Context, call *jobs.Call) (io.ReadCloser, int64, error) {
	name := call.BodyRef.Name
	if call.Tenant != "" && !strings.HasPrefix(name, call.Tenant+"/") {
		return nil, 0, jobs.Errorf(jobs.CodeInvalidCall, "body_ref %q is not under %s/, where tenant %s's uploads go", name, call.Tenant, call.Tenant)
	}
	bb, err := b.bucket(call.Tenant)
	if err != nil {
		return nil, 0, err
	}
	// Read chunk by chunk, from the info read once: nats.go's Get reads
	// the info again and follows a link, into any bucket with the
	// worker's permissions and, for a link to itself, without end; a
	// tenant may write its bucket. Links are refused.
	obj, info, err := objput.Open(ctx, b.nc, bb.name, name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return nil, 0, jobs.Errorf(jobs.CodeInvalidCall, "body_ref %q is not in bucket %s: upload the body first (it expires with nats.results_max_age)", name, bb.name)
	case errors.Is(err, objput.ErrLink):
		return nil, 0, jobs.Errorf(jobs.CodeInvalidCall, "body_ref %q in bucket %s is a link; upload the body itself", name, bb.name)
	case err != nil:
		return nil, 0, natsBodyError(err, bb.name, "read body_ref "+name)
	}
	return obj, int64(info.Size), nil
}

// resultObject is the name a response body of call is stored under:
// results/<id>, or <tenant>/results/<id>, so a tenant's objects all start
// with its name.
func resultObject(call *jobs.Call) string {
	if call.Tenant != "" {
		return call.Tenant + "/results/" + call.ID
	}
	return "results/" + call.ID
}

// Store streams r into the bucket, hashing it on the way, with a bounded
// window of unacknowledged chunks (internal/objput): the partner is read
// only as fast as JetStream stores its body.
func (b *objectBodies) Store(ctx context.Context, call *jobs.Call, r io.Reader, contentType string) (*jobs.BodyRef, error) {
	bb, err := b.bucket(call.Tenant)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	meta := jetstream.ObjectMeta{Name: resultObject(call)}
	if contentType != "" {
		meta.Headers = nats.Header{"Content-Type": []string{contentType}}
	}
	info, err := bb.put.Put(ctx, meta, io.TeeReader(r, h))
	if err != nil {
		// The partner's side failed (or the body grew too large): what
		// was stored of it is purged.
		var src *objput.ErrReader
		if errors.As(err, &src) {
			return nil, src.Err
		}
		return nil, natsBodyError(err, bb.name, "store the response body")
	}
	return &jobs.BodyRef{Bucket: bb.name, Name: meta.Name, Size: int64(info.Size), SHA256: sumHex(h), ContentType: contentType}, nil
}

func sumHex(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// natsBodyError words a failure of the bodies bucket: retryable, as NATS
// failures pass.
func natsBodyError(err error, bucket, doing string) *jobs.Error {
	return jobs.Wrap(err, jobs.CodeInternal, "could not %s in bucket %s: %v", doing, bucket, err).WithRetryable(true)
}

// open creates (or updates) the bodies bucket, and one per tenant, their
// objects expiring with the results that name them, and serves them from
// now on.
func (b *objectBodies) open(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration, tenants map[string]TenantConfig) error {
	var put *objput.Writer
	if m := b.buckets.Load(); m != nil {
		for _, bb := range *m {
			put = bb.put // the window stays the worker's one
			break
		}
	}
	if put == nil {
		var err error
		if put, err = objput.New(js.Conn(), jobs.BucketBodies, objput.Options{}); err != nil {
			return err
		}
	}
	m := map[string]*bodyBucket{}
	names := []string{""}
	for t := range tenants {
		names = append(names, t)
	}
	for _, tenant := range names {
		name := jobs.TenantBucketBodies(tenant)
		maxBytes := int64(-1)
		if n := tenants[tenant].BodiesMaxBytes; n > 0 {
			maxBytes = n
		}
		desc := "mtlsrelay bodies too large for a message: request bodies flows upload, response bodies workers store"
		if tenant != "" {
			desc = "mtlsrelay bodies of tenant " + tenant + " too large for a message"
		}
		_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      name,
			Description: desc,
			TTL:         ttl,
			MaxBytes:    maxBytes,
			Replicas:    max(replicas, 1),
			Storage:     jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("create or update object store %s: %w", name, err)
		}
		m[name] = &bodyBucket{name: name, put: put.Bucket(name)}
	}
	b.nc = js.Conn()
	b.buckets.Store(&m)
	return nil
}

// moveBody returns res with its inline body stored in the bucket and named
// by a body_ref instead.
func (w *Worker) moveBody(ctx context.Context, call *jobs.Call, res *jobs.Result) (*jobs.Result, error) {
	ct := ""
	if vs := res.Headers["Content-Type"]; len(vs) > 0 {
		ct = vs[0]
	}
	ref, err := w.bodies.Store(ctx, call, bytes.NewReader(res.ResponseBody()), ct)
	if err != nil {
		return nil, err
	}
	out := *res
	out.Body, out.BodyBase64, out.BodyRef = "", nil, ref
	return &out, nil
}

// orDefault is d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
