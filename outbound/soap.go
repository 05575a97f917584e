package outbound

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// SOAP envelope namespaces.
const (
	SOAP11Namespace = "http://schemas.xmlsoap.org/soap/envelope/"
	SOAP12Namespace = "http://www.w3.org/2003/05/soap-envelope"
)

// newSOAPRequest builds the HTTP request of a SOAP call: an envelope of the
// call's version around its Header and Body XML (placed verbatim once they
// are checked to be well-formed), with the version's content type and
// action. The call's own headers may override both.
//
//	1.1: Content-Type: text/xml; charset=utf-8 and SOAPAction: "<action>"
//	1.2: Content-Type: application/soap+xml; charset=utf-8; action="<action>"
//
// With settings' wss, the envelope is signed with mat's key and
// certificate (signEnvelope).
func newSOAPRequest(ctx context.Context, call *jobs.Call, u *url.URL, settings *secrets.SOAPSettings, mat *secrets.Material) (*http.Request, *jobs.Error) {
	s := call.SOAP
	if s == nil {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "kind is \"soap\" but \"soap\" is missing; give soap.body at least")
	}
	if strings.ContainsAny(s.Action, "\"\\\r\n\x00") {
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "soap.action must not contain quotes, backslashes or line breaks")
	}
	header, err := checkXMLFragment("soap.header", s.Header)
	if err != nil {
		return nil, err
	}
	body, err := checkXMLFragment("soap.body", s.Body)
	if err != nil {
		return nil, err
	}
	ns, contentType := SOAP11Namespace, "text/xml; charset=utf-8"
	if s.Version == jobs.SOAP12 {
		ns, contentType = SOAP12Namespace, "application/soap+xml; charset=utf-8"
		if s.Action != "" {
			contentType += `; action="` + s.Action + `"`
		}
	}
	var b bytes.Buffer
	b.Grow(len(header) + len(body) + 256)
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	b.WriteString(`<soap:Envelope xmlns:soap="` + ns + `">`)
	if header != "" {
		b.WriteString(`<soap:Header>` + header + `</soap:Header>`)
	}
	b.WriteString(`<soap:Body>`)
	b.WriteString(body)
	b.WriteString(`</soap:Body></soap:Envelope>`)

	envelope := b.Bytes()
	if settings != nil && settings.WSS != nil {
		var jerr *jobs.Error
		if envelope, jerr = signEnvelope(call, envelope, settings.WSS, mat); jerr != nil {
			return nil, jerr
		}
	}
	req, err := newRequest(ctx, call.Method, u, envelope)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if s.Version != jobs.SOAP12 {
		req.Header.Set("SOAPAction", `"`+s.Action+`"`)
	}
	applyHeaders(req, call.Headers)
	return req, nil
}

// checkXMLFragment checks that s is well-formed XML content (elements,
// text, comments; several top-level elements allowed) and returns it
// without a leading XML declaration. A DOCTYPE is refused: it has no place
// inside an envelope.
func checkXMLFragment(field, s string) (string, *jobs.Error) {
	if t := strings.TrimLeft(s, " \t\r\n"); strings.HasPrefix(t, "<?xml") {
		end := strings.Index(t, "?>")
		if end < 0 {
			return "", jobs.Errorf(jobs.CodeInvalidCall, "%s starts an XML declaration that never ends", field)
		}
		s = t[end+2:]
	}
	if strings.TrimSpace(s) == "" {
		return "", nil
	}
	if !utf8.ValidString(s) {
		return "", jobs.Errorf(jobs.CodeInvalidCall, "%s is not valid UTF-8", field)
	}
	// Token (unlike RawToken) also checks that end tags match start tags.
	dec := xml.NewDecoder(strings.NewReader(s))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return "", jobs.Errorf(jobs.CodeInvalidCall, "%s is not well-formed XML: line %d: %s", field, se.Line, truncateText(se.Msg, 120))
			}
			return "", jobs.Errorf(jobs.CodeInvalidCall, "%s is not well-formed XML", field)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return "", jobs.Errorf(jobs.CodeInvalidCall, "%s holds a DOCTYPE or other <!...> directive; send element content only", field)
		case xml.ProcInst:
			if strings.EqualFold(t.Target, "xml") {
				return "", jobs.Errorf(jobs.CodeInvalidCall, "%s holds an XML declaration after its start; drop it", field)
			}
		}
	}
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// mayCarrySOAP reports whether a response of this content type may hold a
// SOAP envelope, so that REST calls to SOAP services get faults parsed too.
func mayCarrySOAP(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch mt {
	case "text/xml", "application/soap+xml", "application/xml", "multipart/related":
		return true
	}
	return false
}

