// Package partner is a partner's mTLS server for `mtlsrelay demo`, tests and
// benchmarks: a real net/http server that requires and verifies a client
// certificate, and answers REST and SOAP routes meant to exercise the worker.
//
// Routes (any method unless said otherwise):
//
//	/echo               200 JSON describing the request: method, path,
//	                    raw_query, host, headers, content_length, body (or
//	                    body_base64 when it is not UTF-8), client_cert
//	                    {subject, serial (lower-case hex), issuer},
//	                    tls_version ("TLS 1.3"), protocol ("HTTP/2.0").
//	/status/{code}      replies with that status (200-599) and a short text
//	                    body; ?retry_after=V adds "Retry-After: V" verbatim,
//	                    ?location=URL adds "Location: URL" (for redirects).
//	/slow?ms=N          waits N milliseconds (or until the client goes away),
//	                    then replies 200 "slow".
//	/bytes?n=N          replies N bytes of 'x' with a Content-Length;
//	                    &chunked=1 streams them without one (chunked in
//	                    HTTP/1.1, DATA frames in HTTP/2).
//	                    &ctrl=1 sends N bytes of U+0001 instead (valid
//	                    UTF-8 that JSON escapes in six bytes each);
//	                    &pattern=1 sends Pattern(N) instead, bytes that
//	                    never repeat (PatternSHA256 is their digest).
//	/sha256             200 JSON {"size", "sha256"} of the request body,
//	                    streamed: the check of a large request body.
//	/binary             replies application/octet-stream bytes that are not
//	                    valid UTF-8.
//	/flaky/{key}?fail=N&code=C&retry_after=V
//	                    replies C (default 503, with Retry-After V when given)
//	                    to the first N requests for key, then 200 JSON
//	                    {"key", "attempt"}; counts are kept per key for the
//	                    server's life.
//	/soap               POST only. SOAP 1.1 (Content-Type text/xml and a
//	                    SOAPAction header, required) or SOAP 1.2
//	                    (application/soap+xml, action parameter optional).
//	                    Replies 200 with an envelope of the same version whose
//	                    Body holds p:EchoResponse{p:Action, p:Header, p:Body}
//	                    (namespace urn:mtlsrelay:partner) echoing the action and
//	                    the request's Header and Body content verbatim. When
//	                    the request Body holds an element named Fail (any
//	                    namespace, any depth) it replies 500 with a fault of
//	                    that version (1.1: faultcode soap:Server, faultstring,
//	                    detail; 1.2: Code/Value env:Receiver with Subcode
//	                    p:RequestedFailure, Reason/Text, Detail); the fault's
//	                    reason is the text of Fail, or "requested failure".
//	                    ?mtom=1 wraps any SOAP reply in a multipart/related
//	                    (MTOM/XOP) message whose root part is the envelope.
//	                    A wrong content type gets 415, a missing SOAPAction
//	                    400, an envelope of the wrong version a VersionMismatch
//	                    fault.
//
// Every connection is closed with a lingering close (half-close, then drain
// for up to two seconds), as nginx does, so a TLS alert sent just before the
// close reaches the client instead of being lost to a TCP reset.
package partner

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtlsrelay/mtlsrelay/internal/linger"
)

// Options configure a partner server. Certificate and ClientCAs are required;
// other zero values mean defaults.
type Options struct {
	// Addr is the listen address. Default "127.0.0.1:0" (a free port).
	Addr string
	// Certificate is the server's certificate and key.
	Certificate tls.Certificate
	// OCSPStaple is a DER OCSP response stapled to every handshake whose
	// client asks for one (status_request), as Certificate.OCSPStaple; it
	// replaces any staple Certificate carries. The server sends it as it
	// is, whatever it says. Default: Certificate's staple (usually none).
	OCSPStaple []byte
	// ClientCAs verify client certificates; a client certificate is required.
	ClientCAs *x509.CertPool
	// MinTLSVersion is the lowest TLS version accepted. Default TLS 1.2.
	MinTLSVersion uint16
	// MaxTLSVersion is the highest TLS version offered (tls.VersionTLS12 to
	// force TLS 1.2). Default TLS 1.3.
	MaxTLSVersion uint16
	// DisableHTTP2 turns HTTP/2 off; by default it is offered through ALPN.
	DisableHTTP2 bool
	// ErrorLog receives the server's errors (failed handshakes among them).
	// Default: discarded.
	ErrorLog *log.Logger
}

