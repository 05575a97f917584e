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
		// Room for acks no longer awaited (abandon) besides the window.
		jetstream.WithPublishAsyncMaxPending(4*opts.Total),
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

// Put stores what r gives as object meta.Name, replacing an object of
// that name once the new one is complete, and returns its info. r ends
// the object with io.EOF; any other error of r (io.ErrUnexpectedEOF of a
// response cut short included) fails the Put with an *ErrReader. On a
// failure before the object's info is written the chunks written so far
// are purged: readers see the previous object, or none.
func (w *Writer) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	if meta.Name == "" {
		return nil, jetstream.ErrBadObjectMeta
	}
	if meta.Opts != nil && meta.Opts.Link != nil {
		return nil, jetstream.ErrLinkNotAllowed
	}
	prev, err := objectInfo(ctx, w.js.Conn(), w.bucket, meta.Name)
	if err != nil {
		return nil, err
	}
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: uint32(w.opts.ChunkSize)}
	p := &put{w: w, ctx: ctx, info: &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: w.bucket, NUID: nuid.Next()},
		acks: make(chan jetstream.PubAckFuture, w.opts.Window), window: make(chan struct{}, w.opts.Window), acked: make(chan struct{})}
	go p.awaitAcks()
	defer p.stop() // even on a panic of r: the window's tokens come back
	info, err := p.run(r)
	if err != nil {
		return nil, err
	}
	if prev != nil && !prev.Deleted && validNUID(prev.NUID) {
		w.purge(chunkSubject(w.bucket, prev.NUID))
	}
	info.ModTime = time.Now().UTC()
	return info, nil
}

// put is one object being written. Its chunks' acks are awaited by a
// goroutine of its own (awaitAcks), which gives each chunk's token back as
// its ack comes in: a source that stalls holds none of the Writer's window
// once its chunks are stored.
type put struct {
	w    *Writer
	ctx  context.Context
	info *jetstream.ObjectInfo
	// acks are the chunks awaiting their ack, oldest first; window holds a
	// place for each (at most Options.Window).
	acks   chan jetstream.PubAckFuture
	window chan struct{}
	// acked is closed once awaitAcks has taken every ack out.
	acked   chan struct{}
	stopped bool

	mu  sync.Mutex
	err error
}

// awaitAcks takes the acks out in order, each chunk's token and place in
// the window back, and keeps the first failure.
func (p *put) awaitAcks() {
	defer close(p.acked)
	for ack := range p.acks {
		// Awaited even once the Put's context is done: the chunk is out,
		// and its token stays taken until the stream stored it or the ack
		// timed out (the publishing context's AckTimeout), so that
		// cancelled Puts do not let more than the window out.
		var err error
		select {
		case <-ack.Ok():
		case err = <-ack.Err():
		}
		p.w.tokens.Release(1)
		<-p.window
		if err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = fmt.Errorf("store a chunk of %s: %w", p.info.Name, err)
			}
			p.mu.Unlock()
		}
	}
}

func (p *put) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// stop ends the acks and waits for awaitAcks to take out those sent,
// unless the Put's context is done: then awaitAcks finishes on its own.
func (p *put) stop() {
	if !p.stopped {
		p.stopped = true
		close(p.acks)
	}
	select {
	case <-p.acked:
	case <-p.ctx.Done():
	}
}

func (p *put) run(r io.Reader) (*jetstream.ObjectInfo, error) {
	w, info := p.w, p.info
	chunkSubj := chunkSubject(w.bucket, info.NUID)
	fail := func(err error) (*jetstream.ObjectInfo, error) {
		p.stop()
		w.purge(chunkSubj)
		return nil, err
	}
	buf := w.chunks.Get().(*[]byte)
	defer w.chunks.Put(buf)
	h := sha256.New()
	for {
		if err := p.failed(); err != nil {
			return fail(err)
		}
		n, rerr := readChunk(r, *buf)
		if rerr != nil && rerr != io.EOF {
			return fail(&ErrReader{Err: rerr})
		}
		if n > 0 {
			// A place in the object's window, then a token of the
			// Writer's: both come back as acks come in, whatever the
			// other objects' sources do.
			select {
			case p.window <- struct{}{}:
			case <-p.ctx.Done():
				return fail(p.ctx.Err())
			}
			if err := w.tokens.Acquire(p.ctx, 1); err != nil {
				<-p.window
				return fail(err)
			}
			h.Write((*buf)[:n])
			// The connection copies the data: the buffer is free again
			// once the publish returns (no retries are asked for).
			ack, err := w.js.PublishMsgAsync(&nats.Msg{Subject: chunkSubj, Data: (*buf)[:n]}, jetstream.WithRetryAttempts(0))
			if err != nil {
				w.tokens.Release(1)
				<-p.window
				return fail(fmt.Errorf("store a chunk of %s: %w", info.Name, err))
			}
			p.acks <- ack
			info.Chunks++
			info.Size += uint64(n)
		}
		if rerr == io.EOF {
			break
		}
	}
	p.stop()
	if err := p.failed(); err != nil {
		return fail(err)
	}

	info.Digest = jetstream.GetObjectDigestValue(h)
	data, err := json.Marshal(info)
	if err != nil {
		return fail(err)
	}
	mm := nats.NewMsg(metaSubject(w.bucket, info.Name))
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	mm.Data = data
	if _, err := w.js.PublishMsg(p.ctx, mm); err != nil {
		// The info may be stored all the same (a lost ack): its chunks are
		// left in place, to expire with the bucket's TTL if it was not.
		return nil, fmt.Errorf("store the info of %s: %w", info.Name, err)
	}
	return info, nil
}

// readChunk fills buf from r. It returns io.EOF only when r ended cleanly
// (the chunk may hold the last bytes), and r's own error otherwise:
// io.ReadFull would turn a source cut short into the end of the object.
func readChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// purge removes the chunks on subj, with a context of its own: the
// caller's may be why the object failed. Chunks still on their way to the
// stream may be stored after it; they expire with the bucket's TTL.
func (w *Writer) purge(subj string) {
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.AckTimeout)
	defer cancel()
	s, err := w.js.Stream(ctx, "OBJ_"+w.bucket)
	if err == nil {
		_ = s.Purge(ctx, jetstream.WithPurgeSubject(subj))
	}
}

func chunkSubject(bucket, id string) string { return "$O." + bucket + ".C." + id }

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}
