package partner

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
)

// SOAP envelope namespaces and the namespace of the partner's own elements.
const (
	NS11      = "http://schemas.xmlsoap.org/soap/envelope/"
	NS12      = "http://www.w3.org/2003/05/soap-envelope"
	NSPartner = "urn:mtlsrelay:partner"
)

// soapVersion holds what differs between SOAP 1.1 and 1.2 replies. The
// prefixes differ on purpose so that clients are tested on namespaces, not
// on prefixes.
type soapVersion struct {
	name, ns, prefix, contentType string
}

var (
	soap11 = soapVersion{"1.1", NS11, "soap", "text/xml; charset=utf-8"}
	soap12 = soapVersion{"1.2", NS12, "env", "application/soap+xml; charset=utf-8"}
)

type innerXML struct {
	Inner string `xml:",innerxml"`
}

type requestEnvelope struct {
	XMLName xml.Name
	Header  *innerXML `xml:"Header"`
	Body    *innerXML `xml:"Body"`
}

func (s *Server) soap(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "SOAP requests must be POST", http.StatusMethodNotAllowed)
		return
	}
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, "Content-Type must be text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)", http.StatusUnsupportedMediaType)
		return
	}
	var v soapVersion
	var action string
	switch mediaType {
	case "text/xml":
		v = soap11
		vals, ok := r.Header["Soapaction"]
		if !ok || len(vals) == 0 {
			http.Error(w, "SOAP 1.1 requests need a SOAPAction header", http.StatusBadRequest)
			return
		}
		action = strings.Trim(vals[0], `"`)
	case "application/soap+xml":
		v = soap12
		action = params["action"]
	default:
		http.Error(w, "Content-Type must be text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)", http.StatusUnsupportedMediaType)
		return
	}
	mtom := r.URL.Query().Get("mtom") == "1"
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var env requestEnvelope
	if err := xml.Unmarshal(data, &env); err != nil || env.XMLName.Local != "Envelope" {
		writeSOAP(w, v, http.StatusInternalServerError, mtom, fault(v, "Client", "the request is not a SOAP envelope", ""))
		return
	}
	if env.XMLName.Space != v.ns {
		writeSOAP(w, v, http.StatusInternalServerError, mtom, fault(v, "VersionMismatch",
			fmt.Sprintf("the envelope namespace %q does not match SOAP %s", env.XMLName.Space, v.name), ""))
		return
	}
	if env.Body == nil {
		writeSOAP(w, v, http.StatusInternalServerError, mtom, fault(v, "Client", "the envelope has no Body", ""))
		return
	}
	if reason, ok := findFail(env.Body.Inner); ok {
		if reason == "" {
			reason = "requested failure"
		}
		detail := `<p:FailDetail xmlns:p="` + NSPartner + `">` + escape(reason) + `</p:FailDetail>`
		writeSOAP(w, v, http.StatusInternalServerError, mtom, fault(v, "Server", reason, detail))
		return
	}
	var b strings.Builder
	b.WriteString(`<p:EchoResponse><p:Action>`)
	b.WriteString(escape(action))
	b.WriteString(`</p:Action>`)
	if env.Header != nil {
		b.WriteString(`<p:Header>` + env.Header.Inner + `</p:Header>`)
	}
	b.WriteString(`<p:Body>` + env.Body.Inner + `</p:Body></p:EchoResponse>`)
	writeSOAP(w, v, http.StatusOK, mtom, b.String())
}

// findFail reports whether the body content holds an element named Fail, and
// its text.
func findFail(body string) (string, bool) {
	dec := xml.NewDecoder(strings.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "Fail" {
			var f struct {
				Text string `xml:",chardata"`
			}
			if err := dec.DecodeElement(&f, &se); err != nil && !errors.Is(err, io.EOF) {
				return "", true
			}
			return strings.TrimSpace(f.Text), true
		}
	}
}

// fault builds the Fault element of version v. kind is the SOAP 1.1 code
// name (Client, Server, VersionMismatch); SOAP 1.2 maps it to Sender,
// Receiver or VersionMismatch.
func fault(v soapVersion, kind, reason, detail string) string {
	p := v.prefix
	if v == soap11 {
		out := `<` + p + `:Fault><faultcode>` + p + `:` + kind + `</faultcode><faultstring>` + escape(reason) + `</faultstring>`
		if detail != "" {
			out += `<detail>` + detail + `</detail>`
		}
		return out + `</` + p + `:Fault>`
	}
	code := map[string]string{"Client": "Sender", "Server": "Receiver"}[kind]
	if code == "" {
		code = kind
	}
	out := `<` + p + `:Fault><` + p + `:Code><` + p + `:Value>` + p + `:` + code + `</` + p + `:Value>`
	if kind == "Server" {
		out += `<` + p + `:Subcode><` + p + `:Value>p:RequestedFailure</` + p + `:Value></` + p + `:Subcode>`
	}
	out += `</` + p + `:Code><` + p + `:Reason><` + p + `:Text xml:lang="en">` + escape(reason) + `</` + p + `:Text></` + p + `:Reason>`
	if detail != "" {
		out += `<` + p + `:Detail>` + detail + `</` + p + `:Detail>`
	}
	return out + `</` + p + `:Fault>`
}

// writeSOAP writes an envelope of version v around body, as a plain XML reply
// or as the root part of an MTOM multipart/related reply.
func writeSOAP(w http.ResponseWriter, v soapVersion, status int, mtom bool, body string) {
	env := `<?xml version="1.0" encoding="utf-8"?>` +
		`<` + v.prefix + `:Envelope xmlns:` + v.prefix + `="` + v.ns + `" xmlns:p="` + NSPartner + `">` +
		`<` + v.prefix + `:Body>` + body + `</` + v.prefix + `:Body></` + v.prefix + `:Envelope>`
	if !mtom {
		w.Header().Set("Content-Type", v.contentType)
		w.WriteHeader(status)
		io.WriteString(w, env)
		return
	}
	// The attachment comes first so that only a client honouring the start
	// parameter finds the envelope.
	const rootID = "<root.message@mtlsrelay>"
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	att, _ := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type": {"application/octet-stream"},
		"Content-Id":   {"<attachment-1@mtlsrelay>"},
	})
	att.Write(BinaryBody)
	startInfo := strings.SplitN(v.contentType, ";", 2)[0]
	root, _ := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {`application/xop+xml; charset=utf-8; type="` + startInfo + `"`},
		"Content-Transfer-Encoding": {"binary"},
		"Content-Id":                {rootID},
	})
	io.WriteString(root, env)
	mw.Close()
	w.Header().Set("Content-Type", mime.FormatMediaType("multipart/related", map[string]string{
		"type":       "application/xop+xml",
		"start":      rootID,
		"start-info": startInfo,
		"boundary":   mw.Boundary(),
	}))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
