package jobs

import (
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Call kinds.
const (
	KindREST = "rest"
	KindSOAP = "soap"
)

// SOAP versions.
const (
	SOAP11 = "1.1"
	SOAP12 = "1.2"
)

// Limits on a call, so a hostile or broken message cannot exhaust a worker.
const (
	// MaxCallBytes bounds the encoded size of one call message.
	MaxCallBytes = 8 << 20
	// MaxHeaders bounds the number of header values of a call.
	MaxHeaders = 200
	// MaxHeaderBytes bounds the total size of header names and values.
	MaxHeaderBytes = 64 << 10
	// MaxURLBytes bounds path, url and query once joined.
	MaxURLBytes = 8 << 10
	// MaxAttemptsLimit bounds max_attempts.
	MaxAttemptsLimit = 100
)

// Call is one outbound request a flow asks a worker to make. Its JSON form is
// the wire contract of SPEC.md; every field is documented once, here.
type Call struct {
	// ID is the caller's unique id, 1-128 chars of [A-Za-z0-9._:-]. It is the
	// idempotency key and travels as Nats-Msg-Id. Required.
	ID string `json:"id"`
	// Connection names the connection to use. Default: the last token of the
	// subject the call was published to; when both are given they must agree.
	Connection string `json:"connection,omitempty"`
	// Kind is "rest" or "soap". Default: "soap" when SOAP is set, else "rest".
	Kind string `json:"kind,omitempty"`
	// Method is the HTTP method. Default GET, or POST for SOAP.
	Method string `json:"method,omitempty"`
	// Path is joined to the connection's base URL. Default "".
	Path string `json:"path,omitempty"`
	// URL is an absolute https URL used instead of Path; its host must be in
	// the connection's allow_hosts.
	URL string `json:"url,omitempty"`
	// Query is added to the URL's query, values in order.
	Query map[string][]string `json:"query,omitempty"`
	// Headers are request headers; several values of one name are sent in order.
	Headers map[string][]string `json:"headers,omitempty"`
	// Body is a UTF-8 request body.
	Body string `json:"body,omitempty"`
	// BodyBase64 is a binary request body, base64 in JSON. Exclusive with Body.
	BodyBase64 []byte `json:"body_base64,omitempty"`
	// BodyRef names the request body the flow uploaded to the Object
	// Store bucket mtlsrelay_bodies first ({"name": ...}), for a body too
	// large for a message; with tenants the name starts with "<tenant>/".
	// Exclusive with Body, BodyBase64 and SOAP.
	BodyRef *RequestBodyRef `json:"body_ref,omitempty"`
	// SOAP, when set, makes the worker build a SOAP envelope around its XML.
	SOAP *SOAP `json:"soap,omitempty"`
	// TimeoutMS is the deadline of one whole attempt. Default: the connection's.
	TimeoutMS int `json:"timeout_ms,omitempty"`
	// MaxAttempts bounds the attempts. Default: the connection's (default 5).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Idempotent says whether an attempt that may have reached the server can
	// be retried. Default true for GET, HEAD, PUT, DELETE and OPTIONS.
	Idempotent *bool `json:"idempotent,omitempty"`
	// ReplyTo is the subject the result is published to. Durable calls need
	// one; direct calls answer the request's reply inbox.
	ReplyTo string `json:"reply_to,omitempty"`
	// Metadata is echoed back on the result untouched.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Progress asks for a progress message on reply_to after every failed
	// attempt that will be retried, before the final result (an extension
	// of SPEC.md, which leaves the form open). Durable calls only: a direct
	// call's requester takes the first reply. Default false.
	Progress bool `json:"progress,omitempty"`

	// Tenant is not part of the JSON: the worker sets it from the subject
	// the call arrived on, the one the NATS server let the flow publish
	// on. "" for a v1 call.
	Tenant string `json:"-"`
}

// SOAP describes a SOAP request: the worker builds the envelope.
type SOAP struct {
	// Version is "1.1" (default) or "1.2". With Operation, empty means
	// the version of the WSDL port that has the operation.
	Version string `json:"version,omitempty"`
	// Action is sent as SOAPAction (1.1) or the action parameter of the
	// application/soap+xml content type (1.2).
	Action string `json:"action,omitempty"`
	// Operation names a WSDL operation ("Op", "Port/Op" or
	// "Service/Port/Op") of the connection's wsdl, instead of Action: the
	// worker fills in the SOAPAction, the version and the endpoint from
	// the WSDL. Exclusive with Action.
	Operation string `json:"operation,omitempty"`
	// Header is XML placed inside soap:Header; empty means no Header element.
	Header string `json:"header,omitempty"`
	// Body is XML placed inside soap:Body.
	Body string `json:"body,omitempty"`
}

// charset is a set of ASCII bytes, checked without regular expressions:
// these checks run on every call.
type charset [256]bool

func newCharset(extra string) *charset {
	var c charset
	for b := '0'; b <= '9'; b++ {
		c[b] = true
	}
	for b := 'a'; b <= 'z'; b++ {
		c[b], c[b-'a'+'A'] = true, true
	}
	for i := 0; i < len(extra); i++ {
		c[extra[i]] = true
	}
	return &c
}

// matches reports whether s is 1 to maxLen bytes, all in the set.
func (c *charset) matches(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !c[s[i]] {
			return false
		}
	}
	return true
}

