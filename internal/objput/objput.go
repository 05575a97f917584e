// Package objput writes objects into a JetStream Object Store bucket with
// flow control. The objects are those nats.go's ObjectStore.Put writes
// (chunks on $O.<bucket>.C.<nuid>, then the ObjectInfo on
// $O.<bucket>.M.<base64url(name)> with Nats-Rollup: sub, digest
// "SHA-256=" included), so any Object Store client reads them.
//
// Put publishes its chunks without waiting for each ack, up to 4,000 at a
// time per object, and no option of the caller's bounds that: a few large
// objects written at once overflow a stream's ingest buffer on the server
// (jetstream.max_buffered_size, 128 MiB by default), which drops what does
// not fit and answers 429. A Writer keeps at most Window chunks of one
// object, and Total chunks of all its objects, unacknowledged: the reader
// of the body is read only as fast as JetStream stores it, and a streamed
// HTTP response carries that wait back to the partner by flow control.
package objput

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"golang.org/x/sync/semaphore"
)

// Options size a Writer; zero fields take the defaults.
type Options struct {
	// ChunkSize is the size of a chunk, 128 KiB by default (nats.go's).
	ChunkSize int
	// Window is how many chunks of one object may await their ack, 8 by
	// default (1 MiB of 128 KiB chunks).
	Window int
	// Total is how many chunks of all the Writer's objects may await their
	// ack, 256 by default (32 MiB).
	Total int
	// AckTimeout bounds the wait for one chunk's ack, 30 s by default.
	AckTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = 128 << 10
	}
	if o.Window <= 0 {
		o.Window = 8
	}
	if o.Total <= 0 {
		o.Total = 256
	}
	o.Total = max(o.Total, o.Window)
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	return o
}

// Writer writes objects into one bucket with bounded windows of
// unacknowledged chunks. It is safe for concurrent use.
type Writer struct {
	*shared
	bucket string

	mu    sync.Mutex
	store jetstream.ObjectStore
}

// shared is what the Writers of one New share: the publishing context, the
// window of all their objects and the chunk buffers.
type shared struct {
	js     jetstream.JetStream
	opts   Options
	tokens *semaphore.Weighted
	chunks sync.Pool
}

// Bucket returns a Writer of objects in bucket that shares w's window of
// Total chunks and its buffers.
func (w *Writer) Bucket(bucket string) *Writer {
	return &Writer{shared: w.shared, bucket: bucket}
}

// New returns a Writer of objects in bucket, publishing on nc.
func New(nc *nats.Conn, bucket string, opts Options) (*Writer, error) {
	opts = opts.withDefaults()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(opts.Total),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout))
	if err != nil {
		return nil, err
	}
	sh := &shared{js: js, opts: opts, tokens: semaphore.NewWeighted(int64(opts.Total))}
	sh.chunks.New = func() any { b := make([]byte, opts.ChunkSize); return &b }
	return &Writer{shared: sh, bucket: bucket}, nil
}

// ErrReader wraps the error of the reader Put was given, so that callers
// tell a failing source (a partner that stopped sending, a body grown too
// large) from a failing store.
type ErrReader struct{ Err error }

func (e *ErrReader) Error() string { return e.Err.Error() }
func (e *ErrReader) Unwrap() error { return e.Err }

// pending is a chunk that awaits its ack, and the buffer it holds (a
// publish retried after "no responders" sends the message again).
type pending struct {
	ack jetstream.PubAckFuture
	buf *[]byte
}

// bucketStore returns the Writer's bucket, looked up once.
func (w *Writer) bucketStore(ctx context.Context) (jetstream.ObjectStore, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.store == nil {
		store, err := w.js.ObjectStore(ctx, w.bucket)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", w.bucket, err)
		}
		w.store = store
	}
	return w.store, nil
}

