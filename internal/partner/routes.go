package partner

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxRequestBody bounds what a route reads from a request.
const maxRequestBody = 32 << 20

func (s *Server) routesHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", s.echo)
	mux.HandleFunc("/status/{code}", s.status)
	mux.HandleFunc("/slow", s.slow)
	mux.HandleFunc("/bytes", s.bytes)
	mux.HandleFunc("/sha256", s.sha256)
	mux.HandleFunc("/binary", s.binary)
	mux.HandleFunc("/flaky/{key}", s.flakyRoute)
	mux.HandleFunc("/soap", s.soap)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		for m := s.maxInflight.Load(); n > m && !s.maxInflight.CompareAndSwap(m, n); m = s.maxInflight.Load() {
		}
		_, pattern := mux.Handler(r)
		s.mu.Lock()
		s.routes[pattern]++
		if key := r.Header.Get(KeyHeader); key != "" {
			if s.keys == nil {
				s.keys = map[string]int64{}
			}
			s.keys[key]++
		}
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
}

// EchoResponse is the JSON body of /echo.
type EchoResponse struct {
	Method        string              `json:"method"`
	Path          string              `json:"path"`
	RawQuery      string              `json:"raw_query"`
	Host          string              `json:"host"`
	Headers       map[string][]string `json:"headers"`
	ContentLength int64               `json:"content_length"`
	Body          string              `json:"body,omitempty"`
	BodyBase64    []byte              `json:"body_base64,omitempty"`
	ClientCert    *EchoCert           `json:"client_cert,omitempty"`
	TLSVersion    string              `json:"tls_version"`
	Protocol      string              `json:"protocol"`
}

// EchoCert describes the client certificate the server verified.
type EchoCert struct {
	Subject string `json:"subject"`
	Serial  string `json:"serial"`
	Issuer  string `json:"issuer"`
}

func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	out := EchoResponse{
		Method:        r.Method,
		Path:          r.URL.Path,
		RawQuery:      r.URL.RawQuery,
		Host:          r.Host,
		Headers:       r.Header,
		ContentLength: r.ContentLength,
		Protocol:      r.Proto,
	}
	if utf8.Valid(body) {
		out.Body = string(body)
	} else {
		out.BodyBase64 = body
	}
	if r.TLS != nil {
		out.TLSVersion = tls.VersionName(r.TLS.Version)
		if len(r.TLS.PeerCertificates) > 0 {
			c := r.TLS.PeerCertificates[0]
			out.ClientCert = &EchoCert{Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), Issuer: c.Issuer.String()}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "status must be a number from 200 to 599", http.StatusBadRequest)
		return
	}
	if ra := r.URL.Query().Get("retry_after"); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	if loc := r.URL.Query().Get("location"); loc != "" {
		w.Header().Set("Location", loc)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

func (s *Server) slow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 {
		http.Error(w, "ms must be a non-negative number of milliseconds", http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "slow\n")
}

// chunk is what /bytes writes, over and over: never written to.
var chunk = []byte(strings.Repeat("x", 4096))

func (s *Server) bytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > 1<<30 {
		http.Error(w, "n must be a number of bytes from 0 to 1 GiB", http.StatusBadRequest)
		return
	}
	chunked := r.URL.Query().Get("chunked") == "1"
	w.Header().Set("Content-Type", "application/octet-stream")
	if !chunked {
		w.Header().Set("Content-Length", strconv.Itoa(n))
	}
	w.WriteHeader(http.StatusOK)
	if r.URL.Query().Get("ctrl") == "1" {
		// Control characters: valid UTF-8 that JSON escapes in six bytes.
		ctrl := bytes.Repeat([]byte{0x01}, len(chunk))
		for n > 0 {
			k := min(n, len(ctrl))
			if _, err := w.Write(ctrl[:k]); err != nil {
				return
			}
			n -= k
		}
		return
	}
	if r.URL.Query().Get("pattern") == "1" {
		buf := make([]byte, 32<<10)
		p := Pattern(int64(n))
		for {
			k, err := p.Read(buf)
			if k > 0 {
				if _, werr := w.Write(buf[:k]); werr != nil {
					return
				}
				if chunked {
					http.NewResponseController(w).Flush()
				}
			}
			if err != nil {
				return
			}
		}
	}
	for n > 0 {
		k := min(n, len(chunk))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		n -= k
		if chunked {
			http.NewResponseController(w).Flush()
		}
	}
}

// BinaryBody is the body /binary replies: bytes that are not valid UTF-8.
var BinaryBody = []byte{0x00, 0xff, 0xfe, 0x80, 'm', 't', 'l', 's', 0xc3, 0x28, 0x01}

func (s *Server) binary(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(BinaryBody)
}

func (s *Server) flakyRoute(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fail, _ := strconv.Atoi(q.Get("fail"))
	code := http.StatusServiceUnavailable
	if c := q.Get("code"); c != "" {
		v, err := strconv.Atoi(c)
		if err != nil || v < 200 || v > 599 {
			http.Error(w, "code must be a number from 200 to 599", http.StatusBadRequest)
			return
		}
		code = v
	}
	key := r.PathValue("key")
	s.mu.Lock()
	s.flaky[key]++
	n := s.flaky[key]
	s.mu.Unlock()
	if n <= fail {
		if ra := q.Get("retry_after"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		http.Error(w, fmt.Sprintf("flaky %s: failure %d of %d", key, n, fail), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"key": key, "attempt": n})
}