// Counters are what the server has seen since it started.
type Counters struct {
	// Requests counts HTTP requests served, on any route.
	Requests int64
	// Routes counts requests per route pattern ("/echo", "/status/{code}", ...).
	Routes map[string]int64
	// Connections counts accepted TCP connections.
	Connections int64
	// ClientHellos counts TLS handshakes begun.
	ClientHellos int64
	// Handshakes counts TLS handshakes whose client certificate was verified
	// (full and resumed).
	Handshakes int64
	// Resumed counts the Handshakes that resumed an earlier session.
	Resumed int64
	// MaxInFlight is the most requests the server was handling at once.
	MaxInFlight int64
}

// Server is a running partner server. Its methods are safe for concurrent use.
type Server struct {
	srv  *http.Server
	ln   *linger.Listener
	url  string
	done <-chan struct{}

	requests, hellos, handshakes, resumed atomic.Int64
	inflight, maxInflight                 atomic.Int64

	mu     sync.Mutex
	routes map[string]int64
	flaky  map[string]int
	keys   map[string]int64
}

// Start listens and serves until Close.
func Start(opts Options) (*Server, error) {
	if len(opts.Certificate.Certificate) == 0 {
		return nil, errors.New("partner: Options.Certificate is required")
	}
	if opts.ClientCAs == nil {
		return nil, errors.New("partner: Options.ClientCAs is required")
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	minV := opts.MinTLSVersion
	if minV == 0 {
		minV = tls.VersionTLS12
	}
	errLog := opts.ErrorLog
	if errLog == nil {
		errLog = log.New(io.Discard, "", 0)
	}
	s := &Server{
		routes: make(map[string]int64),
		flaky:  make(map[string]int),
	}
	cert := opts.Certificate
	if opts.OCSPStaple != nil {
		cert.OCSPStaple = opts.OCSPStaple
	}
	tcfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    opts.ClientCAs,
		MinVersion:   minV,
		MaxVersion:   opts.MaxTLSVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.hellos.Add(1)
			return nil, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			s.handshakes.Add(1)
			if cs.DidResume {
				s.resumed.Add(1)
			}
			return nil
		},
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(!opts.DisableHTTP2)
	s.srv = &http.Server{
		Handler:           s.routesHandler(),
		TLSConfig:         tcfg,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	ln, done, err := linger.ServeTLS(s.srv, addr)
	if err != nil {
		return nil, fmt.Errorf("partner: %w", err)
	}
	s.ln, s.done = ln, done
	s.url = "https://" + ln.Addr().String()
	return s, nil
}

// URL returns the server's base URL, "https://127.0.0.1:PORT".
func (s *Server) URL() string { return s.url }

// Addr returns the address the server listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Requests returns a snapshot of the server's counters.
func (s *Server) Requests() Counters {
	s.mu.Lock()
	routes := make(map[string]int64, len(s.routes))
	for k, v := range s.routes {
		routes[k] = v
	}
	s.mu.Unlock()
	return Counters{
		Requests:     s.requests.Load(),
		Routes:       routes,
		Connections:  s.ln.Accepted(),
		ClientHellos: s.hellos.Load(),
		Handshakes:   s.handshakes.Load(),
		Resumed:      s.resumed.Load(),
		MaxInFlight:  s.maxInflight.Load(),
	}
}

// KeyHeader is the request header whose values the server counts: tests
// send a unique key per call to see how often the partner received it.
const KeyHeader = "X-Test-Key"

// KeyCounts returns how many requests carried each value of KeyHeader.
func (s *Server) KeyCounts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.keys))
	for k, v := range s.keys {
		out[k] = v
	}
	return out
}

// Close stops the server at once, closing every connection, and waits for
// its goroutines.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	s.ln.Shutdown()
	return err
}