// Put stores what r gives as object meta.Name, replacing an object of
// that name once the new one is complete, and returns its info. On any
// failure the chunks written so far are purged and no object info is
// written: readers see the previous object, or none.
func (w *Writer) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	if meta.Name == "" {
		return nil, jetstream.ErrBadObjectMeta
	}
	if meta.Opts != nil && meta.Opts.Link != nil {
		return nil, jetstream.ErrLinkNotAllowed
	}
	store, err := w.bucketStore(ctx)
	if err != nil {
		return nil, err
	}
	bucket := w.bucket
	prev, err := store.GetInfo(ctx, meta.Name, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, err
	}

	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: uint32(w.opts.ChunkSize)}
	info := &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: bucket, NUID: nuid.Next()}
	chunkSubj := chunkSubject(bucket, info.NUID)
	h := sha256.New()
	var inFlight []pending
	settle := func(p pending) error {
		defer func() { w.chunks.Put(p.buf); w.tokens.Release(1) }()
		select {
		case <-p.ack.Ok():
			return nil
		case err := <-p.ack.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fail := func(err error) (*jetstream.ObjectInfo, error) {
		for _, p := range inFlight {
			settle(p) // returns at once once ctx is done
		}
		w.purge(bucket, chunkSubj)
		return nil, err
	}

	// settleOldest waits for the oldest chunk out.
	settleOldest := func() error {
		p := inFlight[0]
		inFlight = inFlight[1:]
		if err := settle(p); err != nil {
			return fmt.Errorf("store a chunk of %s: %w", meta.Name, err)
		}
		return nil
	}
	// room waits until a chunk may go out: the object's window has room
	// and the Writer's gave a token. While the Writer's is full, the object
	// waits for its own oldest chunk, not for others to: objects that each
	// hold part of the Writer's window would otherwise wait for each other.
	room := func() error {
		for {
			if len(inFlight) < w.opts.Window && w.tokens.TryAcquire(1) {
				return nil
			}
			if len(inFlight) == 0 {
				return w.tokens.Acquire(ctx, 1)
			}
			if err := settleOldest(); err != nil {
				return err
			}
		}
	}
	for {
		if err := room(); err != nil {
			return fail(err)
		}
		buf := w.chunks.Get().(*[]byte)
		n, rerr := io.ReadFull(r, *buf)
		if n > 0 {
			h.Write((*buf)[:n])
			m := &nats.Msg{Subject: chunkSubj, Data: (*buf)[:n]}
			ack, err := w.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
			if err != nil {
				w.chunks.Put(buf)
				w.tokens.Release(1)
				return fail(fmt.Errorf("store a chunk of %s: %w", meta.Name, err))
			}
			inFlight = append(inFlight, pending{ack: ack, buf: buf})
			info.Chunks++
			info.Size += uint64(n)
		} else {
			w.chunks.Put(buf)
			w.tokens.Release(1)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fail(&ErrReader{Err: rerr})
		}
	}
	for len(inFlight) > 0 {
		if err := settleOldest(); err != nil {
			return fail(err)
		}
	}

	info.Digest = jetstream.GetObjectDigestValue(h)
	data, err := json.Marshal(info)
	if err != nil {
		return fail(err)
	}
	mm := nats.NewMsg(metaSubject(bucket, meta.Name))
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	mm.Data = data
	if _, err := w.js.PublishMsg(ctx, mm); err != nil {
		return fail(fmt.Errorf("store the info of %s: %w", meta.Name, err))
	}
	if prev != nil && !prev.Deleted {
		w.purge(bucket, chunkSubject(bucket, prev.NUID))
	}
	info.ModTime = time.Now().UTC()
	return info, nil
}

// purge removes the chunks on subj, with a context of its own: the
// caller's may be why the object failed.
func (w *Writer) purge(bucket, subj string) {
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.AckTimeout)
	defer cancel()
	s, err := w.js.Stream(ctx, "OBJ_"+bucket)
	if err == nil {
		_ = s.Purge(ctx, jetstream.WithPurgeSubject(subj))
	}
}

func chunkSubject(bucket, id string) string { return "$O." + bucket + ".C." + id }

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}