var (
	idChars     = newCharset("._:-")
	nameChars   = newCharset("_-")
	methodChars = newCharset("!#$%&'*+.^_`|~-") // RFC 9110 token
	// operationChars: WSDL names (XML NCNames, ASCII only), "/" between
	// service, port and operation.
	operationChars = newCharset("._-/")
	zoneChars      = newCharset("-")
)

// ValidName reports whether name can name a connection or a profile: 1-128
// chars of [A-Za-z0-9_-], so that it is one subject token and one KV key token.
func ValidName(name string) bool { return nameChars.matches(name, 128) }

var idempotentMethods = map[string]bool{"GET": true, "HEAD": true, "PUT": true, "DELETE": true, "OPTIONS": true}

// DecodeCall parses a call message, applies the defaults and validates it.
// subjectConnection is the connection named by the subject the call arrived
// on ("" when none). Any failure is an *Error with CodeInvalidCall, whose
// message says what to fix; a call that decoded is returned with it so that
// its id and reply_to can still be used to report the failure.
func DecodeCall(data []byte, subjectConnection string) (*Call, error) {
	if len(data) > MaxCallBytes {
		return nil, Errorf(CodeInvalidCall, "call is %d bytes, over the limit of %d; send large bodies by reference", len(data), MaxCallBytes)
	}
	if !utf8.Valid(data) {
		// Decoders replace invalid bytes, so two invalid keys would become
		// one the policy filter in front never saw.
		return nil, Errorf(CodeInvalidCall, "call is not valid UTF-8 JSON")
	}
	var c Call
	if err := unmarshalCall(data, &c); err != nil {
		return nil, Errorf(CodeInvalidCall, "call is not valid JSON: %s", describeJSONError(err))
	}
	if err := checkMembers(data); err != nil {
		return nil, Errorf(CodeInvalidCall, "call is ambiguous JSON: %s", err)
	}
	if err := c.Normalize(subjectConnection); err != nil {
		return &c, err
	}
	return &c, nil
}

// unmarshalCall decodes data into c. Unmarshal also refuses data after the
// object. A decoder defect that panics on some input makes that input
// invalid, never a crash or a call redelivered forever.
func unmarshalCall(data []byte, c *Call) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the JSON decoder failed on this input (%T)", p)
		}
	}()
	return json.Unmarshal(data, c)
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	default:
		// Other decoder errors describe the input's shape, never its content.
		return strings.TrimPrefix(err.Error(), "json: ")
	}
}

