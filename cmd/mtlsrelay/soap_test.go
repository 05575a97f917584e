package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// Partner-controlled names with terminal escapes are printed escaped.
func TestPrintDescriptionEscapesControlCharacters(t *testing.T) {
	desc := &wsdl.Description{Services: []wsdl.Service{{Name: "S\x1b[2J", Ports: []wsdl.Port{{Name: "P\u202e", Address: "https://h/\r", SOAPVersion: "1.1",
		Operations: []wsdl.Operation{{Name: "Op\x07", Style: "document", Use: "literal", Input: "<a>\x1b]0;title\x07</a>"}}}}}}}
	var b bytes.Buffer
	printDescription(&b, desc)
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\r\u202e") {
		t.Fatalf("control characters printed raw: %q", out)
	}
	if !strings.Contains(out, `S\u001b[2J`) {
		t.Errorf("escape not shown: %q", out)
	}
}
