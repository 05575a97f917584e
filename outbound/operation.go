package outbound

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// WSDL caching: a connection's WSDL is fetched once and kept this long; a
// failure is kept for a short while, so that calls naming operations of a
// partner whose WSDL is broken do not each fetch it again. A retryable
// failure (the partner unreachable, a 5xx, a timeout) is kept for a second
// only, so that the call's retry fetches the WSDL again.
const (
	wsdlTTL          = 10 * time.Minute
	wsdlFailTTL      = 15 * time.Second
	wsdlRetryFailTTL = time.Second
	wsdlMaxBytes     = 4 << 20
)

// wsdlCache holds the WSDLs of connections, parsed, keyed by connection
// and location. It is safe for concurrent use; one fetch per key runs at
// a time and the others wait for it.
type wsdlCache struct {
	mu      sync.Mutex
	entries map[wsdlKey]*wsdlEntry
}

type wsdlKey struct{ connection, location string }

type wsdlEntry struct {
	ready chan struct{} // closed once desc or err is set
	desc  *wsdl.Description
	err   *jobs.Error
	until time.Time
}

// get returns the WSDL of key, loading it with load when it is not cached
// or has expired.
func (c *wsdlCache) get(ctx context.Context, key wsdlKey, load func(context.Context) (*wsdl.Description, *jobs.Error)) (*wsdl.Description, *jobs.Error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[wsdlKey]*wsdlEntry{}
	}
	e := c.entries[key]
	if e != nil {
		select {
		case <-e.ready:
			if time.Now().After(e.until) {
				e = nil
			}
		default:
		}
	}
	if e == nil {
		e = &wsdlEntry{ready: make(chan struct{})}
		c.entries[key] = e
		// The fetch serves every call waiting for it, this one included:
		// it runs detached from this call's cancellation and deadline,
		// bounded by the connection's timeout (load applies it), and
		// each caller, the first too, waits for it only as long as its
		// own ctx allows.
		go func(e *wsdlEntry) {
			desc, err := load(context.WithoutCancel(ctx))
			c.mu.Lock()
			e.desc, e.err = desc, err
			e.until = time.Now().Add(wsdlTTL)
			if err != nil {
				e.until = time.Now().Add(wsdlFailTTL)
				if err.Retryable {
					e.until = time.Now().Add(wsdlRetryFailTTL)
				}
			}
			c.mu.Unlock()
			close(e.ready)
		}(e)
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.desc, e.err
	case <-ctx.Done():
		return nil, jobs.Errorf(jobs.CodeTimeout, "the attempt's deadline passed while the WSDL was being fetched")
	}
}

// resolveOperation returns call with soap.operation resolved from the
// connection's WSDL: the operation's SOAPAction and version, and its
// port's address as the call's url when the call gives no url or path and
// the connection allows that address (else base_url stays the endpoint).
// call itself is not changed.
func (x *Executor) resolveOperation(ctx context.Context, lane Lane, call *jobs.Call, conn *catalog.Connection, base *url.URL, mat *secrets.Material) (*jobs.Call, *jobs.Error) {
	desc, jerr := x.ConnectionWSDL(ctx, lane, call.Connection, conn, mat, false)
	if jerr != nil {
		return nil, jerr
	}
	port, op, err := desc.Find(call.SOAP.Operation, call.SOAP.Version)
	if err != nil {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "soap.operation: %v", err)
	}
	if strings.ContainsAny(op.SOAPAction, "\"\\\r\n\x00") {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "soap.operation %s: the WSDL's SOAPAction for it is invalid (it holds quotes, backslashes or line breaks); give soap.action instead", op.Name)
	}
	if op.Use == "encoded" {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "operation %s uses SOAP encoding (use=\"encoded\"), which mtlsrelay does not build; give soap.action and an encoded body instead", op.Name)
	}
	c := *call
	s := *call.SOAP
	s.Action, s.Version, s.Operation = op.SOAPAction, port.SOAPVersion, ""
	c.SOAP = &s
	if c.URL == "" && c.Path == "" && port.Address != "" {
		if u, err := url.Parse(port.Address); err == nil && u.Scheme == "https" && conn.HostAllowed(u, base) {
			c.URL = port.Address
			if _, err := conn.RequestURL(&c, base); err != nil {
				c.URL = "" // outside base_url's path on its host: base_url it is
			}
		}
	}
	return &c, nil
}