// Normalize applies the defaults of SPEC.md and validates the call.
// subjectConnection is the connection the subject names, or "".
func (c *Call) Normalize(subjectConnection string) error {
	if c.ID == "" {
		return Errorf(CodeInvalidCall, "call has no id; set \"id\" to a unique string of 1-128 chars [A-Za-z0-9._:-]")
	}
	if !idChars.matches(c.ID, 128) {
		return Errorf(CodeInvalidCall, "call id is not 1-128 chars of [A-Za-z0-9._:-]")
	}
	switch {
	case c.Connection == "":
		c.Connection = subjectConnection
	case subjectConnection != "" && c.Connection != subjectConnection:
		return Errorf(CodeInvalidCall, "call names connection %q but was published for connection %q; they must agree", c.Connection, subjectConnection)
	}
	if c.Connection == "" {
		return Errorf(CodeInvalidCall, "call names no connection; publish to <prefix>.calls.<connection> or set \"connection\"")
	}
	if !ValidName(c.Connection) {
		return Errorf(CodeInvalidCall, "connection name must be 1-128 chars of [A-Za-z0-9_-]")
	}
	if c.Kind == "" {
		c.Kind = KindREST
		if c.SOAP != nil {
			c.Kind = KindSOAP
		}
	}
	switch c.Kind {
	case KindREST:
		if c.SOAP != nil {
			return Errorf(CodeInvalidCall, "kind is \"rest\" but \"soap\" is set; drop one of them")
		}
	case KindSOAP:
		if c.SOAP == nil {
			return Errorf(CodeInvalidCall, "kind is \"soap\" but \"soap\" is missing; give soap.body at least")
		}
		if c.SOAP.Operation != "" {
			if c.SOAP.Action != "" {
				return Errorf(CodeInvalidCall, "give soap.operation or soap.action, not both: the operation's SOAPAction comes from the connection's WSDL")
			}
			if !operationChars.matches(c.SOAP.Operation, 512) {
				return Errorf(CodeInvalidCall, "soap.operation must be a WSDL operation name, or Port/Operation or Service/Port/Operation (letters, digits, . _ - /)")
			}
		} else if c.SOAP.Version == "" {
			c.SOAP.Version = SOAP11
		}
		if c.SOAP.Version != "" && c.SOAP.Version != SOAP11 && c.SOAP.Version != SOAP12 {
			return Errorf(CodeInvalidCall, "soap.version must be \"1.1\" or \"1.2\", not %q", c.SOAP.Version)
		}
		if c.Body != "" || len(c.BodyBase64) > 0 {
			return Errorf(CodeInvalidCall, "a SOAP call takes its payload from soap.body; drop body and body_base64")
		}
	default:
		return Errorf(CodeInvalidCall, "kind must be \"rest\" or \"soap\", not %q", c.Kind)
	}
	if c.Method == "" {
		c.Method = "GET"
		if c.Kind == KindSOAP {
			c.Method = "POST"
		}
	}
	if !methodChars.matches(c.Method, 32) {
		return Errorf(CodeInvalidCall, "method must be an HTTP method token such as GET or POST")
	}
	c.Method = strings.ToUpper(c.Method)
	if forbiddenMethods[c.Method] {
		return Errorf(CodeInvalidCall, "method %s is not allowed: a call is a request to its connection's partner, not a tunnel or an echo", c.Method)
	}
	if c.Idempotent == nil {
		v := idempotentMethods[c.Method]
		c.Idempotent = &v
	}
	if c.Body != "" && len(c.BodyBase64) > 0 {
		return Errorf(CodeInvalidCall, "body and body_base64 are both set; send one of them")
	}
	if c.BodyRef != nil {
		if c.Body != "" || len(c.BodyBase64) > 0 || c.SOAP != nil {
			return Errorf(CodeInvalidCall, "body_ref is set with body, body_base64 or soap; send the body one way")
		}
		if err := CheckObjectName(c.BodyRef.Name); err != nil {
			return err
		}
	}
	if !utf8.ValidString(c.Body) {
		return Errorf(CodeInvalidCall, "body is not valid UTF-8; send bytes as body_base64")
	}
	if err := c.validateTarget(); err != nil {
		return err
	}
	if err := c.validateHeaders(); err != nil {
		return err
	}
	if c.TimeoutMS < 0 {
		return Errorf(CodeInvalidCall, "timeout_ms must not be negative")
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > MaxAttemptsLimit {
		return Errorf(CodeInvalidCall, "max_attempts must be between 0 (the connection's) and %d", MaxAttemptsLimit)
	}
	if c.ReplyTo != "" && !ValidSubject(c.ReplyTo) {
		return Errorf(CodeInvalidCall, "reply_to %q is not a concrete NATS subject (no wildcards, no empty tokens, no spaces)", c.ReplyTo)
	}
	return nil
}

func (c *Call) validateTarget() error {
	if c.Path != "" && c.URL != "" {
		return Errorf(CodeInvalidCall, "path and url are both set; give a path under the connection's base URL or an absolute url")
	}
	size := len(c.Path) + len(c.URL)
	for k, vs := range c.Query {
		for _, v := range vs {
			size += len(k) + len(v) + 2
		}
	}
	if size > MaxURLBytes {
		return Errorf(CodeInvalidCall, "path, url and query add up to %d bytes, over the limit of %d", size, MaxURLBytes)
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || u.Host == "" {
			return Errorf(CodeInvalidCall, "url must be an absolute https URL")
		}
		if u.Scheme != "https" {
			return Errorf(CodeInvalidCall, "url scheme must be https, not %q: mtlsrelay only makes TLS calls", u.Scheme)
		}
		if u.User != nil {
			return Errorf(CodeInvalidCall, "url must not carry user info; put credentials in headers")
		}
		if strings.Contains(u.Host, "%") {
			// An IPv6 zone ("[::1%25x.partner.example]") would match a
			// wildcard allow_hosts entry by its text.
			return Errorf(CodeInvalidCall, "url host must not carry an IPv6 zone (%%)")
		}
		if err := checkSegments(u.EscapedPath()); err != nil {
			return err
		}
	}
	if c.Path != "" {
		u, err := url.Parse(c.Path)
		if err != nil {
			return Errorf(CodeInvalidCall, "path is not a valid URL path")
		}
		if u.IsAbs() || u.Host != "" {
			return Errorf(CodeInvalidCall, "path must be relative to the connection's base URL; use url for an absolute URL")
		}
		if err := checkSegments(u.EscapedPath()); err != nil {
			return err
		}
	}
	return nil
}

// checkSegments refuses a path that could leave the connection's base_url
// path once a server or a gateway normalizes it: "." and ".." segments,
// raw or percent-encoded (%2e%2e), also where an encoded slash (%2f) or a
// backslash (raw or %5c, a separator to IIS and some gateways) makes one
// ("..%2f", "a\..\b"). An encoded slash inside a name ("a%2Fb") stays.
func checkSegments(escaped string) error {
	for seg := range strings.SplitSeq(escaped, "/") {
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return Errorf(CodeInvalidCall, "path has a malformed percent-escape in %q", truncate(seg, 64))
		}
		if strings.Contains(strings.ToLower(dec), "%2") || strings.Contains(strings.ToLower(dec), "%5c") {
			// Encoded twice (%252e): a gateway that decodes again would
			// see a dot, a slash or a backslash.
			return Errorf(CodeInvalidCall, "path segment %q is percent-encoded twice; send each character encoded once", truncate(seg, 64))
		}
		// Java servers (Tomcat, Jetty) drop ";params" from a segment
		// before resolving it: "..;x" is "..".
		dec, _, _ = strings.Cut(dec, ";")
		if dec == "." || dec == ".." {
			return Errorf(CodeInvalidCall, "path segment %q is a dot-segment; a call's path stays under its connection's base_url, so dot-segments (raw or percent-encoded) are refused", truncate(seg, 64))
		}
		for part := range strings.FieldsFuncSeq(dec, func(r rune) bool { return r == '/' || r == '\\' }) {
			if part == "." || part == ".." {
				return Errorf(CodeInvalidCall, "path segment %q is or holds a dot-segment; a call's path stays under its connection's base_url, so dot-segments (raw, percent-encoded, or behind an encoded slash or a backslash) are refused", truncate(seg, 64))
			}
		}
	}
	return nil
}

