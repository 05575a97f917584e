package objput

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLink is Open's error for an object that is a link: links are not
// followed.
var ErrLink = errors.New("the object is a link to another, not read")

// Open returns a reader of object name in bucket that reads it chunk by
// chunk with $JS.API.STREAM.MSG.GET (msgGet), not with a consumer as
// nats.go's ObjectStore.Get does: whoever may create a consumer may name
// its delivery subject, another tenant's results included. Nor does it
// follow links: a link, a deleted object, missing chunks or a digest other
// than the info's fail the read.
func Open(ctx context.Context, nc *nats.Conn, bucket, name string) (io.ReadCloser, *jetstream.ObjectInfo, error) {
	info, err := objectInfo(ctx, nc, bucket, name)
	switch {
	case err != nil:
		return nil, nil, err
	case info == nil, info.Deleted:
		return nil, nil, fmt.Errorf("%s/%s: %w", bucket, name, jetstream.ErrObjectNotFound)
	case info.Opts != nil && info.Opts.Link != nil:
		return nil, nil, fmt.Errorf("%s/%s: %w", bucket, name, ErrLink)
	case !validNUID(info.NUID):
		return nil, nil, fmt.Errorf("the info of %s/%s names no chunks it may have", bucket, name)
	}
	return &chunkReader{ctx: ctx, nc: nc, stream: "OBJ_" + bucket, subj: chunkSubject(bucket, info.NUID), info: info, h: sha256.New()}, info, nil
}

// chunkReader reads an object's chunks in order, one direct get each.
type chunkReader struct {
	ctx    context.Context
	nc     *nats.Conn
	stream string
	subj   string
	info   *jetstream.ObjectInfo
	h      hash.Hash

	seq  uint64 // of the last chunk read
	read uint32 // chunks read
	size uint64
	buf  []byte
	err  error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.read == r.info.Chunks {
			r.err = r.end()
			continue
		}
		m, err := msgGet(r.ctx, r.nc, r.stream, map[string]any{"seq": r.seq + 1, "next_by_subj": r.subj})
		if err != nil {
			r.err = fmt.Errorf("read chunk %d of %s/%s: %w", r.read+1, r.info.Bucket, r.info.Name, err)
			continue
		}
		r.seq, r.buf = m.Seq, m.Data
		r.read++
		r.size += uint64(len(m.Data))
		r.h.Write(m.Data)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// end checks what was read against the info: io.EOF when it matches.
func (r *chunkReader) end() error {
	if r.size != r.info.Size {
		return fmt.Errorf("%s/%s: read %d bytes, its info says %d", r.info.Bucket, r.info.Name, r.size, r.info.Size)
	}
	if got := jetstream.GetObjectDigestValue(r.h); got != r.info.Digest {
		return fmt.Errorf("%s/%s: read data of digest %s, its info says %s", r.info.Bucket, r.info.Name, got, r.info.Digest)
	}
	return io.EOF
}

func (r *chunkReader) Close() error { r.err, r.buf = errors.New("read after close"), nil; return nil }
