package outbound

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// hopByHop are connection-level headers. The worker manages its own
// connections (and HTTP/2 forbids them), so a call's values are dropped.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Te":                  true,
	"Trailer":             true,
	"Content-Length":      true,
	"Proxy-Authorization": true,
}

// newRESTRequest builds the HTTP request of a REST call to u: its method,
// its body (text or bytes, with a Content-Length) and its headers.
func newRESTRequest(ctx context.Context, call *jobs.Call, u *url.URL, bodies Bodies) (*http.Request, *jobs.Error) {
	if call.BodyRef != nil {
		return newStreamedRequest(ctx, call, u, bodies)
	}
	var body []byte
	if b := call.RequestBody(); len(b) > 0 {
		body = b
	}
	req, err := newRequest(ctx, call.Method, u, body)
	if err != nil {
		return nil, err
	}
	applyHeaders(req, call.Headers)
	return req, nil
}

// newStreamedRequest builds the request of a call whose body the flow
// uploaded (body_ref): the body streams from bodies, with its length, and
// is opened again should the transport replay the request.
func newStreamedRequest(ctx context.Context, call *jobs.Call, u *url.URL, bodies Bodies) (*http.Request, *jobs.Error) {
	if bodies == nil {
		return nil, jobs.Errorf(jobs.CodeInternal, "this worker keeps no bodies (no Object Store), so body_ref cannot be read")
	}
	body, size, err := bodies.Open(ctx, call)
	if err != nil {
		return nil, jobs.AsError(err)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, u.String(), body)
	if err != nil {
		body.Close()
		return nil, jobs.Wrap(err, jobs.CodeInvalidCall, "the call's method or URL cannot make an HTTP request; check method, path, url and query")
	}
	req.ContentLength = size
	req.GetBody = func() (io.ReadCloser, error) {
		b, _, err := bodies.Open(ctx, call)
		return b, err
	}
	applyHeaders(req, call.Headers)
	return req, nil
}

// newRequest returns a request for method and u with body (nil for none),
// replayable so that the transport may retry it on a fresh connection when
// a kept-alive one turned out closed before anything was written.
func newRequest(ctx context.Context, method string, u *url.URL, body []byte) (*http.Request, *jobs.Error) {
	var req *http.Request
	var err error
	if body == nil {
		req, err = http.NewRequestWithContext(ctx, method, u.String(), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	}
	if err != nil {
		// Normalize validated method and URL; failing here is a defect.
		return nil, jobs.Wrap(err, jobs.CodeInvalidCall, "the call's method or URL cannot make an HTTP request; check method, path, url and query")
	}
	return req, nil
}

// applyHeaders sets a call's headers on req, replacing defaults of the same
// name and keeping several values of one name in order. Host and
// connection-level headers, which jobs.Call.Normalize refuses, are dropped
// all the same.
func applyHeaders(req *http.Request, headers map[string][]string) {
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	// Sorted so that names differing only in case merge in a stable order.
	slices.Sort(names)
	replaced := make(map[string]bool, len(names))
	for _, k := range names {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		vs := headers[k]
		switch {
		case hopByHop[ck] || len(vs) == 0:
			continue
		case ck == "Host":
			// jobs refuses it; never let a call name another host.
			continue
		}
		if !replaced[ck] {
			req.Header.Del(ck)
			replaced[ck] = true
		}
		for _, v := range vs {
			req.Header.Add(ck, v)
		}
	}
}