func (c *Call) validateHeaders() error {
	n, size := 0, 0
	for k, vs := range c.Headers {
		if !validHeaderName(k) {
			return Errorf(CodeInvalidCall, "header name %q is not a valid HTTP field name", truncate(k, 64))
		}
		if why, ok := relayHeaders[strings.ToLower(k)]; ok {
			return Errorf(CodeInvalidCall, "header %q cannot be set by a call: %s", k, why)
		}
		for _, v := range vs {
			if i := strings.IndexFunc(v, isControl); i >= 0 {
				return Errorf(CodeInvalidCall, "header %q has a value with the control character %U at byte %d; a field value may hold visible characters, spaces and tabs only", k, v[i], i)
			}
			n++
			size += len(k) + len(v)
		}
	}
	if n > MaxHeaders {
		return Errorf(CodeInvalidCall, "call has %d header values, over the limit of %d", n, MaxHeaders)
	}
	if size > MaxHeaderBytes {
		return Errorf(CodeInvalidCall, "headers add up to %d bytes, over the limit of %d", size, MaxHeaderBytes)
	}
	return nil
}

// relayHeaders are the request headers a call may not set, with why:
// they would take the request out of its connection (Host) or are the
// relay's to write for the connection it makes (framing, hop-by-hop,
// proxy credentials).
var relayHeaders = map[string]string{
	"host":                "the host is the connection's (its base_url, or an allowed url); a Host of another name would reach a host nobody allowed through a shared gateway",
	"content-length":      "the relay frames the body it sends",
	"transfer-encoding":   "the relay frames the body it sends",
	"te":                  "hop-by-hop headers belong to the relay's own connection",
	"trailer":             "hop-by-hop headers belong to the relay's own connection",
	"connection":          "hop-by-hop headers belong to the relay's own connection",
	"keep-alive":          "hop-by-hop headers belong to the relay's own connection",
	"upgrade":             "hop-by-hop headers belong to the relay's own connection",
	"proxy-connection":    "hop-by-hop headers belong to the relay's own connection",
	"proxy-authorization": "proxy credentials are the relay's, set by its config",
	// Headers that gateways and frameworks honour to rewrite the path,
	// the method or the host after the relay chose them.
	"x-original-url":         "it rewrites the path on IIS and some gateways, out of the connection's base_url",
	"x-rewrite-url":          "it rewrites the path on IIS and some gateways, out of the connection's base_url",
	"x-http-method-override": "it changes the method a framework runs; set method instead",
	"x-http-method":          "it changes the method a framework runs; set method instead",
	"x-method-override":      "it changes the method a framework runs; set method instead",
	"x-forwarded-host":       "it names another host to gateways and frameworks",
}

// forbiddenMethods take a request out of its connection (CONNECT opens a
// tunnel to any host:port the request names) or echo it back with the
// relay's credentials (TRACE, TRACK).
var forbiddenMethods = map[string]bool{"CONNECT": true, "TRACE": true, "TRACK": true}

// isControl reports the characters an HTTP field value may not hold:
// the C0 controls but horizontal tab, and DEL (RFC 9110, section 5.5).
func isControl(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }

func validHeaderName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		ch := k[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", ch) >= 0 {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// IsIdempotent reports whether an attempt that may have reached the server
// may be repeated. It is valid after Normalize.
func (c *Call) IsIdempotent() bool { return c.Idempotent != nil && *c.Idempotent }

// RequestBody returns the body bytes of a REST call.
func (c *Call) RequestBody() []byte {
	if len(c.BodyBase64) > 0 {
		return c.BodyBase64
	}
	return []byte(c.Body)
}
