package jobs

import (
	"bytes"
	json "github.com/goccy/go-json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Result is the one final outcome of a call, published to its reply_to.
type Result struct {
	// ID, Connection and Metadata are echoed from the call.
	ID         string            `json:"id"`
	Connection string            `json:"connection"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// OK is true when the exchange completed with a 2xx status and no SOAP fault.
	OK bool `json:"ok"`
	// Status is the HTTP status, 0 when none was received.
	Status int `json:"status"`
	// Headers are the response headers.
	Headers map[string][]string `json:"headers,omitempty"`
	// Body is the response body when it is valid UTF-8.
	Body string `json:"body,omitempty"`
	// BodyBase64 is the response body when it is not valid UTF-8.
	BodyBase64 []byte `json:"body_base64,omitempty"`
	// BodyRef replaces Body and BodyBase64 when the response body is larger
	// than worker.inline_body_max: the body is in the Object Store, where
	// it expires with nats.results_max_age.
	BodyRef *BodyRef `json:"body_ref,omitempty"`
	// SOAPFault is set when the response is a SOAP 1.1 or 1.2 fault.
	SOAPFault *SOAPFault `json:"soap_fault,omitempty"`
	// Error is set when no usable response was obtained.
	Error *Error `json:"error,omitempty"`
	// Attempt is the 1-based attempt that produced this result.
	Attempt int `json:"attempt"`
	// Worker names the worker that produced it.
	Worker string `json:"worker"`
	// Timing holds the phases of the attempt, in milliseconds.
	Timing Timing `json:"timing"`
	// ClientCert describes the certificate presented, when one was.
	ClientCert *ClientCert `json:"client_cert,omitempty"`
	// CompletedAt is when the result was made.
	CompletedAt time.Time `json:"completed_at"`
	// Progress marks a progress message, sent only to a call that asked for
	// progress: the attempt above failed and another follows after
	// RetryInMS. The final result never has it.
	Progress bool `json:"progress,omitempty"`
	// RetryInMS is the delay before the next attempt, on progress messages.
	RetryInMS int64 `json:"retry_in_ms,omitempty"`
}

// SOAPFault is a SOAP 1.1 or 1.2 fault, flattened.
type SOAPFault struct {
	// Code is faultcode (1.1) or Code/Value, with Subcode values joined by " / " (1.2).
	Code string `json:"code"`
	// Reason is faultstring (1.1) or the first Reason/Text (1.2).
	Reason string `json:"reason"`
	// Detail is the inner XML of detail (1.1) or Detail (1.2).
	Detail string `json:"detail,omitempty"`
}

// Timing holds the phases of one attempt in milliseconds. A phase that did
// not happen (a reused connection has no dns, connect or tls) is 0.
type Timing struct {
	QueuedMS  float64 `json:"queued_ms"`
	DNSMS     float64 `json:"dns_ms"`
	ConnectMS float64 `json:"connect_ms"`
	TLSMS     float64 `json:"tls_ms"`
	TTFBMS    float64 `json:"ttfb_ms"`
	TotalMS   float64 `json:"total_ms"`
}

// Millis converts a duration to milliseconds with microsecond precision.
func Millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// ClientCert describes the client certificate that was presented.
type ClientCert struct {
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// SetBody stores a copy of b as Body when it is valid UTF-8, else as
// BodyBase64.
func (r *Result) SetBody(b []byte) {
	if utf8.Valid(b) {
		r.Body, r.BodyBase64 = string(b), nil
		return
	}
	r.Body, r.BodyBase64 = "", bytes.Clone(b)
}

// ResponseBody returns the body bytes, whichever field holds them.
func (r *Result) ResponseBody() []byte {
	if r.BodyBase64 != nil {
		return r.BodyBase64
	}
	return []byte(r.Body)
}

// FailedResult returns the result of a call that ended with err.
func FailedResult(c *Call, err error) *Result {
	r := &Result{CompletedAt: time.Now().UTC(), Error: AsError(err)}
	if c != nil {
		r.ID, r.Connection, r.Metadata = c.ID, c.Connection, c.Metadata
	}
	return r
}

// EncodeResult is the JSON of a result message, as workers publish it.
func EncodeResult(r *Result) ([]byte, error) { return json.Marshal(r) }

// ProgressMsgID is the Nats-Msg-Id of the progress message about a failed
// attempt of call id. A call id cannot hold "/", so it never equals the
// final result's (the call id), and JetStream's duplicate window drops a
// progress message that a redelivery repeats without touching the final
// result.
func ProgressMsgID(id string, attempt int) string { return id + "/progress/" + strconv.Itoa(attempt) }

// DecodeResult parses a result message.
func DecodeResult(data []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
