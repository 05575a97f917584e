package outbound

import (
	"context"
	"errors"
	"io"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// Bodies keeps the bodies too large for a message, outside the executor
// (the worker's is the Object Store bucket mtlsrelay_bodies): the executor
// reads a call's body_ref from it, and streams a response larger than
// InlineMax into it, so a worker's memory does not grow with body size.
type Bodies interface {
	// Open returns the request body call.BodyRef names, and its size.
	Open(ctx context.Context, call *jobs.Call) (io.ReadCloser, int64, error)
	// Store keeps the response body r of call and says where. r fails with
	// an error wrapping ErrBodyTooLarge past the connection's limit: Store
	// must then keep nothing.
	Store(ctx context.Context, call *jobs.Call, r io.Reader, contentType string) (*jobs.BodyRef, error)
	// InlineMax is the largest response body kept in the result itself.
	InlineMax() int64
}

// ErrBodyTooLarge is the error of a response body read past the
// connection's max_response_bytes.
var ErrBodyTooLarge = errors.New("response body over max_response_bytes")

// limitedBody reads r and fails with ErrBodyTooLarge once more than limit
// bytes came.
type limitedBody struct {
	r     io.Reader
	left  int64 // bytes still allowed
	extra [1]byte
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// At the limit: one more byte means too large, EOF means exact.
		n, err := l.r.Read(l.extra[:])
		if n > 0 {
			return 0, ErrBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