// ConnectionWSDL returns the connection's WSDL (see catalog.Connection's
// wsdl), from the cache unless fresh is set. A WSDL at a URL is fetched
// through the connection: its lane's pools, proxy, egress rules and
// credentials, the profile's client certificate. Imports may name only
// hosts the connection allows.
func (x *Executor) ConnectionWSDL(ctx context.Context, lane Lane, name string, conn *catalog.Connection, mat *secrets.Material, fresh bool) (*wsdl.Description, *jobs.Error) {
	loc, file, err := conn.WSDLLocation()
	if err != nil {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "connection %s: %v", name, err)
	}
	if loc == "" {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "connection %s has no wsdl, so a call cannot name soap.operation; set the connection's wsdl or give soap.action", name)
	}
	where := wsdl.RedactURL(loc)
	if file {
		where = "file " + loc
	}
	load := func(ctx context.Context) (*wsdl.Description, *jobs.Error) {
		ctx, cancel := context.WithTimeout(ctx, conn.AttemptTimeout(nil))
		defer cancel()
		desc, err := wsdl.Load(ctx, loc, x.wsdlFetcher(lane, name, conn, mat))
		if err != nil {
			var je *jobs.Error
			if errors.As(err, &je) {
				return nil, je
			}
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return nil, jobs.Errorf(jobs.CodeTimeout, "reading the WSDL of connection %s (%s) took longer than the connection's timeout", name, where)
			}
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "the WSDL of connection %s (%s) cannot be used: %v", name, where, err)
		}
		return desc, nil
	}
	if fresh {
		return load(ctx)
	}
	return x.wsdls.get(ctx, wsdlKey{name, loc}, load)
}

// wsdlFetcher returns a wsdl.Fetch that GETs a document through the
// connection. Its errors are *jobs.Error: connect and TLS failures
// classified as a call's, host_not_allowed for a host the connection does
// not allow, http_status (retryable) for a 5xx.
func (x *Executor) wsdlFetcher(lane Lane, name string, conn *catalog.Connection, mat *secrets.Material) wsdl.Fetch {
	return func(ctx context.Context, raw string) ([]byte, error) {
		base, err := url.Parse(conn.BaseURL)
		if err != nil {
			return nil, jobs.Errorf(jobs.CodeInternal, "connection %s has an invalid base_url", name)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" {
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "the WSDL of connection %s names %s; mtlsrelay fetches WSDL documents over https only", name, wsdl.RedactURL(raw))
		}
		if !conn.HostAllowed(u, base) {
			return nil, jobs.Errorf(jobs.CodeHostNotAllowed, "the WSDL of connection %s imports from %s, which the connection does not allow; add it to allow_hosts", name, u.Host)
		}
		// On base_url's host, a WSDL document obeys the rules a call's url
		// does (under base_url's path, base_url's query parameters not
		// overridden) before it is fetched with the connection's
		// credentials.
		if _, err := conn.RequestURL(&jobs.Call{URL: raw, Connection: name}, base); err != nil {
			// Not the catalog's message: it shows the URL's query.
			return nil, jobs.Errorf(jobs.AsError(err).Code, "the WSDL of connection %s names %s, which a call could not reach: it leaves base_url's path %s or sets a query parameter base_url fixes", name, wsdl.RedactURL(raw), base.EscapedPath())
		}
		req, err := http.NewRequestWithContext(withEgress(ctx, x.derived.connection(name, conn).egress), http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "the WSDL URL %s: %v", wsdl.RedactURL(raw), err)
		}
		req.Header.Set("User-Agent", x.opts.UserAgent)
		req.Header.Set("Accept", "text/xml, application/xml, application/wsdl+xml, */*")
		pt := x.transports.getVia(name, conn.Proxy, lane, mat)
		defer pt.release()
		if conn.Auth != nil {
			cred, jerr := x.credentials(ctx, name, conn, mat, pt)
			if jerr != nil {
				return nil, jerr
			}
			cred.apply(req)
		}
		target := Target{Host: HostPort(u), Profile: mat.Profile, SystemRoots: mat.Config.RootCAs == nil, Timeout: conn.AttemptTimeout(nil)}
		client := &http.Client{Transport: pt.rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return nil, ClassifyError(err, target)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			code := jobs.CodeInvalidCall
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				code = jobs.CodeHTTPStatus
			}
			return nil, jobs.Errorf(code, "fetching the WSDL of connection %s from %s: the partner answered %d", name, wsdl.RedactURL(raw), resp.StatusCode)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, wsdlMaxBytes+1))
		if err != nil {
			return nil, ClassifyError(err, target)
		}
		if len(b) > wsdlMaxBytes {
			return nil, jobs.Errorf(jobs.CodeResponseTooLarge, "the WSDL document %s of connection %s is over %d bytes", wsdl.RedactURL(raw), name, wsdlMaxBytes)
		}
		return b, nil
	}
}