type innerXML struct {
	Inner string `xml:",innerxml"`
}

type faultCode12 struct {
	Value   string       `xml:"Value"`
	Subcode *faultCode12 `xml:"Subcode"`
}

// faultXML matches both fault versions by local name: 1.1 faultcode,
// faultstring, detail; 1.2 Code, Reason/Text, Detail.
type faultXML struct {
	FaultCode   string       `xml:"faultcode"`
	FaultString string       `xml:"faultstring"`
	Detail11    *innerXML    `xml:"detail"`
	Code        *faultCode12 `xml:"Code"`
	Reason      []string     `xml:"Reason>Text"`
	Detail12    *innerXML    `xml:"Detail"`
}

// parseSOAPFault returns the fault of a SOAP 1.1 or 1.2 response, or nil
// when body is not a fault envelope. For an MTOM (multipart/related)
// response it reads the root part, named by the start parameter.
func parseSOAPFault(contentType string, body []byte) *jobs.SOAPFault {
	if !bytes.Contains(body, []byte("Fault")) {
		return nil
	}
	if mt, params, err := mime.ParseMediaType(contentType); err == nil && mt == "multipart/related" {
		root, ok := multipartRoot(body, params)
		if !ok {
			return nil
		}
		body = root
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = charsetReader
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		switch t := tok.(type) {
		case xml.StartElement:
			isSOAP := t.Name.Space == SOAP11Namespace || t.Name.Space == SOAP12Namespace
			switch depth {
			case 0:
				if !isSOAP || t.Name.Local != "Envelope" {
					return nil
				}
			case 1:
				if !isSOAP || t.Name.Local != "Body" {
					if err := dec.Skip(); err != nil {
						return nil
					}
					continue
				}
			case 2:
				if !isSOAP || t.Name.Local != "Fault" {
					return nil
				}
				var f faultXML
				if err := dec.DecodeElement(&f, &t); err != nil {
					return nil
				}
				return f.flatten()
			}
			depth++
		case xml.EndElement:
			// Children of the Envelope other than Body were skipped whole,
			// so an end here closes the Body or the Envelope: no fault.
			depth--
			if depth <= 1 {
				return nil
			}
		}
	}
}

func (f *faultXML) flatten() *jobs.SOAPFault {
	out := &jobs.SOAPFault{}
	if f.Code != nil {
		var codes []string
		for c := f.Code; c != nil; c = c.Subcode {
			if v := strings.TrimSpace(c.Value); v != "" {
				codes = append(codes, v)
			}
		}
		out.Code = strings.Join(codes, " / ")
		if len(f.Reason) > 0 {
			out.Reason = strings.TrimSpace(f.Reason[0])
		}
		if f.Detail12 != nil {
			out.Detail = strings.TrimSpace(f.Detail12.Inner)
		}
		return out
	}
	out.Code = strings.TrimSpace(f.FaultCode)
	out.Reason = strings.TrimSpace(f.FaultString)
	if f.Detail11 != nil {
		out.Detail = strings.TrimSpace(f.Detail11.Inner)
	}
	return out
}

// multipartRoot returns the root part of a multipart/related body: the part
// whose Content-ID is the start parameter, else the first part.
func multipartRoot(body []byte, params map[string]string) ([]byte, bool) {
	boundary := params["boundary"]
	if boundary == "" {
		return nil, false
	}
	start := strings.Trim(params["start"], "<>")
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			return nil, false
		}
		if start == "" || strings.Trim(p.Header.Get("Content-Id"), "<> ") == start {
			b, err := io.ReadAll(p)
			return b, err == nil
		}
	}
}

// charsetReader lets fault parsing read the encodings SOAP stacks declare
// besides UTF-8: US-ASCII and ISO-8859-1 (Latin-1).
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	case "iso-8859-1", "latin1", "latin-1", "iso8859-1":
		b, err := io.ReadAll(input)
		if err != nil {
			return nil, err
		}
		runes := make([]rune, len(b))
		for i, c := range b {
			runes[i] = rune(c)
		}
		return strings.NewReader(string(runes)), nil
	}
	return nil, errors.New("unsupported charset")
}
